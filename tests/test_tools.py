"""The study used the way DVC and MLflow users work: the MLflow UI in a real browser, DVC plots
and metrics, progress output, a sweep through DVC's experiment queue, a shared tracking server
and a DVC remote. Real mlflow, dvc, git and Chromium on small-step copies of the project."""

import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, artifact_files, copy_project, run, stage_argv
from mlflow.tracking import MlflowClient

from actgrad.params import load_yaml

pytestmark = pytest.mark.slow  # DVC, MLflow and the stages on copies of the project

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"  # gitignored; the UI screenshot lands here
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def variants(path):
    return list(yaml.safe_load((path / "params.yaml").read_text())["variants"])


def parent_runs(client):
    """The runs of experiment actgrad that are not a seed's nested run."""
    exp = client.get_experiment_by_name("actgrad")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


@pytest.fixture
def study(reproduced, tmp_path):
    """A copy of the reproduced study (git, DVC cache and MLflow store) to change freely."""
    return copy_project(reproduced, tmp_path, runs=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_serving(command, *args, cwd, timeout=180):
    """`mlflow <command>` on a free loopback port: yield its URL, then stop it and its workers."""
    url = f"http://127.0.0.1:{free_port()}"
    log = cwd / f"mlflow-{command}.log"
    cmd = [MLFLOW, command, *args, "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "--workers", "1"], cwd=cwd, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"{cmd} did not come up:\n{log.read_text()}") from None
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def rest(url, endpoint, body):
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def chromium(url, cwd, *args):
    """Headless Chromium on `url` with a fresh profile, JS given 15 s of virtual time."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=cwd)
    cmd = [
        str(CHROMIUM),
        *"--headless --no-sandbox --disable-gpu --disable-background-networking".split(),
        *"--disable-component-update --disable-sync --no-first-run --disable-quic".split(),
        f"--user-data-dir={profile}",
        "--window-size=1900,1000",  # wide enough for the Source column
        "--virtual-time-budget=15000",
        *args,
        url,
    ]
    return run(cmd, cwd, timeout=180).stdout


# --- 1. the MLflow UI, looked at in a browser -------------------------------------------------


def runs_table(dom):
    """{run name: {column: text}} of the runs table in a DOM that Chromium dumped.

    The table (ag-grid) draws a row in two parts, the pinned run name and the other columns,
    both marked with the row's index; a run's name follows its colour (#rrggbb).
    """
    rows = {}
    for row in re.split(r'(?=<div[^>]*role="row")', dom)[1:]:
        index = re.search(r'row-index="(\d+)"', row[:500])
        for cell in re.split(r'(?=<div[^>]*\bcol-id=")', row)[1:] if index else []:
            column = re.match(r'<div[^>]*\bcol-id="(?:attributes\.`)?([^"`]+)', cell).group(1)
            text = " ".join(re.sub(r"<[^>]+>", " ", cell).split())
            rows.setdefault(index.group(1), {})[column] = text
    return {re.sub(r"^#[0-9a-f]{6} ", "", row["Run Name"]): row for row in rows.values()}


def test_mlflow_ui_shows_each_stages_current_run_with_its_source_and_dataset(study, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is absent; CI must install it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    path, env = study
    lock = load_yaml((path / "dvc.lock").read_text())["stages"]
    stages = sorted(s for s in lock if s not in ("download", "split"))
    ui = ["--backend-store-uri", env["MLFLOW_TRACKING_URI"]]
    with mlflow_serving("ui", *ui, cwd=tmp_path) as url:
        search = {"filter": "name = 'actgrad'", "max_results": 10}
        (exp,) = rest(url, "experiments/search", search)["experiments"]
        current = {"experiment_ids": [exp["experiment_id"]], "filter": "tags.current = 'true'"}
        runs = rest(url, "runs/search", current)["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        tops = [t for t in tags if "mlflow.parentRunId" not in t]
        assert sorted(t["dvc_stage"] for t in tops) == stages  # one current run per stage
        names = {t["mlflow.runName"]: t for t in tops}

        # MLflow 3 opens in its GenAI view; workflowType picks the training-runs table
        page = f"{url}/#/experiments/{exp['experiment_id']}?workflowType=machine_learning"
        table = runs_table(chromium(page, tmp_path, "--dump-dom"))
        assert sorted(table) == sorted(names), f"{page} rendered {sorted(table)}"
        digest = yaml.safe_load((path / "params.yaml").read_text())["data"]["sha256"][:8]
        for name, cells in table.items():
            assert cells["Source"] == Path(names[name]["mlflow.source.name"]).name, name
            trained = names[name]["dvc_stage"] != "report"
            assert (f"names.txt ({digest})" in cells["Dataset"]) == trained, (name, cells)

        # the Models page: the registered model of every variant
        models = f"{url}/#/models"
        assert "actgrad-mlp" in chromium(models, tmp_path, "--dump-dom")

        ARTIFACTS.mkdir(exist_ok=True)
        for shown, file in ((page, "mlflow_ui.png"), (models, "mlflow_models.png")):
            shot = ARTIFACTS / file
            shot.unlink(missing_ok=True)
            chromium(shown, tmp_path, f"--screenshot={shot}")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            print(f"MLflow UI screenshot: {shot}")


def listening_addresses(port):
    """The local addresses of the TCP sockets listening on `port` (IPv4 and IPv6)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # host order
                addresses.append(
                    socket.inet_ntop(
                        socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, b"".join(words)
                    )
                )
    return addresses


def test_make_ui_serves_the_project_store_on_localhost_only(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        ui = subprocess.Popen(
            ["make", "ui", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 180
        while not listening_addresses(port):
            assert ui.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(1)
        assert listening_addresses(port) == ["127.0.0.1"]
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)


def test_make_repro_mirrors_dvc_lock_in_mlflow_once_dvc_is_done():
    repros = {
        "repro": "python -m pipeline.tools.repro",
        "repro-all": "python -m pipeline.tools.repro --force",
    }
    for target, repro in repros.items():
        commands = run(["make", "-n", target], ROOT).stdout.splitlines()
        assert commands.index("python -m pipeline.tracking.sync") == commands.index(repro) + 1


# --- 2. DVC plots and metrics -----------------------------------------------------------------


def test_plots_overlay_every_variant_and_metrics_diff_follows_a_param_change(study, tmp_path):
    path, env = study
    names = variants(path)
    curves = (path / "reports/loss_curves.csv").read_text().splitlines()
    assert curves[0] == "variant,step,log10_loss"
    params = yaml.safe_load((path / "params.yaml").read_text())
    train = params["train"]
    # the init loss at step 0, then the mean of each block of curve_every steps, the last one
    # perhaps short
    blocks = {
        v: 1 - (-params["variants"][v].get("steps", train["steps"]) // train["curve_every"])
        for v in names
    }
    assert [row.split(",")[0] for row in curves[1:]] == [v for v in names for _ in range(blocks[v])]

    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], path, env)
    html = (tmp_path / "plots/index.html").read_text()
    assert "log10 loss, block means, lecture seed, all variants" in html
    assert '"color": {"field": "variant"' in html  # the template in .dvc/plots/variants.json
    assert all(f'"variant": "{v}"' in html for v in names)

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], path, env).stdout)
    metrics = shown[""]["data"]
    for v in names:
        numbers = metrics[f"metrics/{v}.json"]["data"]
        written = json.loads((path / f"metrics/{v}.json").read_text())
        for key in ("train_loss", "val_loss", "init_loss"):
            assert numbers[key] == written[key], (v, key)
        assert numbers["seeds"] == written["seeds"]
    table = run(["dvc", "metrics", "show"], path, env).stdout
    assert all(f"metrics/{v}.json" in table for v in names)

    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], path, env)
    changed = run(["git", "status", "--porcelain", "--", "metrics/*.json"], path, env).stdout
    assert changed == " M metrics/kaiming.json\n"  # the other variants did not change
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "--json"], path, env).stdout)
    assert list(diff) == ["metrics/kaiming.json"]  # no NaN in the JSON to show as changed
    kaiming = diff["metrics/kaiming.json"]
    assert kaiming["val_loss"]["old"] != kaiming["val_loss"]["new"]
    assert {"train_loss", "val_loss"} <= set(kaiming)
    assert "metrics/kaiming.json" in run(["dvc", "metrics", "diff", "HEAD"], path, env).stdout


