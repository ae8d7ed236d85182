"""Nothing lost, nothing silent: every way a run can go wrong, through the real stage commands
and `dvc repro` on small-step copies of the project.

Each failure must end in one line that names the culprit, a non-zero exit, and no output.
"""

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import LECTURE_SEED, ROOT, copy_project, run, small_params
from mlflow.tracking import MlflowClient

from actgrad.model import Weights

COMMANDS = {
    "download": ["pipeline.download"],
    "split": ["pipeline.split"],
    "train": ["pipeline.train", "kaiming"],
    "calibrate": ["pipeline.calibrate"],
}


@pytest.fixture
def copy(reproduced, tmp_path):
    """A copy of the reproduced project with its own, empty MLflow store."""
    return copy_project(reproduced, tmp_path)


def set_param(path, key, value):
    """Set a dotted key ("train.steps", "variants.kaiming.w3_scale", "trian") in params.yaml."""
    params = yaml.safe_load((path / "params.yaml").read_text())
    *parents, name = key.split(".")
    section = params
    for parent in parents:
        section = section[parent]
    section[name] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def outputs(stage, path):
    """What dvc.yaml says `stage` writes (train: the kaiming variant's)."""
    spec = yaml.safe_load((path / "dvc.yaml").read_text())["stages"][stage]
    spec = spec.get("do", spec)
    outs = [
        o if isinstance(o, str) else next(iter(o))
        for k in ("outs", "metrics", "plots")
        for o in spec.get(k, [])
    ]
    return [o.replace("${key}", "kaiming") for o in outs]


def remove_outputs(stage, path):
    """Delete a stage's outputs, as DVC does before it runs the stage."""
    for out in outputs(stage, path):
        shutil.rmtree(path / out, ignore_errors=True)
        (path / out).unlink(missing_ok=True)


def run_stage(stage, path, env):
    """Run a stage command as DVC does, on a workspace without its outputs."""
    remove_outputs(stage, path)
    return run([sys.executable, "-m", *COMMANDS[stage]], path, env, check=False)


def error_line(out):
    """The 'Error: ...' line that ends a failed stage, after checking it failed cleanly."""
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), out.stderr
    assert [line for line in lines if line.startswith("Error")] == lines[-1:], out.stderr
    return lines[-1]


def assert_no_outputs(stage, path):
    for out in outputs(stage, path):
        assert not (path / out).exists(), out
        assert not list((path / out).parent.glob(f".{Path(out).name}.*")), f"temp file of {out}"


def runs_of(env):
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("actgrad")
    return client.search_runs([experiment.experiment_id]) if experiment else []


# --- 1. params -------------------------------------------------------------------------------

BAD_PARAMS = [
    ("train.steps", 0, "train", "train.steps: must be an integer > 0, got 0"),
    ("train.batch_size", 0, "train", "train.batch_size: must be an integer > 0, got 0"),
    ("train.lr", -0.1, "train", "train.lr: must be a number > 0, got -0.1"),
    ("train.n_hidden", 0, "train", "train.n_hidden: must be an integer > 0, got 0"),
    ("train.steps", "many", "train", "train.steps: expected an integer, got 'many'"),
    (
        "train.seeds",
        [],
        "train",
        "train.seeds: must be a non-empty list of distinct integers >= 0, got []",
    ),
    (
        "train.seeds",
        [1, 1],
        "train",
        "train.seeds: must be a non-empty list of distinct integers >= 0, got [1, 1]",
    ),
    ("train.stepz", 300, "train", "train.stepz: unknown key; allowed keys are n_embd, n_hidden"),
    (
        "variants.kaiming.w3_scale",
        1.0,
        "train",
        "variants.kaiming.w3_scale: unknown key; allowed keys are w1_scale, w1_fan_in, "
        "b1_scale, w2_scale, b2_scale, batchnorm",
    ),
    (
        "variants.kaiming.batchnorm",
        "yes",
        "train",
        "variants.kaiming.batchnorm: expected true or false, got 'yes'",
    ),
    ("trian", {"steps": 300}, "train", "trian: unknown key; allowed keys are data, split, train"),
    ("split.block_size", 0, "split", "split.block_size: must be an integer >= 1, got 0"),
    (
        "split.fractions",
        [0.8, 0.1, 0.2],
        "split",
        "split.fractions: three positive fractions (train, val, test) summing to 1, "
        "got [0.8, 0.1, 0.2]",
    ),
    ("data.sha256", "abc", "download", "data.sha256: expected 64 lowercase hex digits, got 'abc'"),
    (
        "calibrate.variant",
        "kaiming",
        "calibrate",
        "calibrate.variant: 'kaiming' has no BatchNorm; choose one of ['batchnorm']",
    ),
]


