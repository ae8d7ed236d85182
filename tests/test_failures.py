"""Nothing lost, nothing silent: every way a run can go wrong, through the real stage commands
and `dvc repro` on small-step copies of the project.

Each failure must end in one line that names the culprit, a non-zero exit, and no output.
The table of failures in docs/troubleshooting.md is read here, and each of its rows is run.
"""

import ast
import functools
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    LECTURE_SEED,
    ROOT,
    copy_project,
    names_file,
    run,
    set_param,
    small_params,
    stage_argv,
)
from mlflow.tracking import MlflowClient

from actgrad.mlp.network import Weights
from actgrad.params import load_yaml

pytestmark = pytest.mark.slow  # DVC, MLflow and the stages on copies of the project

KEYS = {"train": "kaiming", "deep": "batchnorm"}  # the key a foreach stage runs with unless told


@pytest.fixture
def copy(reproduced, tmp_path):
    """A copy of the reproduced project with its own, empty MLflow store."""
    return copy_project(reproduced, tmp_path)


def outputs(stage, path, key=None):
    """What dvc.lock says `stage` writes, its paths resolved; for a foreach stage, that of
    `key` (by default the one KEYS names)."""
    key = key or KEYS.get(stage)
    lock = load_yaml((path / "dvc.lock").read_text())["stages"]
    return [o["path"] for o in lock[f"{stage}@{key}" if key else stage]["outs"]]


def remove_outputs(stage, path, key=None):
    """Delete a stage's outputs, as DVC does before it runs the stage."""
    for out in outputs(stage, path, key):
        shutil.rmtree(path / out, ignore_errors=True)
        (path / out).unlink(missing_ok=True)


def run_stage(stage, path, env, key=None):
    """Run a stage's command from dvc.lock as DVC does, on a workspace without its outputs; a
    foreach stage with `key`, by default the one KEYS names."""
    key = key or KEYS.get(stage)
    remove_outputs(stage, path, key)
    argv = stage_argv(path, f"{stage}@{key}" if key else stage)
    return run(argv, path, env, check=False)


def error_line(out):
    """The 'Error: ...' line that ends a failed stage, after checking it failed cleanly."""
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), out.stderr
    assert [line for line in lines if line.startswith("Error")] == lines[-1:], out.stderr
    return lines[-1]


def assert_no_outputs(stage, path, key=None):
    for out in outputs(stage, path, key):
        assert not (path / out).exists(), out
        assert not list((path / out).parent.glob(f".{Path(out).name}.*")), f"temp file of {out}"


def runs_of(env):
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("actgrad")
    return client.search_runs([experiment.experiment_id]) if experiment else []


# --- 0. docs/troubleshooting.md's table of failures ---------------------------------------


def documented_failures():
    """{what went wrong: (the message, the exit code or None)}, from the table of
    docs/troubleshooting.md."""
    section = (ROOT / "docs/troubleshooting.md").read_text().split("## What you see")[1]
    rows = {}
    for line in section.split("\n## ")[0].splitlines():
        if not line.startswith("| ") or line.startswith("| What went wrong"):
            continue
        what, seen = (cell.strip() for cell in line.strip().strip("|").split("|"))
        code = re.search(r"\(exit code (\d+)", seen)
        message = re.match(r"(`+)(.+?)\1", seen).group(2)
        rows[what] = (message, int(code.group(1)) if code else None)
    return rows


