"""Shared fixtures: the real names.txt, and small-step copies of the project to run DVC in."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

import actgrad  # noqa: F401  (first: it pins the CPU kernels before torch starts)
from actgrad.params import load_yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = [
    *("src", "pipeline", "dvc.yaml", "params.yaml", "expected.yaml", "tolerance.yaml"),
    *("pyproject.toml", ".dvcignore", "notebooks"),
]
LECTURE_SEED = 2147483647


def names_file():
    """names.txt where the download stage keeps it ($ACTGRAD_DATA_CACHE, else the user's cache
    folder): `make data` puts it there."""
    from actgrad.data.names import default_cache_dir

    return default_cache_dir() / "names.txt"


def pytest_collection_modifyitems(config, items):
    """The tests that need no project copy first: while one test process builds the shared
    project (the `reproduced` fixture), the other runs them."""
    items.sort(key=lambda item: "reproduced" in item.fixturenames)


def pytest_configure(config):
    if not names_file().is_file():
        pytest.exit(
            f"{names_file()}: no such file; `make data` fetches names.txt there, as the "
            "download stage does (or set ACTGRAD_DATA_CACHE to a folder that holds it)",
            returncode=4,
        )


@pytest.fixture(scope="session")
def names_text():
    return names_file().read_text()


@pytest.fixture(scope="session")
def splits(names_text):
    from actgrad.data.examples import make_splits
    from actgrad.data.names import read_words

    return make_splits(read_words(names_text), 3, (0.8, 0.1, 0.1), 42)


def run(cmd, cwd, env=None, check=True, **kwargs):
    """Run a command, returning the CompletedProcess; show its output if it fails."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


# the study, less what no test needs: every kind of stage and piece the tests exercise stays
DROPPED = {
    "variants": [
        *("softmax_fix", "tanh_fix", "xavier", "relu_kaiming", "relu_high_lr", "layernorm"),
        *("kaiming_fan_out", "torch_linear", "batchnorm_b1", "batchnorm_momentum_0_1"),
        *("leaky_relu_dead", "elu_dead", "constant_embedding"),
    ],
    "deep": [
        *("tanh_gain_1", "tanh_gain_0_5", "tanh_gain_3", "tanh_gain_3_lars", "linear_gain_1"),
        *("relu_gain_sqrt2", "notebook", "linear_gain_5_3_momentum", "tanh_gain_3_momentum"),
        *("tanh_lr_0_001", "tanh_no_fan_in", "batchnorm_gain_0_2", "batchnorm_gain_5"),
        *("batchnorm_no_fan_in", "batchnorm_no_fan_in_lr_1"),
    ],
}


def small_params(path, steps=300, seeds=(LECTURE_SEED, 1), **overrides):
    """Rewrite params.yaml in `path` for a quick run of most of the study: fewer steps, seeds,
    variants and deep configs, and the report's lessons left out where they lost a name."""
    params = yaml.safe_load((path / "params.yaml").read_text())
    for section, names in DROPPED.items():
        for name in names:
            params[section].pop(name, None)
    report = params["report"]
    for field, value in report.items():
        recipes = params["deep" if "deep" in field else "variants"]
        if isinstance(value, dict):
            report[field] = {
                name: others
                for name, others in value.items()
                if name in recipes and all(o in recipes for o in _listed(others))
            }
        elif isinstance(value, list) and not all(n in recipes for n in value):
            report[field] = [n for n in value if n in recipes] if field == "lecture" else []
    params["train"].update(steps=steps, curve_every=100, units_every=100, seeds=list(seeds))
    params["train"]["optimizer"]["decay_step"] = steps // 2
    for variant in params["variants"].values():
        if "optimizer" in variant:
            variant["optimizer"]["decay_step"] = steps // 2
        if "steps" in variant:
            variant["steps"] = steps // 2
    params["deep_train"].update(steps=100, seeds=list(seeds))
    params["demos"]["softmax_regression"]["steps"] = 200
    params["tour"]["steps"] = steps  # the miniature: the whole of the small run
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        params[section][name] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _listed(value):
    return value if isinstance(value, list) else [value]


