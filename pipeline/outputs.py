"""Outputs: written to a temporary sibling, then renamed into place; hashed as DVC hashes them."""

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


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


def strict(value):
    """`value` with every NaN or infinity as None: JSON has no such numbers, and DVC's metrics
    diff would always show a NaN as changed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    return [strict(v) for v in value] if isinstance(value, list | tuple) else value


def write_json(path, obj):
    write_text(path, json.dumps(strict(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path, columns, rows):
    """A CSV of `columns` with one line per row; floats written exactly (repr)."""
    lines = [",".join(columns)] + [",".join(repr(v) for v in row) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def md5_of(path):
    """The md5 of a file's bytes, as dvc.lock records it."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