def message_pattern(message, values):
    """A regex for a README message: <name> is values[name], ... any text, [12:00:01] any time."""
    regex = ""
    for part in re.split(r"(<[a-z]+>|\.\.\.|\[\d\d:\d\d:\d\d\])", message):
        if part == "...":
            regex += ".*?"
        elif re.fullmatch(r"\[\d\d:\d\d:\d\d\]", part):
            regex += r"\[\d\d:\d\d:\d\d\]"
        elif re.fullmatch(r"<[a-z]+>", part):
            regex += re.escape(values[part[1:-1]])
        else:
            regex += re.escape(part)
    return regex


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def serving(folder):
    """Serve `folder` over HTTP on 127.0.0.1; yield its URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Each case sets up a copy of the project, runs the stage, and returns (the line the stage
# ended with, its exit code, the values of the message's <placeholders>).


def failed(out, **values):
    return error_line(out), out.returncode, values


def bad_param(key, value, stage):
    def case(path, env, tmp_path):
        set_param(path, key, value)
        return failed(run_stage(stage, path, env))

    return case


def params_text(text):
    def case(path, env, tmp_path):
        (path / "params.yaml").write_text(text)
        return failed(run_stage("split", path, env))

    return case


def names_text(text):
    """names.txt holds `text` (None: it is missing) when the split runs."""

    def case(path, env, tmp_path):
        (path / "data/raw/names.txt").unlink()
        if text is not None:
            (path / "data/raw/names.txt").write_text(text)
        return failed(run_stage("split", path, env))

    return case


def download(served=None, cached=None):
    """The download stage, its URL serving `served` bytes (None: nobody listens), with an
    offline cache that holds `cached` bytes (None: an empty one)."""

    def case(path, env, tmp_path):
        cache, www = tmp_path / "cache", tmp_path / "www"
        cache.mkdir()
        www.mkdir()
        if cached is not None:
            (cache / "names.txt").write_bytes(cached)
        if served is not None:
            (www / "names.txt").write_bytes(served)
        with serving(www) as base:
            url = f"{base if served is not None else closed_port_url()}/names.txt"
            set_param(path, "data.url", url)
            out = run_stage("download", path, {**env, "ACTGRAD_DATA_CACHE": str(cache)})
        return failed(out, url=url, folder=str(cache))

    return case


def no_such_variant(path, env, tmp_path):
    argv = stage_argv(path, "train@kaiming")
    argv[argv.index("kaiming")] = "nope"
    return failed(run(argv, path, env, check=False))


def missing_store_folder(path, env, tmp_path):
    folder = tmp_path / "nowhere"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return failed(run_stage("train", path, {**env, "MLFLOW_TRACKING_URI": uri}), folder=str(folder))


def server_down(path, env, tmp_path):
    url = closed_port_url()
    return failed(run_stage("train", path, {**env, "MLFLOW_TRACKING_URI": url}), url=url)


def interrupted_repro(signum):
    """Ctrl-C (SIGINT) or `kill` (SIGTERM) to every process of `dvc repro train@kaiming`, as a
    terminal or a job scheduler signals them; then the message's advice brings every output
    of the stage back."""
    return functools.partial(_interrupted_repro, signum)


def _interrupted_repro(signum, path, env, tmp_path):
    model = (path / "models/kaiming.pt").read_bytes()
    small_params(path, steps=200_000)
    runs_of(env)  # create the MLflow store now, not while the stage creates it too
    repro = subprocess.Popen(
        ["dvc", "repro", "train@kaiming"],
        cwd=path,
        env={**env, "SHELL": "/bin/bash"},  # dash would die of the SIGINT before the stage exits
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def training():
            assert repro.poll() is None, f"dvc repro ended early: {repro.communicate()[1]}"
            return len([r for r in runs_of(env) if r.info.status == "RUNNING"]) == 3

        wait_for(training, "the stage's runs")
        os.killpg(repro.pid, signum)
        _, stderr = repro.communicate(timeout=60)
    finally:
        if repro.poll() is None:
            os.killpg(repro.pid, signal.SIGKILL)
    (line,) = [x for x in stderr.splitlines() if "interrupted (" in x]
    if signum == signal.SIGINT:  # DVC waits for the stage and reports its exit code
        code = int(re.search(r"exited with (\d+)", stderr).group(1))
    else:  # DVC ends at once, of the signal, as a shell reports it
        code = 128 - repro.returncode

    # DVC left the outputs in place (persist), and the stage did not replace them
    assert (path / "models/kaiming.pt").read_bytes() == model
    assert run(["git", "status", "--porcelain", "--", "metrics", "reports"], path, env).stdout == ""
    return line, code, {}


def worker_diverges(path, env, tmp_path):
    """Seed 3's first batch loss is 28.4, the lecture seed's 27.9: a max_loss between them makes
    only seed 3, trained in its own task on a LocalCluster, diverge."""
    set_param(path, "train.seeds", [LECTURE_SEED, 3])
    set_param(path, "train.max_loss", 28.0)
    remove_outputs("train", path, "baseline")
    argv = [*stage_argv(path, "train@baseline"), "--workers", "2", "--seeds-per-task", "1"]
    out = run(argv, path, env, check=False)
    assert "(2 workers" in out.stderr
    assert_no_outputs("train", path, key="baseline")
    return failed(out)


TRUNCATED = names_file().read_bytes()[:1000]

FAILURE_CASES = {  # the first cell of each row of the README's table: how to make it happen
    "a value out of range": bad_param("train.steps", 0, "train"),
    "a value of the wrong type": bad_param("train.optimizer.lr", "fast", "train"),
    "a misspelt key (the allowed keys are listed)": bad_param("train.stepz", 300, "train"),
    "a key a variant does not have": bad_param("variants.kaiming.inti", {"W1": 1.0}, "train"),
    "an init for a tensor the model does not have": bad_param(
        "variants.kaiming.init.W3", 1.0, "train"
    ),
    "an activation, norm or optimizer that does not exist (the choices are listed)": bad_param(
        "variants.kaiming.activation", "swish", "train"
    ),
    "a hyperparameter of an activation, norm or optimizer out of range": bad_param(
        "variants.batchnorm.norm", {"name": "batchnorm", "momentum": 2}, "calibrate"
    ),
    "no seeds, or a repeated seed": bad_param("train.seeds", [], "train"),
    "split fractions that do not add up": bad_param("split.fractions", [0.8, 0.1, 0.2], "split"),
    "a split that would be empty": bad_param("split.fractions", [0.99999, 5e-6, 5e-6], "split"),
    "calibrating a model without BatchNorm": bad_param("calibrate.variant", "kaiming", "calibrate"),
    "a variant that does not exist": no_such_variant,
    "a key written twice in params.yaml, or broken YAML": params_text(
        "train:\n  steps: 300\n  steps: 400\n"
    ),
    "a truncated or corrupted download": download(served=TRUNCATED),
    "no network and no offline copy": download(),
    "an offline copy with another hash": download(cached=TRUNCATED),
    "an empty names file": names_text("\n  \n\n"),
    "a name with a character outside a-z": names_text("anna\nZoe\nbob\n"),
    "a stage run by hand before the stage it depends on": names_text(None),
    "training diverges (a loss above `train.max_loss`, NaN or inf)": bad_param(
        "train.optimizer.lr", 100, "train"
    ),
    "Ctrl-C during `dvc repro`": interrupted_repro(signal.SIGINT),
    "`kill` (SIGTERM) of `dvc repro` and its stage, as a job scheduler ends them": (
        interrupted_repro(signal.SIGTERM)
    ),
    "a seed trained as a task of its own diverges (`--seeds-per-task 1`)": worker_diverges,
    "`MLFLOW_TRACKING_URI` is a sqlite file in a folder that does not exist": missing_store_folder,
    "the MLflow server in `MLFLOW_TRACKING_URI` is down": server_down,
}


def test_the_docs_list_exactly_the_failures_run_here():
    assert sorted(documented_failures()) == sorted(FAILURE_CASES)


@pytest.mark.parametrize("what", FAILURE_CASES)
def test_each_documented_failure_shows_what_the_docs_say(copy, tmp_path, what):
    message, code = documented_failures()[what]
    path, env = copy
    line, returncode, values = FAILURE_CASES[what](path, env, tmp_path)
    assert re.fullmatch(message_pattern(message, values), line), f"\n{message}\n{line}"
    assert returncode == code if code is not None else returncode != 0


# --- 1. params -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: [300\n", "params.yaml: line 2: expected ',' or ']', but got '<stream end>'"),
        (
            '!!python/object/apply:os.system ["touch pwned"]\n',
            "params.yaml: line 1: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
    ],
)
def test_a_params_file_that_is_not_plain_yaml_is_refused(copy, text, message):
    path, env = copy
    (path / "params.yaml").write_text(text)
    out = run_stage("split", path, env)
    assert error_line(out) == f"Error: {message} (split left its outputs unchanged)"
    assert not (path / "pwned").exists()
    assert_no_outputs("split", path)


def test_dvc_repro_stops_on_a_bad_param_and_reruns_once_it_is_fixed(copy):
    """DVC runs the stage, whose outputs persist: it fails before it writes any, so the previous
    ones stay; fixed, it runs again."""
    path, env = copy
    before = {out: (path / out).read_bytes() for out in outputs("train", path)}
    set_param(path, "variants.kaiming.init.W2", {"constant": "tiny"})
    out = run(["dvc", "repro", "train@kaiming"], path, env, check=False)
    assert out.returncode != 0
    output = out.stdout + out.stderr
    assert (
        "Error: variants.kaiming.init.W2.constant: expected a number, got 'tiny' "
        "(train@kaiming left its outputs unchanged)" in output
    )
    assert "Traceback" not in output
    assert {out: (path / out).read_bytes() for out in outputs("train", path)} == before

    set_param(path, "variants.kaiming.init.W2", 0.02)
    out = run(["dvc", "repro", "train@kaiming"], path, env)
    assert "Running stage 'train@kaiming'" in out.stdout
    assert (path / "models/kaiming.pt").is_file() and (path / "metrics/kaiming.json").is_file()
    assert {r.info.status for r in runs_of(env)} == {"FINISHED"}


# --- 2. data ---------------------------------------------------------------------------------


def test_a_byte_that_is_not_utf8_stops_the_split_naming_file_and_line(copy):
    path, env = copy
    (path / "data/raw/names.txt").write_bytes(b"anna\nb\xffb\n")
    out = run_stage("split", path, env)
    assert error_line(out) == (
        "Error: data/raw/names.txt line 2: 'b\ufffdb' has '\ufffd'; names may hold only a-z "
        "(split left its outputs unchanged)"
    )
    assert_no_outputs("split", path)


# --- 3. divergence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, lr",
    [("kaiming", "train.optimizer.lr"), ("adam", "variants.adam.optimizer.lr")],
    ids=["train-optimizer", "variant-optimizer"],
)
def test_divergence_fails_the_stage_and_its_runs_naming_seed_step_and_lr(copy, variant, lr):
    """The message names the lr that drove the variant: its own optimizer's, else train's."""
    path, env = copy
    set_param(path, lr, 100)
    out = run_stage("train", path, env, key=variant)
    assert re.fullmatch(
        rf"Error: train@{variant}: seed {LECTURE_SEED} diverged at step \d+ \(loss \S+\); "
        rf"lower {re.escape(lr)} or raise train.max_loss \(train@{variant} left its outputs "
        r"unchanged\)",
        error_line(out),
    )
    assert_no_outputs("train", path, key=variant)
    runs = runs_of(env)
    assert len(runs) == 3  # the variant's run and one per seed
    assert {r.info.status for r in runs} == {"FAILED"}


def test_a_fold_that_does_not_match_fails_naming_the_seed_and_the_error(copy):
    """The real fold is off by about 1e-6 in a logit, far beyond a tolerance of 1e-12."""
    path, env = copy
    set_param(path, "fold.tolerance", 1e-12)
    line = error_line(run_stage("fold", path, env))
    assert re.fullmatch(
        rf"Error: fold: seed {LECTURE_SEED}: the folded model is off by (\S+) in a logit and "
        r"\S+ in the val loss, beyond fold.tolerance 1e-12 \(fold left its outputs unchanged\)",
        line,
    ), line
    assert 1e-12 < float(re.search(r"off by (\S+)", line).group(1)) <= 1e-4
    assert_no_outputs("fold", path)
    assert {r.info.status for r in runs_of(env)} == {"FAILED"}


# --- 4. interrupts ---------------------------------------------------------------------------


def descendants(pid):
    """Pids of every process below `pid`, from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = [int(p) for p in children.read_text().split()]
            except OSError:
                continue
            found += pids
            todo += pids
    return found


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"


