"""Outputs: a stage's files written together, only once it knows it succeeded.

Each file goes to a hidden temporary sibling of its final place. When the stage's work is
done, every file is renamed into place at once (`commit`); if the stage fails before that, the
temporary files go, and if it fails after (logging to MLflow), the files it put in place go too,
so a failed stage leaves no output of its own behind.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class Outputs:
    def __init__(self):
        self.staged = {}  # final path: its temporary path
        self.committed = []

    def path(self, final):
        """A temporary path to write `final` to; it is renamed to `final` on commit."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        self.staged[final] = folder / final.name
        return self.staged[final]

    def text(self, final, text):
        self.path(final).write_text(text)

    def json(self, final, obj):
        self.text(final, json.dumps(strict(obj), indent=2, allow_nan=False) + "\n")

    def csv(self, final, columns, rows):
        """A CSV of `columns` with one line per row; floats written exactly (repr)."""
        lines = [",".join(columns)] + [",".join(repr(v) for v in row) for row in rows]
        self.text(final, "\n".join(lines) + "\n")

    def commit(self):
        """Rename every staged file into place."""
        for final, tmp in self.staged.items():
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self.committed.append(final)
        self._clean()

    def _clean(self):
        for tmp in self.staged.values():
            shutil.rmtree(tmp.parent, ignore_errors=True)
        self.staged = {}

    def remove_committed(self):
        for final in self.committed:
            shutil.rmtree(final) if final.is_dir() else final.unlink(missing_ok=True)


@contextmanager
def writing():
    """Outputs to stage; committed when the block ends unless it committed them itself. On an
    error (or Ctrl-C) nothing it staged or committed is left."""
    outputs = Outputs()
    try:
        yield outputs
        outputs.commit()
    except BaseException:
        outputs.remove_committed()
        raise
    finally:
        outputs._clean()


def strict(value):
    """`value` with every NaN or infinity as None: JSON has no such numbers, and DVC's metrics
    diff would always show a NaN as changed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    return [strict(v) for v in value] if isinstance(value, list | tuple) else value


def md5_of(path):
    """The md5 of a file's bytes, as dvc.lock records it."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