@pytest.mark.parametrize("key, value, stage, message", BAD_PARAMS)
def test_a_bad_param_stops_the_stage_with_one_line_naming_it(copy, key, value, stage, message):
    path, env = copy
    set_param(path, key, value)
    out = run_stage(stage, path, env)
    assert error_line(out).startswith(f"Error: {message}")
    assert out.stderr.strip() == error_line(out)  # checked before the stage does anything
    assert_no_outputs(stage, path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  steps: 300\n  steps: 400\n", "params.yaml: line 3: duplicate key 'steps'"),
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
    assert error_line(out) == f"Error: {message}"
    assert not (path / "pwned").exists()
    assert_no_outputs("split", path)


def test_dvc_repro_stops_on_a_bad_param_and_reruns_once_it_is_fixed(copy):
    path, env = copy
    set_param(path, "variants.kaiming.w2_scale", "tiny")
    out = run(["dvc", "repro", "train@kaiming"], path, env, check=False)
    assert out.returncode != 0
    output = out.stdout + out.stderr
    assert "Error: variants.kaiming.w2_scale: expected a number, got 'tiny'" in output
    assert "Traceback" not in output
    assert_no_outputs("train", path)

    set_param(path, "variants.kaiming.w2_scale", 0.02)
    out = run(["dvc", "repro", "train@kaiming"], path, env)
    assert "Running stage 'train@kaiming'" in out.stdout
    assert (path / "models/kaiming.pt").is_file() and (path / "metrics/kaiming.json").is_file()
    assert {r.info.status for r in runs_of(env)} == {"FINISHED"}


# --- 2. data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, message",
    [
        ("\n  \n\n", "data/raw/names.txt holds no names (empty file or only blank lines)"),
        ("anna\nZoe\nbob\n", "data/raw/names.txt line 2: 'Zoe' has 'Z'; names may hold only a-z"),
        (b"anna\nb\xffb\n", "data/raw/names.txt line 2: 'b\ufffdb' has '\ufffd'"),
        (None, "data/raw/names.txt: no such file; `dvc repro` runs the stages that make it"),
    ],
)
def test_unusable_names_stop_the_split_naming_file_and_line(copy, names, message):
    path, env = copy
    names_file = path / "data/raw/names.txt"
    names_file.unlink()
    if isinstance(names, str):
        names_file.write_text(names)
    elif names is not None:
        names_file.write_bytes(names)
    out = run_stage("split", path, env)
    assert error_line(out).startswith(f"Error: {message}")
    assert_no_outputs("split", path)


def test_fractions_that_empty_a_split_stop_the_split(copy):
    path, env = copy
    set_param(path, "split.fractions", [0.99999, 0.000005, 0.000005])
    out = run_stage("split", path, env)
    assert error_line(out) == "Error: split.fractions leave the val split empty with 32033 names"
    assert_no_outputs("split", path)


# --- 3. divergence ---------------------------------------------------------------------------


def test_divergence_fails_the_stage_and_its_runs_naming_variant_seed_and_step(copy):
    path, env = copy
    set_param(path, "train.lr", 100)
    out = run_stage("train", path, env)
    assert re.fullmatch(
        rf"Error: train@kaiming: seed {LECTURE_SEED} diverged at step \d+ \(loss \S+\); "
        r"lower train.lr or raise train.max_loss",
        error_line(out),
    )
    assert_no_outputs("train", path)
    runs = runs_of(env)
    assert len(runs) == 3  # the variant's run and one per seed
    assert {r.info.status for r in runs} == {"FAILED"}


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


