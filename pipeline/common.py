"""What every stage shares: params, atomic outputs, error handling and the MLflow store."""

import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import click
import torch
import yaml

from actgrad.config import ParamsError, load_params
from actgrad.data import DataError, Vocab
from actgrad.train import Diverged

EXPERIMENT = "actgrad"


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached."""


def log(message):
    """One line on stderr, which DVC passes through."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_params(path="params.yaml"):
    """params.yaml, validated as a whole."""
    try:
        values = yaml.load(Path(path).read_text(), Loader=UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: cannot read it ({e})") from None
    except yaml.MarkedYAMLError as e:
        raise ParamsError(f"{path}: line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: {' '.join(str(e).split())}") from None
    return load_params(values)


_interrupted = []  # the signals received: an interrupt stays pending even if code swallowed it


def _raise_interrupt(signum, frame):
    _interrupted.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(_interrupted[0])


def check_interrupted():
    """Raise KeyboardInterrupt again if a signal came, in case something caught the first one."""
    if _interrupted:
        raise KeyboardInterrupt(_interrupted[0])


def stage_command(fn):
    """Wrap a stage: SIGTERM interrupts like Ctrl-C; known failures become one-line errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return fn(*args, **kwargs)
        except (ParamsError, DataError, Diverged, TrackingError) as e:
            raise click.ClickException(str(e)) from None
        except FileNotFoundError as e:
            raise click.ClickException(
                f"{e.filename}: no such file; `dvc repro` runs the stages that make it"
            ) from None
        except KeyboardInterrupt as e:
            signame = e.args[0] if e.args else "SIGINT"  # one raised by other code has none
            log(f"interrupted ({signame}); no half-written output was left")
            sys.exit(130)

    return wrapper


def run_stage(command):
    """Run a stage's click command, then exit without Python's interpreter teardown.

    By then every output is in place and every MLflow run has ended; tearing down the modules
    of torch and MLflow would only add about a second to each stage.
    """
    try:
        command()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- outputs: written to a temporary sibling, then renamed into place -------------------------


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


# --- MLflow -----------------------------------------------------------------------------------


def project_root():
    """The DVC project this stage belongs to, also inside a queued experiment's copy."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def tracking_uri():
    """$MLFLOW_TRACKING_URI, else the sqlite store in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def mlflow_client():
    """A client for the tracking store and our experiment id; fails fast if a server is down."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except OSError as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({getattr(e, 'reason', e)}); "
                "start it or unset MLFLOW_TRACKING_URI to use the local sqlite store"
            ) from None
    from mlflow.tracking import MlflowClient

    with _opening(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        exp_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    return client, exp_id


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


def run_tags(**extra):
    """Tags every run carries: commit, DVC stage and, inside `dvc exp run`, the experiment name."""
    tags = {"git_commit": git_commit(), "dvc_stage": os.environ.get("DVC_STAGE", "")}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    tags.update(extra)
    return tags


@contextmanager
def mlflow_run(client, exp_id, name, tags, parent_id=None):
    """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C / SIGTERM."""
    tags = {k: str(v) for k, v in tags.items()}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
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
    """Log metrics, params and whole series ({key: [(step, value)]}) in batches of 1,000."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    for key, points in (series or {}).items():
        items += [Metric(key, float(v), now, int(step)) for step, v in points]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])
    param_items = [Param(k, str(v)) for k, v in (params or {}).items()]
    for i in range(0, len(param_items), 100):
        client.log_batch(run_id, params=param_items[i : i + 100])


def load_split(split_dir, name):
    """(X, Y) of one split written by the split stage."""
    data = torch.load(Path(split_dir) / f"{name}.pt", weights_only=True)
    return data["X"], data["Y"]


def progress_bar(total, desc):
    """A tqdm bar on an interactive terminal; silent in CI or when stderr is not a TTY."""
    from tqdm import tqdm

    quiet = os.environ.get("CI") or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", disable=bool(quiet), leave=False)


def load_vocab(split_dir):
    return Vocab(json.loads((Path(split_dir) / "vocab.json").read_text())["chars"])


def flat_metrics(metrics):
    """Top-level numbers, and {"mean": {k: v}} as k_mean, for MLflow."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            if key in ("mean", "sd"):
                flat.update({f"{k}_{key}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
