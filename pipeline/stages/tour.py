"""Stage tour: the learner's notebook, notebooks/tour.ipynb, executed with a real kernel into
reports/tour.ipynb, outputs and all, which GitHub and nbviewer render (docs/notebook.md).

Its parameters go in as papermill passes them: a cell tagged `injected-parameters` after the
one tagged `parameters`, assigning the paths the stage's command names and params.yaml's tour
section. The kernel is this Python's, in the project's root. The executed copy is a function of
those files alone, the same bytes at each run on one machine: no timing, no kernel version,
execution counts from 1, each cell's output streams merged; a cell that raises, writes to
stderr (a warning) or prints the project's absolute path fails the stage, leaving the previous
copy in place.
"""

import copy
import importlib
import json
import os

import nbformat

from actgrad.recipes import read_params

from ..files import Ipynb, Json, Link
from ..runner import MODULES_ENV, PARAMS, Stage, StageError
from ..tracking.records import Plan, flatten, log_files
from ..tracking.store import log_values

CELL_TIMEOUT = 600  # seconds one cell may run
INJECTED = "injected-parameters"  # the tag (and id) of the cell the stage adds
# the notebook's names for the paths it reads: the role of each in the stage's command
PATH_NAMES = {
    "expected_file": "expected",
    "split": "split",
    "metrics": "metrics",
    "figures": "figures",
    "samples": "samples",
}
# run after the notebook when a test lists each stage's modules (runner.MODULES_ENV): the
# library's modules the kernel loaded, which this process then loads too, so that the listing
# holds the code the stage ran
KERNEL_MODULES = (
    "import sys\nprint(*sorted(n for n in sys.modules if n.split('.')[0] == 'actgrad'), sep='\\n')"
)


def compute(params, notebook, paths):
    """The notebook with its parameters, executed, normalised and checked."""
    values = {"params_file": PARAMS}
    values |= {name: paths[role] for name, role in PATH_NAMES.items()}
    values |= {"variant": params.tour.variant, "steps": params.tour.steps}
    nb = with_parameters(notebook, values, paths["notebook"])
    listing = bool(os.environ.get(MODULES_ENV))
    if listing:
        nb.cells.append(_code_cell(KERNEL_MODULES, "kernel-modules"))
    execute(nb, paths["notebook"])
    if listing:
        for name in nb.cells.pop().outputs[0].text.split():
            importlib.import_module(name)
    normalise(nb)
    check_outputs(nb, paths["notebook"])
    return {"executed": nb}


def _code_cell(source, cell_id, tags=()):
    cell = nbformat.v4.new_code_cell(source, id=cell_id)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def with_parameters(notebook, values, where):
    """A copy of the notebook with a cell assigning `values` after the one tagged `parameters`
    (replacing an injected cell a previous run left)."""
    nb = copy.deepcopy(notebook)
    nb.cells = [c for c in nb.cells if INJECTED not in c.metadata.get("tags", [])]
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        raise StageError(
            f"{where}: no cell is tagged `parameters`, after which the stage puts its own; tag "
            "the cell that sets the notebook's paths and params (JupyterLab: the cell's "
            "property inspector)"
        )
    lines = ["# Parameters injected by the stage tour (pipeline/stages/tour.py)"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
    nb.cells.insert(tagged[0] + 1, _code_cell("\n".join(lines), INJECTED, [INJECTED]))
    return nb


def execute(nb, where):
    """Run every cell in a fresh kernel of this Python, in the project's root; StageError
    naming the first cell that raised or ran out of time."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",  # this Python's own ipykernel
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its warning about plain TCP
        resources={"metadata": {"path": "."}},
        record_timing=False,
        coalesce_streams=True,
    )
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        index, cell = _failed_cell(nb)
        what = (
            f"{e.ename}: {e.evalue}"
            if isinstance(e, CellExecutionError)
            else str(e).strip().splitlines()[0]
        )
        raise StageError(f"{where}: cell {index} ({cell.id}) failed: {what}") from None


def _failed_cell(nb):
    """(index from 1, cell) of the cell with an error output, else of the last that ran."""
    ran = [(i, c) for i, c in enumerate(nb.cells, 1) if c.cell_type == "code"]
    for i, cell in ran:
        if any(o.output_type == "error" for o in cell.get("outputs", [])):
            return i, cell
    started = [(i, c) for i, c in ran if c.get("execution_count")]
    return (started or ran)[-1]


def normalise(nb):
    """What varies from run to run or machine to machine, taken out: the kernel's version, the
    execution counts (1, 2, ... in order), any timing a cell carries."""
    nb.metadata.get("language_info", {}).pop("version", None)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.metadata.pop("execution", None)
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = count


def check_outputs(nb, where):
    """StageError on an output that would make the copy depend on where or when it ran: a
    stream to stderr (a warning names a file by its absolute path) or the project's path."""
    here = os.getcwd()
    for index, cell in enumerate(nb.cells, 1):
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stderr":
                first = output.text.strip().splitlines()[0] if output.text.strip() else ""
                raise StageError(f"{where}: cell {index} ({cell.id}) wrote to stderr: {first}")
            if here in json.dumps(output):
                raise StageError(
                    f"{where}: cell {index} ({cell.id}) printed the project's absolute path "
                    f"{here}; the executed copy names files relative to the project"
                )


def counts(nb):
    """{cells, code_cells, figures} of an executed notebook."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    figures = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    return {"cells": len(nb.cells), "code_cells": len(code), "figures": figures}


def runs(params, key):
    return Plan(name="tour", tags={"variant": params.tour.variant}, dataset=True)


def log_runs(client, runs, made):
    run_params = flatten({"tour": made.params.tour.model_dump()})
    log_values(client, runs.top, counts(made.values["executed"]), run_params)
    log_files(client, runs.top, [made.paths["executed"]])


def summary(made):
    c, size = counts(made.values["executed"]), os.path.getsize(made.paths["executed"])
    return (
        f"wrote {made.paths['executed']}: {c['cells']} cells ({c['code_cells']} of code), "
        f"{c['figures']} figures, {size / 2**10:,.0f} KiB"
    )


STAGE = Stage(
    name="tour",
    params=read_params,
    compute=compute,
    inputs={
        "notebook": Ipynb,
        "split": Link,
        "summary": Json,
        "metrics": Link,
        "figures": Link,
        "samples": Link,
        "expected": Link,
    },
    outputs={"executed": Ipynb},
    runs=runs,
    log_runs=log_runs,
    describe=lambda made: (
        f"{made.paths['notebook']}, its miniature {made.params.tour.variant} for "
        f"{made.params.tour.steps:,} steps"
    ),
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
