"""The one stage runner. A stage declares what it reads and writes and gives a pure compute; the
runner does the rest: its command line, the params, the checks before any work, the MLflow runs,
the outputs written together, the log lines, the one-line errors, signals, a fast exit.

    STAGE = Stage(
        name="train", key="variant",  # DVC's stage train@<variant>
        inputs={"split": Split, "summary": Json},
        outputs={"model": Tensors, "metrics": Json, ...},
        compute=compute,  # compute(params, variant, split, summary) -> {role: value}
        runs=runs, log_runs=log_runs,  # its MLflow runs (tracking/records.py); None: it logs none
    )
    if __name__ == "__main__":
        STAGE.main()

Its command names every file it reads and writes as an option named after the role:
`python -m pipeline.stages.train kaiming --split data/split ... --model models/kaiming.pt`.
"""

import functools
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import click

from actgrad.errors import DataError, ParamsError

from .files import md5_of, writing
from .tracking.records import Made, open_runs, tag_outputs
from .tracking.store import TrackingError, mlflow_client

PARAMS = "params.yaml"
MODULES_ENV = "ACTGRAD_MODULES_DIR"  # tests: each stage lists the files it imported there


WORKERS_ENV = "ACTGRAD_WORKERS"  # the default of --workers; pipeline/tools/repro.py sets it to 1
WORKERS = click.Option(
    ["--workers"],
    type=click.IntRange(min=1),
    default=lambda: int(os.environ.get(WORKERS_ENV, os.cpu_count())),
    show_default=f"${WORKERS_ENV}, else one per core",
    help="processes to spread the seeds over (the numbers do not depend on it)",
)


class StageError(RuntimeError):
    """A failure that ends a stage with one line naming its cause."""


def log(message):
    """One line on stderr, which DVC passes through."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Stage:
    name: str  # DVC's name of the stage, or of each of its foreach stages before the @
    params: Callable  # params.yaml's path -> what the stage validates of it
    # compute(params, [key,] inputs by role, [paths]) -> {role: value} of every output, and
    # anything more the log and the end line read; it is given the inputs it names
    compute: Callable
    inputs: dict = field(default_factory=dict)  # {role: kind} (pipeline/files.py)
    outputs: dict = field(default_factory=dict)  # {role: kind}
    key: str | None = None  # the argument of a foreach stage: "variant", "config"
    runs: Callable | None = None  # runs(params, key) -> tracking.records.Plan
    log_runs: Callable | None = None  # log_runs(client, runs, made): fill the runs
    describe: Callable | None = None  # describe(made) -> the start line's words
    summary: Callable | None = None  # summary(made) -> the end line's words

    def stage_name(self, key):
        return f"{self.name}@{key}" if self.key else self.name

    @property
    def source(self):
        """The stage's script, relative to the project: MLflow's Source column."""
        return os.path.relpath(inspect.getfile(self.compute))

    def command(self):
        """The stage's click command: its key, an option for each file, and --workers for a
        compute that trains."""
        arguments = [click.Argument([self.key])] if self.key else []
        options = [
            click.Option([f"--{role.replace('_', '-')}", role], required=True)
            for role in {**self.inputs, **self.outputs}
        ]
        if "workers" in inspect.signature(self.compute).parameters:
            options.append(WORKERS)
        return click.Command(self.name, params=arguments + options, callback=self._run)

    def parse(self, words):
        """(key, {role: path}) of the words after `python -m <module>`."""
        args = self.command().make_context(self.name, list(words)).params
        return args.pop(self.key) if self.key else None, args

    def main(self):
        """Run the stage from the command line."""
        run_fast(self.command(), self.name)

    def _run(self, **args):
        key = args.pop(self.key) if self.key else None
        one_line(self.run)(key, args, args.pop("workers", None))

    def run(self, key, paths, workers=None):
        """Check everything, compute, write the outputs together, log the runs."""
        name, started = self.stage_name(key), time.time()
        params = self.params(PARAMS)
        check_outputs_inside(paths, self.outputs)
        client = exp_id = None
        if self.runs:  # an unreachable tracking server fails the stage before any work
            client, exp_id = mlflow_client()
        values = {role: kind.read(paths[role]) for role, kind in self.inputs.items()}
        made = Made(params, key, values, paths)
        if self.describe:
            log(f"{name}: {self.describe(made)}")
        wanted = inspect.signature(self.compute).parameters
        given = {role: value for role, value in values.items() if role in wanted}
        given |= {"paths": paths} if "paths" in wanted else {}
        given |= {"workers": workers} if "workers" in wanted else {}
        plan = self.runs and self.runs(params, key)
        opened = open_runs(client, exp_id, name, self.source, plan, made) if plan else nullcontext()
        with writing() as out, opened as runs:
            computed = self.compute(params, *([key] if self.key else []), **given)
            for role, kind in self.outputs.items():
                kind.write(out.path(paths[role]), computed[role])
            out.commit()
            values.update(computed)
            if runs:
                self.log_runs(client, runs, made)
                tag_outputs(client, runs, {paths[r]: md5_of(paths[r]) for r in self.outputs})
        done = f"done in {time.time() - started:.0f}s"
        log(f"{name}: {done}{', ' + self.summary(made) if self.summary else ''}")


def check_outputs_inside(paths, outputs):
    """Every output inside the stage's workspace: MLflow names each artifact by its path there."""
    here = Path.cwd().resolve()
    for role in outputs:
        path = Path(paths[role]).resolve()
        if not path.is_relative_to(here):
            raise StageError(
                f"--{role.replace('_', '-')} {paths[role]}: outside the project {here}; a stage "
                "writes its outputs inside it, where MLflow names them by their paths"
            )