def set_param(path, key, value):
    """Set a dotted key ("train.steps", "variants.kaiming.init.W3", "trian") in params.yaml."""
    params = yaml.safe_load((path / "params.yaml").read_text())
    *parents, name = key.split(".")
    section = params
    for parent in parents:
        section = section[parent]
    section[name] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


GIT_IDENTITY = {  # for the commits of the tests and of `dvc exp`, whatever ~/.gitconfig says
    "GIT_AUTHOR_NAME": "actgrad tests",
    "GIT_AUTHOR_EMAIL": "tests@actgrad.invalid",
    "GIT_COMMITTER_NAME": "actgrad tests",
    "GIT_COMMITTER_EMAIL": "tests@actgrad.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def commit(path, message):
    """`git add -A` and commit everything in `path`."""
    env = {**os.environ, **GIT_IDENTITY}
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", message], path, env)


def project_env(tmp_path):
    """The environment a test project in tmp_path runs in: its own MLflow store, the data cache,
    this Python first on PATH, CI's quiet output."""
    env = dict(os.environ)
    env.update(
        ACTGRAD_DATA_CACHE=str(names_file().parent),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        CI="true",
        # one process per train stage, as `make repro` runs them: with 2 seeds of 300 steps a
        # worker costs more to start than it saves (tests that need one pass --workers)
        ACTGRAD_WORKERS="1",
        **GIT_IDENTITY,
    )
    env.pop("DVC_ROOT", None)
    return env


def make_project(tmp_path):
    """A git + DVC copy of the project in tmp_path, small-step params, its own MLflow store."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    small_params(dest)
    env = project_env(tmp_path)
    run(["git", "init", "-q"], dest, env)
    commit(dest, "copy")
    return dest, env


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """A small-step project after `make repro` (pipeline.tools.repro, then the MLflow sync),
    committed.

    Tests change copies of it (copy_project), never it. Next to it: `repro.out`, what the
    lanes of `dvc repro` printed (their logs), and `modules`, where each stage listed the files
    it imported (tests/test_records.py checks them against dvc.yaml). The test processes that
    pytest-xdist runs share it: the first builds it, the others wait for it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is in the session's
        root = root.parent
    shared = root / "reproduced"
    with FileLock(f"{shared}.lock"):
        if not (shared / "built").exists():
            shared.mkdir(exist_ok=True)
            path, env = make_project(shared)
            modules = path.parent / "modules"
            repro = [sys.executable, "-m", "pipeline.tools.repro"]
            run(repro, path, {**env, "ACTGRAD_MODULES_DIR": str(modules)})
            logs = sorted((path / ".dvc/tmp/repro").glob("*.log"))  # what DVC printed, lanes
            (path.parent / "repro.out").write_text("".join(log.read_text() for log in logs))
            run([sys.executable, "-m", "pipeline.tracking.sync"], path, env)
            commit(path, "repro")
            (shared / "built").touch()
    return shared / "project", project_env(shared)


def stage_argv(path, stage):
    """The command dvc.lock holds for `stage` ("train@kaiming"), as this Python runs it."""
    lock = load_yaml((path / "dvc.lock").read_text())["stages"]
    words = shlex.split(lock[stage]["cmd"])
    return [sys.executable, *words[1:]]


def artifact_files(client, run_id, folder=None):
    """The paths of every file a run holds, in its folders too."""
    files = []
    for a in client.list_artifacts(run_id, folder):
        files += artifact_files(client, run_id, a.path) if a.is_dir else [a.path]
    return files


def copy_project(reproduced, tmp_path, runs=False):
    """A copy of the reproduced project (git and DVC cache) to change freely, with its own
    MLflow store: a copy of the project's with `runs`, else an empty one."""
    path, env = reproduced
    dest = tmp_path / "project"
    shutil.copytree(path, dest, symlinks=True, ignore=shutil.ignore_patterns("tmp"))  # .dvc/tmp
    store = tmp_path / "mlflow.db"
    if runs:
        shutil.copy2(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"), store)
    return dest, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
