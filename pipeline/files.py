"""The kinds of files a stage reads and writes, and a stage's outputs written together.

A kind turns a value into a file and back: `write(path, value)`, `read(path)`. A stage's
compute returns plain values by role; the runner writes each with its kind, and
`python -m pipeline.tracking.sync` reads them back the same way to rebuild a stage's MLflow
runs. Outputs are written through `writing()`: each file goes to a hidden temporary sibling of
its final place, and all are renamed into place together once the stage's work is done.
"""

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from actgrad.data.examples import Vocab
from actgrad.data.names import read_words, sha256_of
from actgrad.params import load_yaml

# --- the kinds ---------------------------------------------------------------------------------


def strict(value):
    """`value` with every NaN or infinity as None: JSON has no such numbers, and DVC's metrics
    diff would always show a NaN as changed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    return [strict(v) for v in value] if isinstance(value, list | tuple) else value


class Json:
    @staticmethod
    def write(path, value):
        Path(path).write_text(json.dumps(strict(value), indent=2, allow_nan=False) + "\n")

    @staticmethod
    def read(path):
        return json.loads(Path(path).read_text())


@dataclass
class Table:
    """A CSV's columns and rows; floats are written exactly (repr) and read back as written."""

    columns: list
    rows: list

    def series(self, by=None):
        """{column: [(step, value)]} of the finite values; with `by` (a column such as "seed"),
        one such dict per value of that column."""
        groups = {}
        for row in self.rows:
            cells = dict(zip(self.columns, row))
            group = groups.setdefault(cells.pop(by) if by else None, {})
            step = cells.pop("step")
            for column, value in cells.items():
                if math.isfinite(value):
                    group.setdefault(column, []).append((step, value))
        return groups if by else groups.get(None, {})


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


class Csv:
    @staticmethod
    def write(path, table):
        lines = [",".join(table.columns)]
        lines += [",".join(repr(v) for v in row) for row in table.rows]
        Path(path).write_text("\n".join(lines) + "\n")

    @staticmethod
    def read(path):
        with open(path) as f:
            columns, *rows = csv.reader(f)
        return Table(columns, [tuple(_number(cell) for cell in row) for row in rows])


class Text:
    @staticmethod
    def write(path, value):
        Path(path).write_text(value)

    @staticmethod
    def read(path):
        return Path(path).read_text()


@dataclass
class NameList:
    words: list  # one name a line, each checked
    sha256: str  # of the file's bytes


class Names:
    """names.txt, read as its names (a bad byte or character named with its line)."""

    @staticmethod
    def read(path):
        raw = Path(path).read_bytes()
        return NameList(read_words(raw.decode(errors="replace"), str(path)), sha256_of(raw))


class Yaml:
    """A YAML 1.2 file, read as DVC reads it."""

    @staticmethod
    def read(path):
        return load_yaml(Path(path).read_text())


class Tree:
    """A folder of the stages' JSON and CSV files, read as {path inside it: value}."""

    @staticmethod
    def read(path):
        found = {}
        for file in sorted(Path(path).rglob("*")):
            kind = {".json": Json, ".csv": Csv}.get(file.suffix)
            if kind and file.is_file():
                found[file.relative_to(path).as_posix()] = kind.read(file)
        return found


class Link:
    """A path the stage names in what it writes (a link in the report), not read."""

    @staticmethod
    def read(path):
        return str(path)


class Png:
    """A figure, drawn by the library as PNG bytes."""

    @staticmethod
    def write(path, value):
        Path(path).write_bytes(value)

    @staticmethod
    def read(path):
        return Path(path).read_bytes()


class Ipynb:
    """A Jupyter notebook (nbformat 4), read as its node and written as nbformat writes it
    (sorted keys, one space of indent) with a final newline: the same node gives the same bytes.
    nbformat is imported only by the stages that read or write one."""

    @staticmethod
    def write(path, value):
        import nbformat

        Path(path).write_text(nbformat.writes(value) + "\n")

    @staticmethod
    def read(path):
        import nbformat

        return nbformat.read(path, as_version=4)


class Tensors:
    """A dict of plain tensors, read back with torch.load(..., weights_only=True): no pickle."""

    @staticmethod
    def write(path, value):
        torch.save(value, path)

    @staticmethod
    def read(path):
        return torch.load(path, weights_only=True)


class Split:
    """The split stage's folder: {train, val, test: (X, Y)} and the vocabulary."""

    NAMES = ("train", "val", "test")

    @staticmethod
    def write(path, value):
        Path(path).mkdir()
        for name in Split.NAMES:
            X, Y = value[name]
            torch.save({"X": X, "Y": Y}, Path(path) / f"{name}.pt")
        (Path(path) / "vocab.json").write_text(json.dumps({"chars": value["vocab"].chars}) + "\n")

    @staticmethod
    def read(path):
        split = {}
        for name in Split.NAMES:
            data = torch.load(Path(path) / f"{name}.pt", weights_only=True)
            split[name] = data["X"], data["Y"]
        split["vocab"] = Vocab(json.loads((Path(path) / "vocab.json").read_text())["chars"])
        return split


def md5_of(path):
    """The md5 of a file's bytes, as dvc.lock records it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


# --- writing them together ---------------------------------------------------------------------


class Outputs:
    """A stage's outputs, staged in hidden temporary folders beside their final places."""

    def __init__(self):
        self.staged = {}  # final path: its temporary path
        self.previous = {}  # final path: the file it replaced, kept until the stage ends
        self.committed = []

    def path(self, final):
        """A temporary path to write `final` to; it is renamed to `final` on commit."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        self.staged[final] = folder / final.name
        return self.staged[final]

    def commit(self):
        """Rename every staged file into place, keeping each file it replaces beside it."""
        for final, tmp in self.staged.items():
            if final.exists():
                self.previous[final] = tmp.with_name(f"{final.name}.previous")
                os.replace(final, self.previous[final])
            os.replace(tmp, final)
            self.committed.append(final)

    def restore(self):
        """Put back what the stage replaced, and remove what it added."""
        for final in self.committed:
            shutil.rmtree(final) if final.is_dir() else final.unlink(missing_ok=True)
            if final in self.previous:
                os.replace(self.previous[final], final)

    def clean(self):
        for tmp in self.staged.values():
            shutil.rmtree(tmp.parent, ignore_errors=True)


def stale_staging(paths):
    """The staging folders that a killed stage left beside `paths` (a signal it could not
    catch, such as the kernel's out-of-memory SIGKILL)."""
    return [p for final in map(Path, paths) for p in final.parent.glob(f".{final.name}.*")]


@contextmanager
def writing():
    """Outputs to stage; committed when the block ends unless it committed them itself. On an
    error (or Ctrl-C) every file is as it was before the block: nothing staged stays, and what
    was committed is replaced by what it replaced."""
    outputs = Outputs()
    try:
        yield outputs
        if not outputs.committed:
            outputs.commit()
    except BaseException:
        outputs.restore()
        raise
    finally:
        outputs.clean()
