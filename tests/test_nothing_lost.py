"""Nothing lost to a typo: params.yaml is checked before DVC runs anything under `make repro`,
every failure there is one line, a failed stage leaves its outputs as they were under plain
`dvc repro` too (its outs persist, and it writes them only at the end), a value that would
exhaust the machine is refused naming its key, and no MLflow run stays RUNNING after its
process died. Real `dvc repro`, stages and MLflow on copies of the small project."""

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from conftest import copy_project, run, set_param, small_params, stage_argv
from mlflow.tracking import MlflowClient

from actgrad.params import load_yaml

pytestmark = pytest.mark.slow

REPRO = [sys.executable, "-m", "pipeline.tools.repro"]  # what `make repro` runs first


@pytest.fixture
def copy(reproduced, tmp_path):
    return copy_project(reproduced, tmp_path)


def printed(out):
    """The lines a command printed, both streams."""
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


def changed_files(path, env):
    """git status of the outputs, params.yaml aside: what a failure changed or deleted."""
    status = run(["git", "status", "--porcelain", "--", "metrics", "reports"], path, env)
    return status.stdout.splitlines()


def runs_of(env):
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("actgrad")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize(
    "key, value, says",
    [
        (
            "variants.kaiming.activation",
            "swish",
            "Error: variants.kaiming.activation: unknown activation 'swish'; choose one of ",
        ),
        (
            "variants.kaiming.optimizer",
            {"name": "sgd", "lr": -1},
            "Error: variants.kaiming.optimizer.lr: must be a number > 0, got -1",
        ),
        ("variants.kaiming.activaton", "relu", "Error: variants.kaiming.activaton: unknown key"),
    ],
)
def test_a_typo_under_make_repro_is_one_line_and_deletes_nothing(copy, key, value, says):
    path, env = copy
    set_param(path, key, value)
    out = run(REPRO, path, env, check=False)
    assert out.returncode == 1
    (line,) = printed(out)
    assert line.startswith(says), line
    assert changed_files(path, env) == []
    assert (path / "models/kaiming.pt").is_file()


def test_broken_yaml_under_make_repro_is_one_line(copy):
    path, env = copy
    with open(path / "params.yaml", "a") as f:
        f.write("train:\n  steps: 1\n")  # a second `train`
    out = run(REPRO, path, env, check=False)
    assert out.returncode == 1
    (line,) = printed(out)
    assert line.startswith("Error: params.yaml: line ") and "duplicate key" in line, line


def test_a_typo_under_plain_dvc_repro_leaves_every_output(copy):
    """DVC runs the stage (it cannot know the value is wrong), but removes none of its outputs
    first (persist: true), and the stage fails before it writes any."""
    path, env = copy
    before = {p: p.read_bytes() for p in (path / "metrics").rglob("kaiming*")}
    model = (path / "models/kaiming.pt").read_bytes()
    set_param(path, "variants.kaiming.activation", "swish")
    out = run(["dvc", "repro", "train@kaiming"], path, env, check=False)
    assert out.returncode != 0
    errors = [x for x in out.stderr.splitlines() if x.startswith("Error: ")]
    assert errors[-1].endswith("(train@kaiming left its outputs unchanged)")
    assert {p: p.read_bytes() for p in (path / "metrics").rglob("kaiming*")} == before
    assert (path / "models/kaiming.pt").read_bytes() == model
    assert changed_files(path, env) == []


def test_a_batch_that_would_exhaust_memory_is_refused_naming_the_key(copy):
    path, env = copy
    small_params(path, steps=1000, **{"train.curve_every": 1000, "train.batch_size": 300_000})
    set_param(path, "train.units_every", 1000)
    started = time.time()
    out = run(REPRO, path, env, check=False)
    assert time.time() - started < 60
    assert out.returncode == 1
    lines = printed(out)
    assert lines[-1].startswith("Error: train.batch_size: 300000 would take about ")
    assert "GiB is free here; lower it" in lines[-1]
    assert [x for x in lines if x.startswith("Error")] == lines[-1:]
    _, runs = runs_of(env)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    assert changed_files(path, env) == []


def test_an_output_outside_the_project_is_refused_before_any_work(copy, tmp_path):
    path, env = copy
    argv = stage_argv(path, "train@kaiming")
    argv[argv.index("--model") + 1] = str(tmp_path / "elsewhere.pt")
    started = time.time()
    out = run(argv, path, env, check=False)
    assert time.time() - started < 30
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith(f"Error: --model {tmp_path / 'elsewhere.pt'}: outside the project ")
    assert "seeds x" not in out.stderr


def test_make_repro_with_nothing_to_do_changes_no_file(copy):
    path, env = copy
    out = run(REPRO, path, env)
    assert printed(out) == []
    assert run(["git", "status", "--porcelain"], path, env).stdout == ""


def test_runs_whose_process_died_end_as_killed_and_every_run_is_current_or_not(copy):
    """The kernel's SIGKILL (out of memory, say) leaves a stage's runs RUNNING: the next stage
    or `make sync` ends them, but not a run of another host, which a shared server holds."""
    path, env = copy
    small_params(path, steps=200_000)
    client, _ = runs_of(env)
    experiment = client.create_experiment("actgrad")
    elsewhere = client.create_run(experiment, tags={"host": "elsewhere", "pid": "1"})
    stage = subprocess.Popen(
        stage_argv(path, "train@kaiming"),
        cwd=path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while len([r for r in runs_of(env)[1] if r.info.status == "RUNNING"]) < 4:
        assert stage.poll() is None and time.time() < deadline
        time.sleep(0.5)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    running = [r for r in runs_of(env)[1] if r.info.status == "RUNNING"]
    assert len(running) == 4  # the stage's three, and the other host's
    run(["git", "checkout", "--", "params.yaml"], path, env)  # as dvc.lock ran the stages
    run([sys.executable, "-m", "pipeline.tracking.sync"], path, env)
    runs = {r.info.run_id: r for r in runs_of(env)[1]}
    assert runs[elsewhere.info.run_id].info.status == "RUNNING"
    killed = [r for r in runs.values() if r.info.status == "KILLED"]
    assert len(killed) == 3
    assert all(f"its process {stage.pid} " in r.data.tags["killed_because"] for r in killed)
    assert all(
        r.data.tags.get("current") in ("true", "false")
        for r in runs.values()
        if r.info.run_id != elsewhere.info.run_id
    )


def test_a_server_that_is_not_mlflow_is_named_as_such(copy, tmp_path):
    path, env = copy
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = run(
            stage_argv(path, "train@kaiming"),
            path,
            {**env, "MLFLOW_TRACKING_URI": url},
            check=False,
        )
    finally:
        server.shutdown()
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith(f"Error: {url}/health answered HTTP 404 "), line
    assert "unreachable" not in line


def test_stages_print_no_warning_that_is_not_the_projects(reproduced):
    path, _ = reproduced
    printed_by_stages = (path.parent / "repro.out").read_text()
    assert "Warning" not in printed_by_stages and "warn" not in printed_by_stages.lower()
    machines = json.loads((path / "metrics/machine.json").read_text())
    assert set(machines["stages"]) == set(load_yaml((path / "dvc.lock").read_text())["stages"])
    assert os.path.getsize(path / "metrics/machine.json") < 20_000
