"""The MLflow store: where it is, a client that fails fast, runs with their tags and logging.

`import mlflow` costs about two seconds, so it happens inside the functions that need it.
"""

import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

EXPERIMENT = "actgrad"


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached: a stage's one-line error."""


def project_root():
    """The DVC project this stage belongs to, also inside a queued experiment's copy."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def tracking_uri():
    """$MLFLOW_TRACKING_URI, else the sqlite store in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def mlflow_client():
    """A client for the tracking store and our experiment id; fails fast if a server is down.
    The runs that a process of this host left RUNNING when it died end as KILLED."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    from mlflow.tracking import MlflowClient

    with _opening(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        exp_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    end_orphans(client, exp_id)
    return client, exp_id


def check_server(uri):
    """TrackingError unless the server at `uri` answers MLflow's /health within 5 seconds."""
    health = uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(health, timeout=5).close()
    except urllib.error.HTTPError as e:
        raise TrackingError(
            f"{health} answered HTTP {e.code} {e.reason}: MLFLOW_TRACKING_URI={uri} names a "
            "server that is not MLflow's tracking server; point it at one, or unset it to use "
            "the local sqlite store"
        ) from None
    except OSError as e:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(e, 'reason', e)}); "
            "start it or unset MLFLOW_TRACKING_URI to use the local sqlite store"
        ) from None


def process_started(pid):
    """When process `pid` started (clock ticks after boot), or None if there is no such
    process: with the pid, it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process():
    """The tags that name the process a run is logged from: host, pid, its start."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": process_started("self"),
    }


def end_orphans(client, exp_id):
    """End as KILLED the RUNNING runs of this host whose process is gone (killed by the kernel
    for memory, say): a shared server also holds other hosts' live runs, which stay."""
    host = socket.gethostname()
    running = client.search_runs(
        [exp_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    )
    for run in running:
        pid, started = run.data.tags.get("pid"), run.data.tags.get("pid_started")
        if pid and process_started(pid) != started:
            why = f"its process {pid} on {host} ended without ending the run"
            set_tags(client, run.info.run_id, {"killed_because": why})
            client.set_terminated(run.info.run_id, "KILLED")


@contextmanager
def _opening(uri):
    """For a sqlite store: one process at a time creates its tables and our experiment.

    Stages that start together (`dvc queue start -j 2` on a fresh clone) would otherwise race
    through MLflow's table set-up and fail. The lock is an flock on the database file itself,
    which sqlite's own (fcntl) locks ignore; an empty file is a valid new database.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        raise TrackingError(f"MLflow store {uri}: the folder {path.parent} does not exist")
    db = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # a descriptor to lock, nothing written
    try:
        fcntl.flock(db, fcntl.LOCK_EX)
        yield
    finally:
        os.close(db)


def git_commit():
    """The commit checked out in the working directory, or None outside a git repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


ENV_PACKAGES = ("torch", "numpy", "dvc", "mlflow", "pandas", "scipy", "matplotlib")
KERNEL_SWITCHES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")


@functools.cache
def packages():
    """ "name==version" of every installed distribution, sorted: the run's environment."""
    found = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def environment_tags():
    """What a result can be traced to: Python, the versions of the packages that compute and
    record it, a hash of every installed package's version (the full list is the top run's
    artifact environment/packages.txt) and the kernel switches the process ran with."""
    versions = dict(p.split("==") for p in packages())
    tags = {"env.python": platform.python_version()}
    tags |= {f"env.{name}": versions.get(name, "absent") for name in ENV_PACKAGES}
    tags["env.packages_sha256"] = hashlib.sha256("\n".join(packages()).encode()).hexdigest()
    tags |= {f"env.{k}": os.environ.get(k, "unset") for k in KERNEL_SWITCHES}
    return tags


def log_environment(client, run_id):
    client.log_text(run_id, "\n".join(packages()) + "\n", "environment/packages.txt")


def run_tags(stage, source, **extra):
    """Tags every run carries: its DVC stage, the script and commit it ran (MLflow's Source and
    Version columns), its environment, the process that logs it, `current` false until
    `make sync` finds it is the stage's current run and, inside `dvc exp run`, the
    experiment's name."""
    tags = {"dvc_stage": stage, "mlflow.source.name": source, "mlflow.source.type": "LOCAL"}
    tags |= environment_tags() | this_process() | {"current": "false"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    tags.update(extra)
    return {k: str(v) for k, v in tags.items()}


@contextmanager
def mlflow_run(client, exp_id, name, tags, parent_id=None):
    """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C / SIGTERM."""
    if parent_id:
        tags = {**tags, "mlflow.parentRunId": parent_id}
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    try:
        yield run_id
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_values(client, run_id, metrics=None, params=None, series=None):
    """Log metrics, params and whole series ({key: [(step, value)]}) in one batch, which
    MlflowClient.log_batch splits as its store needs."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    for key, points in (series or {}).items():
        items += [Metric(key, float(v), now, int(step)) for step, v in points]
    param_items = [Param(k, str(v)) for k, v in (params or {}).items()]
    client.log_batch(run_id, metrics=items, params=param_items)


def log_datasets(client, run_ids, datasets, context="training"):
    """Log datasets as every run's inputs: MLflow's Dataset column shows "name (digest)".

    Each dataset is a dict of name, digest, source_type ("http", "local"), source (a dict such
    as {"url": ...}) and profile (a dict of its sizes).
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [
        DatasetInput(
            Dataset(
                name=d["name"],
                digest=d["digest"],
                source_type=d["source_type"],
                source=json.dumps(d["source"]),
                profile=json.dumps(d["profile"]),
            ),
            [InputTag(MLFLOW_DATASET_CONTEXT, context)],
        )
        for d in datasets
    ]
    for run_id in run_ids:
        client.log_inputs(run_id, datasets=inputs)


def set_tags(client, run_id, tags):
    """Set several tags on a run at once."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