def is_ready_worker(pid):
    """Whether `pid` is a pool worker that is up: it has set SIGINT to be ignored."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(re.search(r"SigIgn:\s*(\w+)", status).group(1), 16)
    return b"spawn_main" in cmdline and bool(mask & (1 << (signal.SIGINT - 1)))


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
        [sys.executable, "-m", "pipeline.train", "kaiming", "--workers", "2"],
        cwd=path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def training():
            workers = [p for p in descendants(stage.pid) if is_ready_worker(p)]
            running = [r for r in runs_of(env) if r.info.status == "RUNNING"]
            return stage.poll() is None and len(running) == 3 and workers

        wait_for(training, "the runs and the worker process")
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
    assert last.endswith(f"interrupted ({signum.name}); no half-written output was left")
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
    assert "train@kaiming" not in out.stderr  # stopped before loading data or training
    assert_no_outputs("train", path)


def test_a_sqlite_store_in_a_missing_folder_is_named(copy):
    path, env = copy
    uri = f"sqlite:///{path / 'nowhere' / 'mlflow.db'}"
    out = run_stage("train", path, {**env, "MLFLOW_TRACKING_URI": uri})
    folder = path / "nowhere"
    assert error_line(out) == f"Error: MLflow store {uri}: the folder {folder} does not exist"
    assert_no_outputs("train", path)


def test_stages_that_open_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """As parallel queue workers on a fresh clone do: one creates the tables, the others wait."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    code = "from pipeline.tracking import mlflow_client; print(mlflow_client()[1])"
    stages = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [stage.communicate(timeout=120) for stage in stages]
    assert [stage.returncode for stage in stages] == [0, 0, 0], [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1  # all three found the one experiment


# --- 6. atomic outputs -----------------------------------------------------------------------

SLOW_WRITE = """
import sys, time
from pipeline.outputs import atomic_path
from pipeline.stage import stage_command

@stage_command
def main():
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("half of the new")
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
    assert writer.returncode == 130 and "no half-written output was left" in stderr
    assert target.read_text() == "the old output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def direct_writes(source):
    """Lines of `source` that write a file other than through `with atomic_path(...) as tmp`."""
    tree = ast.parse(source)
    atomic = {
        item.optional_vars.id
        for node in ast.walk(tree)
        if isinstance(node, ast.With)
        for item in node.items
        if isinstance(item.context_expr, ast.Call)
        and getattr(item.context_expr.func, "id", None) == "atomic_path"
    }
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, target = node.func, None
        if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
            target = func.value
        elif isinstance(func, ast.Attribute) and func.attr == "save":  # torch.save(obj, f)
            target = node.args[1]
        elif getattr(func, "id", None) == "open":
            modes = node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(set(getattr(m, "value", "w")) & set("wax+") for m in modes):
                bad.append(node.lineno)
            continue
        names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} if target else set()
        if target is not None and not names & atomic:
            bad.append(node.lineno)
    return bad


def test_stages_write_outputs_only_through_the_atomic_helpers():
    assert direct_writes('open("a", "w")\nPath("a").write_text("x")\ntorch.save(x, "a")\n') == [
        1,
        2,
        3,
    ]
    for module in sorted((ROOT / "pipeline").glob("*.py")):
        assert direct_writes(module.read_text()) == [], module.name


# --- 7. determinism --------------------------------------------------------------------------


def lock_hashes(path):
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage["outs"]}


def test_a_forced_rerun_reproduces_every_output_bit_for_bit(copy):
    path, env = copy
    first = lock_hashes(path)
    assert len(first) >= 15  # names, split, 3 per variant, calibrate, report
    stages = set(yaml.safe_load((path / "dvc.lock").read_text())["stages"])
    out = run(["dvc", "repro", "-f"], path, env)
    assert set(re.findall(r"Running stage '(\S+)'", out.stdout)) == stages
    assert lock_hashes(path) == first


# --- 8. safety -------------------------------------------------------------------------------


def unsafe_loads(source):
    """Lines of `source` that load with pickle, or call torch.load without weights_only=True."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names):
                bad.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = getattr(node.func.value, "id", None)
            safe = any(
                k.arg == "weights_only" and getattr(k.value, "value", None) is True
                for k in node.keywords
            )
            if owner == "torch" and node.func.attr == "load" and not safe:
                bad.append(node.lineno)
            if owner == "yaml" and node.func.attr in ("unsafe_load", "full_load"):
                bad.append(node.lineno)
    return bad


def test_nothing_unpickles_and_models_load_as_plain_tensors(reproduced):
    assert unsafe_loads("import pickle\ntorch.load(f)\ntorch.load(f, weights_only=True)\n") == [
        1,
        2,
    ]
    for module in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "pipeline").glob("*.py")]):
        assert unsafe_loads(module.read_text()) == [], module.name
    path, _ = reproduced
    state = torch.load(path / "models/kaiming.pt", weights_only=True)
    assert Weights.from_state_dict(state).seeds == (LECTURE_SEED, 1)
    assert set(torch.load(path / "data/split/train.pt", weights_only=True)) == {"X", "Y"}


def test_the_mlflow_ui_binds_localhost_by_default():
    out = run(["make", "-n", "ui"], ROOT)
    assert "--host 127.0.0.1 " in out.stdout