def is_worker(pid):
    """Whether `pid` is a worker process of a LocalCluster (spawned by multiprocessing)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for(condition, what, timeout=90):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize(
    "signum, ctrl_c", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"]
)
def test_an_interrupted_stage_kills_its_runs_and_workers_and_leaves_nothing(copy, signum, ctrl_c):
    """Ctrl-C signals the whole process group; `kill` or a scheduler signals the stage only."""
    path, env = copy
    small_params(path, steps=200_000)
    remove_outputs("train", path)
    runs_of(env)  # create the MLflow store now, not while the stage creates it too
    stage = subprocess.Popen(
        [*stage_argv(path, "train@kaiming"), "--workers", "2", "--seeds-per-task", "1"],
        cwd=path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def training():
            assert stage.poll() is None, f"the stage ended early: {stage.communicate()[1]}"
            workers = [p for p in descendants(stage.pid) if is_worker(p)]
            running = [r for r in runs_of(env) if r.info.status == "RUNNING"]
            return len(running) == 3 and len(workers) == 2

        wait_for(training, "the runs and the worker processes")
        children = descendants(stage.pid)
        if ctrl_c:
            os.killpg(stage.pid, signum)
        else:
            os.kill(stage.pid, signum)
        _, stderr = stage.communicate(timeout=60)
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)

    assert stage.returncode == 130
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.endswith(f"interrupted ({signum.name}); train@kaiming left its outputs unchanged")
    wait_for(lambda: not any(alive(p) for p in children), "the workers to end", timeout=10)
    assert_no_outputs("train", path)
    assert sorted(r.info.status for r in runs_of(env)) == ["KILLED"] * 3

    small_params(path, steps=200)
    out = run(["dvc", "repro", "train@kaiming"], path, env)
    assert "Running stage 'train@kaiming'" in out.stdout
    newest = max(runs_of(env), key=lambda r: r.info.start_time)
    assert newest.info.status == "FINISHED" and (path / "models/kaiming.pt").is_file()


# --- 5. tracking -----------------------------------------------------------------------------


def test_an_unreachable_tracking_server_fails_fast_naming_it(copy):
    path, env = copy
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    started = time.time()
    out = run_stage("train", path, {**env, "MLFLOW_TRACKING_URI": uri})
    assert time.time() - started <= 10
    assert error_line(out).startswith(f"Error: MLflow tracking server {uri} is unreachable (")
    assert "seeds x" not in out.stderr  # stopped before loading data or training
    assert_no_outputs("train", path)


OPEN_STORE_AT_ONCE = """
import sys
import mlflow.tracking  # the slow import, before the barrier
from pipeline.tracking.store import mlflow_client
print("ready", flush=True)
sys.stdin.readline()  # the barrier: wait for the test's "go"
print(mlflow_client()[1], flush=True)
"""


def test_stages_that_open_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """As parallel queue workers on a fresh clone do: one creates the tables, the others wait.

    The processes are released together on a store that does not exist yet; without the lock
    in pipeline.tracking they race through MLflow's table set-up and some fail.
    """
    store = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    stages = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE_AT_ONCE],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for stage in stages:
        assert stage.stdout.readline() == "ready\n", stage.communicate()[1]
    assert not store.exists()
    for stage in stages:
        stage.stdin.write("go\n")
        stage.stdin.flush()
    outs = [stage.communicate(timeout=120) for stage in stages]
    assert [stage.returncode for stage in stages] == [0] * 4, [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1  # all of them found the one experiment


# --- 6. atomic outputs -----------------------------------------------------------------------

SLOW_WRITE = """
import signal, sys, time
from pipeline.files import writing
from pipeline.runner import _raise_interrupt, one_line

