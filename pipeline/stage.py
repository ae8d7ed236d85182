"""The entry of every stage: signals, one-line errors, progress, and a fast exit."""

import functools
import os
import signal
import sys
import time

import click

from actgrad.config import ParamsError
from actgrad.errors import DataError

MODULES_ENV = "ACTGRAD_MODULES_DIR"  # tests: each stage lists the files it imported there


class StageError(RuntimeError):
    """A failure that ends a stage with one line naming its cause."""


def log(message):
    """One line on stderr, which DVC passes through."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def stage_command(fn):
    """Wrap a stage: SIGTERM interrupts like Ctrl-C; known failures become one-line errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return fn(*args, **kwargs)
        except (ParamsError, DataError, StageError) as e:
            raise click.ClickException(str(e)) from None
        except FileNotFoundError as e:
            raise click.ClickException(
                f"{e.filename}: no such file; `dvc repro` runs the stages that make it"
            ) from None
        except KeyboardInterrupt as e:
            log(interrupted_message(e.args[0] if e.args else "SIGINT"))  # a raised one has none
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
    if os.environ.get(MODULES_ENV):
        list_modules(os.environ[MODULES_ENV])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def list_modules(folder):
    """Write the file of every module this process imported to <folder>/<stage>.txt."""
    files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    from .outputs import writing  # after the snapshot: a stage need not import it

    name = os.environ.get("DVC_STAGE") or getattr(sys.modules["__main__"].__spec__, "name", "-c")
    with writing() as outputs:
        outputs.text(os.path.join(folder, f"{name}.txt"), "\n".join(files) + "\n")


def progress_bar(total, desc):
    """A tqdm bar on an interactive terminal; silent in CI or when stderr is not a TTY."""
    from tqdm import tqdm

    quiet = os.environ.get("CI") or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", disable=bool(quiet), leave=False)