# --- the entry of every stage and tool --------------------------------------------------------


def one_line(fn):
    """`fn` with its known failures as one-line errors, and an interrupt's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ParamsError, DataError, StageError, TrackingError) as e:
            raise click.ClickException(str(e)) from None
        except FileNotFoundError as e:
            raise click.ClickException(
                f"{e.filename}: no such file; `dvc repro` runs the stages that make it"
            ) from None
        except KeyboardInterrupt as e:
            log(interrupted_message(e.args[0] if e.args else "SIGINT"))  # a raised one has none
            sys.exit(130)

    return wrapper


def run_fast(command, name):
    """Run a click command, SIGTERM interrupting as Ctrl-C does, then exit without Python's
    interpreter teardown: by then every output is in place and every MLflow run has ended, and
    tearing down the modules of torch and MLflow would only add about a second."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        command()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    if os.environ.get(MODULES_ENV):
        list_modules(os.environ[MODULES_ENV], name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- signals ---------------------------------------------------------------------------------

_interrupted = []  # the signals received: an interrupt stays pending even if code swallowed it


def _raise_interrupt(signum, frame):
    _interrupted.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(_interrupted[0])


def check_interrupted():
    """Raise KeyboardInterrupt again if a signal came, in case something caught the first one."""
    if _interrupted:
        raise KeyboardInterrupt(_interrupted[0])


def interrupted_message(signame):
    """What an interrupt left behind, and under `dvc repro` how to get the old outputs back."""
    message = f"interrupted ({signame}); no half-written output was left"
    stage = os.environ.get("DVC_STAGE")
    if stage:
        message += (
            f", but DVC had removed the previous outputs of {stage}: `dvc checkout {stage}` "
            "restores the cached ones, `git checkout` the committed ones that `git status` "
            "lists as deleted"
        )
    return message


# --- what the tests and the progress bar need --------------------------------------------------


def list_modules(folder, name):
    """Write the file of every module this process imported to <folder>/<stage>.txt."""
    files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    name = os.environ.get("DVC_STAGE") or name
    with writing() as out:
        out.path(os.path.join(folder, f"{name}.txt")).write_text("\n".join(files) + "\n")


def progress_bar(total, desc):
    """A tqdm bar on an interactive terminal; silent in CI or when stderr is not a TTY."""
    from tqdm import tqdm

    quiet = os.environ.get("CI") or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", disable=bool(quiet), leave=False)
