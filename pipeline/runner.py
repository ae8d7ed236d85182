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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import click

from actgrad import compute
from actgrad.errors import DataError, ParamsError
from actgrad.kernels import fingerprint

from . import machines
from .files import md5_of, stale_staging, writing
from .tracking.records import Made, open_runs, tag_outputs
from .tracking.store import TrackingError, mlflow_client

PARAMS = "params.yaml"
MODULES_ENV = "ACTGRAD_MODULES_DIR"  # tests: each stage lists the files it imported there


WORKERS_ENV = "ACTGRAD_WORKERS"  # the default of --workers
SEEDS_PER_TASK_ENV = "ACTGRAD_SEEDS_PER_TASK"  # the default of --seeds-per-task
TASK_OPTIONS = [  # of a stage whose compute trains seeds as tasks (actgrad/compute.py)
    click.Option(
        ["--workers"],
        type=click.IntRange(min=1),
        default=lambda: int(os.environ.get(WORKERS_ENV, 1)),
        show_default=f"${WORKERS_ENV}, else 1",
        help="single-threaded processes of a LocalCluster to train on, when no scheduler is "
        "named (1: this process)",
    ),
    click.Option(
        ["--scheduler"],
        show_default=f"${compute.ADDRESS_ENV}",
        help="the address of a Dask scheduler to train on",
    ),
    click.Option(
        ["--seeds-per-task"],
        type=click.IntRange(min=1),
        default=lambda: os.environ.get(SEEDS_PER_TASK_ENV),
        show_default=f"${SEEDS_PER_TASK_ENV}, else all of them",
        help="seeds each task trains",
    ),
]


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

    @property
    def trains(self):
        """Whether compute trains seeds as tasks: it takes `tasks`."""
        return "tasks" in inspect.signature(self.compute).parameters

    def command(self):
        """The stage's click command: its key, an option for each file, and where to train
        for a compute that trains."""
        arguments = [click.Argument([self.key])] if self.key else []
        options = [
            click.Option([f"--{role.replace('_', '-')}", role], required=True)
            for role in {**self.inputs, **self.outputs}
        ]
        options += TASK_OPTIONS if self.trains else []
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
        where = {k: args.pop(k) for k in ("workers", "scheduler", "seeds_per_task") if k in args}
        name = self.stage_name(key)
        one_line(self.run, f"{name} left its outputs unchanged")(key, args, **where)

    def run(self, key, paths, workers=1, scheduler=None, seeds_per_task=None):
        """Check everything, compute, write the outputs together, log the runs. A failure
        anywhere leaves every output as it was."""
        name, started = self.stage_name(key), time.time()
        params = self.params(PARAMS)
        check_outputs_inside(paths, self.outputs)
        for stale in stale_staging(paths[role] for role in self.outputs):
            shutil.rmtree(stale, ignore_errors=True)  # left by a stage that was killed
        client = exp_id = None
        if self.runs:  # an unreachable tracking server fails the stage before any work
            client, exp_id = mlflow_client()
        cluster = (
            compute.tasks(workers, scheduler, seeds_per_task) if self.trains else nullcontext()
        )
        with cluster as tasks:  # an unreachable scheduler too
            values = {role: kind.read(paths[role]) for role, kind in self.inputs.items()}
            made = Made(params, key, values, paths)
            if self.describe:
                log(f"{name}: {self.describe(made)}")
            self.make(made, client, exp_id, tasks)
        record_machines(name, tasks)
        done = f"done in {time.time() - started:.0f}s"
        log(f"{name}: {done}{', ' + self.summary(made) if self.summary else ''}")

    def make(self, made, client, exp_id, tasks):
        """Compute; write the outputs together; log the runs, if the stage has runs."""
        params, key, paths = made.params, made.key, made.paths
        wanted = inspect.signature(self.compute).parameters
        given = {role: v for role, v in made.values.items() if role in wanted}
        given |= {"paths": paths, "tasks": tasks}
        given = {name: value for name, value in given.items() if name in wanted}
        plan = self.runs and self.runs(params, key)
        name = self.stage_name(key)
        opened = open_runs(client, exp_id, name, self.source, plan, made) if plan else nullcontext()
        with writing() as out, opened as runs:
            computed = self.compute(params, *([key] if self.key else []), **given)
            for role, kind in self.outputs.items():
                kind.write(out.path(paths[role]), computed[role])
            out.commit()
            made.values.update(computed)
            if runs:
                self.log_runs(client, runs, made)
                tag_outputs(client, runs, {paths[r]: md5_of(paths[r]) for r in self.outputs})


def record_machines(name, tasks):
    """metrics/machine.json: this process and every worker that trained for the stage; one
    line for each worker that is another machine than this one."""
    here = fingerprint()
    placements = [p for p in (tasks.placements if tasks else []) if p.fingerprint]
    others = {p.worker: p for p in placements if p.fingerprint != here}
    for worker, p in others.items():
        differ = ", ".join(k for k, v in p.fingerprint.items() if here.get(k) != v)
        log(
            f"{name}: worker {worker} on {p.host} is another machine (its {differ}): "
            "make check-outputs will compare these outputs by value, not by bit"
        )
    machines.record(
        os.environ.get("DVC_STAGE") or name, [here] + [p.fingerprint for p in placements]
    )


def check_memory(section, params, needed):
    """StageError naming the param whose part is largest, when the parts `needed` ({param:
    bytes}, of params.yaml's `section`) would not fit in the memory this machine has free."""
    import psutil

    free = psutil.virtual_memory().available
    if sum(needed.values()) <= 0.9 * free:
        return
    key = max(needed, key=needed.get)
    raise StageError(
        f"{section}.{key}: {getattr(params, key)} would take about {needed[key] / 2**30:.1f} GiB "
        f"({sum(needed.values()) / 2**30:.1f} GiB in all), and {free / 2**30:.1f} GiB is free "
        "here; lower it"
    )


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


def one_line(fn, left=None):
    """`fn` with its known failures as one-line errors that end saying what it `left`, and an
    interrupt's exit code."""
    tail = f" ({left})" if left else ""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ParamsError, DataError, StageError, TrackingError, compute.ClusterError) as e:
            raise click.ClickException(f"{e}{tail}") from None
        except FileNotFoundError as e:
            raise click.ClickException(
                f"{e.filename}: no such file; `dvc repro` runs the stages that make it{tail}"
            ) from None
        except KeyboardInterrupt as e:
            signame = e.args[0] if e.args else "SIGINT"  # one that code raised has none
            log(f"interrupted ({signame}){'; ' + left if left else ''}")
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
    """Raise KeyboardInterrupt again if a signal came, in case something caught the first one;
    in the main thread only, where the signal handler raised it. Another thread (a Dask client's
    event loop, which runs the progress callbacks of a cluster's tasks) must go on: raising there
    would stop the loop that the main thread needs to cancel the tasks and close the client."""
    if _interrupted and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt(_interrupted[0])


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