signal.signal(signal.SIGTERM, _raise_interrupt)


@one_line
def main():
    with writing() as out:
        out.path(sys.argv[1]).write_text("half of the new")
        print("writing", flush=True)
        time.sleep(60)

main()
"""


def test_a_stage_killed_while_writing_leaves_the_old_output_whole(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("the old output")
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, str(target)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline() == "writing\n"
    writer.terminate()
    _, stderr = writer.communicate(timeout=30)
    assert writer.returncode == 130 and "interrupted (SIGTERM)" in stderr
    assert target.read_text() == "the old output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


WRITES_HOOK = """
import os, sys
if os.environ.get("ACTGRAD_WRITES"):
    _log = os.open(os.environ["ACTGRAD_WRITES"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _log_writes(event, args):
        if event == "open" and isinstance(args[0], str) and (
            isinstance(args[1], str) and set(args[1]) & set("wax+")
            or args[1] is None and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        ):
            line = f"{' '.join(sys.argv)}\\t{os.path.abspath(args[0])}\\n"
            os.write(_log, line.encode())

    sys.addaudithook(_log_writes)
"""


def test_a_stage_that_fails_after_putting_outputs_in_place_takes_them_back(tmp_path):
    """Renaming several outputs into place can fail halfway (here the second's staged file is
    gone): the first is taken back too, and no staging file stays."""
    from pipeline.files import writing

    first, second = tmp_path / "a.json", tmp_path / "b" / "c.txt"
    with pytest.raises(FileNotFoundError), writing() as out:
        out.path(first).write_text("1")
        out.path(second).write_text("2")
        out.staged[second].unlink()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b"]


# --- 7. determinism --------------------------------------------------------------------------


def lock_hashes(path):
    lock = load_yaml((path / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage["outs"]}


def test_a_forced_rerun_gives_the_same_bits_and_writes_only_through_staging_files(copy, tmp_path):
    """Every kind of stage again: the split, two train stages with their seeds spread over two
    worker processes where the project trained them in one task, calibrate, fold, two deep stages
    (BatchNorm, LARS) and the report; the same bytes. And every file the stages' processes
    open for writing (Python's audit hook sees each open, through any module or alias) under
    the output folders is a hidden staging file, which only the rename at the end of the stage
    puts in place. The stages a fresh clone reruns are checked against the committed outputs
    in tests/test_records.py."""
    path, env = copy
    first = lock_hashes(path)
    params = yaml.safe_load((path / "params.yaml").read_text())
    # names; the split and its summary; 9 per variant; calibrate; fold; 8 per deep config;
    # demos; report; tour
    variants, deep = len(params["variants"]), len(params["deep"])
    assert len(first) == 1 + 2 + 9 * variants + 3 + 2 + 8 * deep + 4 + 3 + 1
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(WRITES_HOOK)
    writes = tmp_path / "writes.log"
    env = {**env, "ACTGRAD_WORKERS": "2", "ACTGRAD_SEEDS_PER_TASK": "1"}
    env |= {"PYTHONPATH": str(hooks), "ACTGRAD_WRITES": str(writes)}
    # constant init too: its weights' entries are all equal, where a reduction over a batch of
    # seeds would round differently than over one seed
    trains = ["train@kaiming", "train@constant_init"]
    deeps = ["deep@batchnorm", "deep@linear_gain_5_3_lars"]
    stages = ["split", *trains, "calibrate", "fold", *deeps, "report"]
    out = run(["dvc", "repro", "-f", "-s", *stages], path, env)
    assert sorted(re.findall(r"Running stage '(\S+)'", out.stdout)) == sorted(stages)
    for stage in trains:  # each seed a task of its own on a LocalCluster of two workers
        assert re.search(
            rf"{stage}: 2 seeds x 300 steps on the Dask cluster .*\(2 workers", out.stderr
        )
    assert lock_hashes(path) == first

    written = [line.split("\t") for line in writes.read_text().splitlines()]
    by_stages = [Path(file) for argv, file in written if "/pipeline/" in argv]
    outputs = [p.relative_to(path) for p in by_stages if p.is_relative_to(path)]
    outputs = [p for p in outputs if p.parts[0] in ("data", "metrics", "models", "reports")]
    assert len(outputs) > 30  # what the stages wrote, each to its staging folder
    direct = [p for p in outputs if not any(part.startswith(".") for part in p.parts[:-1])]
    assert direct == []


# --- 8. safety -------------------------------------------------------------------------------


UNPICKLERS = ("pickle", "dill", "cloudpickle", "joblib")
SAFE_LOADERS = ("SafeLoader", "CSafeLoader")


def unsafe_loads(source):
    """Lines of `source` that can run code while loading: an unpickler imported, torch.load
    without weights_only=True, yaml.load with a loader that is not safe, yaml.unsafe_load or
    full_load, a ruamel YAML() that is not typ="safe", whatever name the module or the function
    was imported under."""
    tree = ast.parse(source)
    bound = {}  # a local name: the module or function it stands for ("t": "torch")
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0]: a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            bound |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in UNPICKLERS for n in names):
                bad.append(node.lineno)

    def qualified(func):
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            return f"{bound.get(func.value.id, func.value.id)}.{func.attr}"
        return bound.get(func.id, func.id) if isinstance(func, ast.Name) else None

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, keywords = qualified(node.func), {k.arg: k.value for k in node.keywords}
        weights_only = getattr(keywords.get("weights_only"), "value", None) is True
        loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
        loader = getattr(loader, "attr", getattr(loader, "id", None))
        typ = getattr(keywords.get("typ"), "value", None)
        if (
            name == "torch.load"
            and not weights_only
            or name == "yaml.load"
            and loader not in SAFE_LOADERS
            or name in ("yaml.unsafe_load", "yaml.full_load")
            or name == "ruamel.yaml.YAML"
            and typ != "safe"
        ):
            bad.append(node.lineno)
    return bad


def test_nothing_unpickles_and_models_load_as_plain_tensors(reproduced):
    unsafe = (
        "import pickle\ntorch.load(f)\ntorch.load(f, weights_only=True)\nimport torch as t\n"
        "t.load(f)\nfrom torch import load as l\nl(f)\nimport yaml as y\ny.load(s)\n"
        "y.load(s, Loader=y.SafeLoader)\nfrom yaml import full_load\nfull_load(s)\n"
        "from ruamel.yaml import YAML\nYAML()\nYAML(typ='safe')\n"
    )
    assert unsafe_loads(unsafe) == [1, 2, 5, 7, 9, 12, 14]
    code = [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "pipeline").rglob("*.py"),
        *ROOT.glob("bench/*.py"),
    ]
    for module in sorted(code):
        assert unsafe_loads(module.read_text()) == [], module.name
    path, _ = reproduced
    state = torch.load(path / "models/kaiming.pt", weights_only=True)
    assert Weights.from_state_dict(state).seeds == (LECTURE_SEED, 1)
    assert set(torch.load(path / "data/split/train.pt", weights_only=True)) == {"X", "Y"}