# --- 3. progress: a bar on a terminal, never in CI --------------------------------------------


def stderr_on_a_terminal(cmd, cwd, env):
    """Run cmd with stderr on an 80x24 pseudo-terminal; return what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait() == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_training_shows_a_progress_bar_on_a_terminal_but_not_in_ci(study, tmp_path):
    path, env = study
    train = stage_argv(path, "train@kaiming")

    ci = stderr_on_a_terminal(train, path, env)
    lines = [x for x in ci.splitlines() if "train@kaiming" in x]
    assert len(lines) == 3, ci  # the start, the one task of both seeds done, the end
    assert re.fullmatch(r"\[[\d:]{8}\] train@kaiming: 2 seeds x 300 steps on .*", lines[0]), ci
    done = r"\[[\d:]{8}\] train@kaiming: seeds 2147483647, 1 trained on .* in \d+s"
    assert re.fullmatch(done, lines[1]), ci
    assert re.fullmatch(r"\[[\d:]{8}\] train@kaiming: done in \d+s, train .*", lines[2]), ci
    assert "step/s" not in ci and "\r" not in ci.replace("\r\n", "\n"), ci

    interactive = stderr_on_a_terminal(train, path, {k: v for k, v in env.items() if k != "CI"})
    assert "step/s" in interactive and "loss=" in interactive


def test_every_stage_logs_a_start_and_an_end_line(study, tmp_path):
    path, env = study
    out = run(["dvc", "repro", "--force", "-s", "split", "train@kaiming", "report"], path, env)
    for stage in ["split", "train@kaiming", "report"]:
        lines = [x for x in out.stderr.splitlines() if re.match(rf"\[[\d:]{{8}}\] {stage}: ", x)]
        progress = [x for x in lines if " trained on " in x]  # a task of seeds done
        assert len(lines) - len(progress) == 2, out.stderr
        assert re.search(r"wrote|done in", lines[-1]), lines
    assert "step/s" not in out.stderr


# --- 4. DVC's experiment queue (its sweep runs on a cluster: tests/test_cluster.py) ------


def end_stray_workers(path):
    """Kill queue workers still alive: dvc-task's worker can miss its own shutdown when its queue
    empties while it runs the last task (treeverse/dvc#10427), and then idles forever."""
    for pidfile in (path / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
        pid = int(pidfile.read_text())
        try:
            if b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # it has already gone


# --- 5. team scale: a shared tracking server and a DVC remote ---------------------------------


def test_stages_log_runs_and_artifacts_to_a_shared_tracking_server(study, tmp_path):
    path, env = study
    server = tmp_path / "server"
    server.mkdir()
    args = [
        "--backend-store-uri",
        f"sqlite:///{server / 'db.sqlite'}",
        "--artifacts-destination",
        str(server / "artifacts"),
    ]
    with mlflow_serving("server", *args, cwd=server) as url:
        env = {**env, "MLFLOW_TRACKING_URI": url}
        run(["dvc", "repro", "--force", "-s", "train@kaiming"], path, env)

        client = MlflowClient(url)
        (parent,) = parent_runs(client)
        assert parent.info.run_name == "kaiming" and parent.info.status == "FINISHED"
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
        metrics = json.loads((path / "metrics/kaiming.json").read_text())
        assert parent.data.metrics["val_loss"] == metrics["val_loss"]
        artifacts = set(artifact_files(client, parent.info.run_id))
        assert "metrics/kaiming.json" in artifacts and any(a.endswith(".png") for a in artifacts)
        copy = client.download_artifacts(parent.info.run_id, "metrics/kaiming.json", str(tmp_path))
        assert json.loads(Path(copy).read_text()) == metrics

        exp_id = parent.info.experiment_id
        found = rest(url, "runs/search", {"experiment_ids": [exp_id]})["runs"]
        assert len(found) == 1 + 2  # the variant's run and one per seed
    run_folder = server / "artifacts" / exp_id / parent.info.run_id / "artifacts"
    stored = {str(p.relative_to(run_folder)) for p in run_folder.rglob("*") if p.is_file()}
    assert stored == artifacts  # the server kept them in its --artifacts-destination


def test_a_clone_pulls_every_output_from_a_dvc_remote_and_retrains_nothing(study, tmp_path):
    path, env = study
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], path, env)
    run(["git", "commit", "-qam", "remote"], path, env)
    run(["dvc", "push"], path, env)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(path), str(clone)], tmp_path)
    assert not (clone / "models/kaiming.pt").exists()
    run(["dvc", "pull"], clone, env)
    for out in ["data/raw/names.txt", "data/split/train.pt", "models/kaiming.pt"]:
        assert (clone / out).read_bytes() == (path / out).read_bytes()
    assert "Data and pipelines are up to date." in run(["dvc", "status"], clone, env).stdout
    out = run(["dvc", "repro"], clone, env).stdout
    assert "Running stage" not in out, out

    # make sync: the teammate's own MLflow store gets every stage's runs, rebuilt from the
    # pulled outputs, and every variant's model
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'teammate.db'}"}
    run([sys.executable, "-m", "pipeline.tracking.sync"], clone, env)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    tops = parent_runs(client)
    lock = load_yaml((clone / "dvc.lock").read_text())["stages"]
    assert sorted(r.data.tags["dvc_stage"] for r in tops) == sorted(
        s for s in lock if s not in ("download", "split")
    )
    assert {r.data.tags["restored"] for r in tops} == {"true"}
    exp = client.get_experiment_by_name("actgrad").experiment_id
    models = client.search_logged_models([exp])
    assert {m.tags["variant"] for m in models if "variant" in m.tags} == set(variants(clone))
    deep = yaml.safe_load((clone / "params.yaml").read_text())["deep"]
    networks = {m.tags["deep_config"] for m in models if "deep_config" in m.tags}
    assert networks and networks <= set(deep)  # a config whose seeds all diverged has none
