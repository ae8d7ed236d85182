"""The learner's notebook, notebooks/tour.ipynb, and its stage `tour`: the source holds no
outputs; on the small project a real kernel executes every cell, its lecture table is the
report's, its live miniature trains the train stage's first steps, a second run writes the same
bytes, and `make check-outputs` compares the copy by value."""

import os
import re
import shutil

import nbformat
import pytest
from conftest import ROOT, copy_project, run, stage_argv
from filelock import FileLock

from actgrad.params import load_yaml
from pipeline.tools.check_outputs import Comparison, compare_ipynb, tolerances

SOURCE = ROOT / "notebooks" / "tour.ipynb"
EXECUTED = "reports/tour.ipynb"


def tagged(nb, tag):
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def markdown_of(cell):
    """The text/markdown of a cell's one display."""
    (output,) = [o for o in cell.outputs if "text/markdown" in o.get("data", {})]
    return output.data["text/markdown"]


def table_rows(text):
    """The cells of each row of a markdown table, less its header and rule."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_source_notebook_holds_no_outputs_and_pins_the_kernels_first():
    nb = nbformat.read(SOURCE, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert all("execution" not in c.metadata for c in code)
    assert code[0].source.startswith("import actgrad ")  # before torch: the kernel pins
    assert not any("import torch" in c.source for c in code[:1])
    assert tagged(nb, "parameters") and not [
        c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert str(ROOT) not in SOURCE.read_text()


@pytest.fixture(scope="session")
def executed(reproduced, tmp_path_factory):
    """The copy that `make repro` made on the small project, and the bytes of a second run of
    the stage's command on a copy of it: run once, by the first test process that needs it."""
    path, _ = reproduced
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is in the session's
        root = root.parent
    again = root / "tour" / "again.ipynb"
    with FileLock(f"{again.parent}.lock"):
        if not again.exists():
            again.parent.mkdir(exist_ok=True)
            copy, env = copy_project(reproduced, again.parent)
            run(stage_argv(copy, "tour"), copy, env)
            shutil.copy2(copy / EXECUTED, again)
    return path, again.read_bytes()


@pytest.mark.slow
def test_a_kernel_executes_every_cell_and_a_second_run_writes_the_same_bytes(executed):
    path, again = executed
    text = (path / EXECUTED).read_text()
    assert again == text.encode()  # no time, run id, duration or kernel version in it
    assert len(again) < 2 * 2**20
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    source = nbformat.read(SOURCE, as_version=4)
    ours = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [c.source for c in ours] == [c.source for c in source.cells]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    figures = [c.id for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures.count("train-live") == 1 and figures.count("after") == 2  # the miniature's
    assert len(figures) >= 6  # and the stages' (less those of the variants the project drops)
    assert "version" not in nb.metadata.language_info
    assert str(path) not in text and str(ROOT) not in text
    injected = tagged(nb, "injected-parameters").source
    assert 'variant = "kaiming"' in injected and "steps = 300" in injected


@pytest.mark.slow
def test_its_lecture_table_is_the_reports(executed):
    path, _ = executed
    nb = nbformat.read(path / EXECUTED, as_version=4)
    report = (path / "reports/comparison.md").read_text()
    table = re.search(r"^\|.*?(?=\n[^|])", report, re.M | re.S).group(0)
    assert markdown_of(tagged(nb, "lecture-table")) == table
    assert "| kaiming " in table and "| calibrate " in table


@pytest.mark.slow
def test_its_live_miniature_trains_the_first_steps_of_the_full_run(executed):
    """Its block means at the lecture seed are those of metrics/curves/<variant>.csv, within
    tolerance.yaml, as printed (6 decimals)."""
    path, _ = executed
    nb = nbformat.read(path / EXECUTED, as_version=4)
    rows = table_rows(markdown_of(tagged(nb, "miniature-check")))
    variant = {row[0] for row in rows}.pop()
    lines = (path / "metrics/curves" / f"{variant}.csv").read_text().split()
    columns, *curve = [line.split(",") for line in lines]
    full = {int(row[0]): float(row[columns.index("loss")]) for row in curve}
    assert len(rows) == len(full) == 3  # the small project's 300 steps, in blocks of 100
    spec = tolerances(load_yaml((path / "tolerance.yaml").read_text()))
    c = Comparison(spec)
    for _, step, ours, _, _ in rows:
        where = f"metrics/curves/{variant}.csv {step} loss"
        c.number(where, full[int(step)], float(ours), unit=1e-6)
    assert c.problems == [] and c.compared == 3


@pytest.mark.slow
def test_check_outputs_compares_the_copy_by_value(executed):
    """Its numbers within tolerance, its figures by their presence, its words equal."""
    path, _ = executed
    text = (path / EXECUTED).read_text()
    check = tagged(nbformat.reads(text, as_version=4), "miniature-check")
    value = table_rows(markdown_of(check))[0][2]  # the miniature's first block, 6 decimals
    spec = tolerances(load_yaml((path / "tolerance.yaml").read_text()))

    def problems(changed):
        c = Comparison(spec)
        compare_ipynb(c, EXECUTED, text, changed)
        return c.problems

    assert problems(text) == []
    assert problems(text.replace(value, f"{float(value) + 2e-6:.6f}")) == []  # last digits
    assert len(problems(text.replace(value, f"{float(value) + 1e-2:.6f}"))) >= 1
    assert problems(text.replace('"image/png": "iVBOR', '"image/png": "R0lGOD', 1)) != []
    assert problems(text.replace("A live miniature", "A dead miniature")) != []


def test_the_stage_names_a_cell_that_fails(tmp_path, monkeypatch):
    """A cell that raises fails the stage with one line naming the cell and the error."""
    from pipeline.runner import StageError
    from pipeline.stages.tour import execute

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import actgrad", id="first"),
            nbformat.v4.new_code_cell("1 / 0", id="divides"),
        ],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}},
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError) as e:
        execute(nb, "notebooks/tour.ipynb")
    assert str(e.value) == (
        "notebooks/tour.ipynb: cell 2 (divides) failed: ZeroDivisionError: division by zero"
    )
