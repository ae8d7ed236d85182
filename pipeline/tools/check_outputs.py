"""`make check-outputs`: the outputs of the last repro against the committed ones.

Where every machine that made the committed outputs and the ones of the last repro
(metrics/machine.json: each stage's process and the Dask workers that trained for it) is this
machine, every output must be bit-identical. Anywhere else the
numbers may differ in their last bits, so every number of metrics/ and reports/ (JSON, CSV,
the report's text, the text outputs of the executed notebook) is compared with the committed
one within tolerance.yaml's tolerance, and
everything else must be equal: the words, the file lists, the figures' presence, and dvc.lock's
stages, commands, params and the hashes of its source files. Prints which mode
ran, how many values it compared and the five largest deviations; exits 1 on any difference.

    python -m pipeline.tools.check_outputs [--base HEAD] [--mode auto|bits|values]
"""

import base64
import csv
import io
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from actgrad.params import load_yaml

from .. import machines

OUTPUTS = ("metrics", "reports", "dvc.lock")
MACHINE = str(machines.MACHINES)  # which machines made them: compared by the mode, not by value
NUMBER = re.compile(r"([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")


@dataclass
class Tolerance:
    abs: float
    rel: float
    match: re.Pattern | None = None  # the numbers it applies to, by where they are

    def allowed(self, committed, unit=0.0):
        """How far a number may be from `committed`; `unit` is one unit of the last digit a
        text printed, the most that rounding alone can move a printed number."""
        return self.abs + self.rel * abs(committed) + unit


def tolerances(spec):
    """[Tolerance] of tolerance.yaml: its wider ones in order, the default last."""
    wider = [Tolerance(w["abs"], w["rel"], re.compile(w["match"])) for w in spec["wider"]]
    return [*wider, Tolerance(spec["default"]["abs"], spec["default"]["rel"])]


@dataclass
class Comparison:
    tolerances: list  # the first whose match finds a number's place applies to it
    compared: int = 0
    deviations: list = field(default_factory=list)  # (|Δ| / allowed, |Δ|, where, ours, committed)
    problems: list = field(default_factory=list)

    def tolerance(self, where):
        return next(t for t in self.tolerances if t.match is None or t.match.search(where))

    def number(self, where, committed, ours, unit=0.0):
        """`where` says where the number is: the file, then its key, or its line, the first
        cell of its table row and its column."""
        self.compared += 1
        if _missing(committed) or _missing(ours) or math.isinf(committed) or math.isinf(ours):
            if not (_missing(committed) and _missing(ours)) and committed != ours:
                self.problems.append(f"{where}: {ours!r}, committed {committed!r}")
            return
        delta, allowed = abs(ours - committed), self.tolerance(where).allowed(committed, unit)
        if delta:
            self.deviations.append(
                (delta / allowed if allowed else math.inf, delta, where, ours, committed)
            )
        if delta > allowed:
            self.problems.append(f"{where}: {ours!r}, committed {committed!r} (beyond tolerance)")

    def equal(self, where, committed, ours):
        if committed != ours:
            self.problems.append(f"{where}: {_short(ours)}, committed {_short(committed)}")


def _missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the kinds of files -----------------------------------------------------------------------


def compare_json(c, where, committed, ours):
    if _is_number(committed) and _is_number(ours):
        c.number(where, committed, ours)
    elif isinstance(committed, dict) and isinstance(ours, dict):
        c.equal(f"{where} keys", sorted(committed), sorted(ours))
        for key in committed.keys() & ours.keys():
            compare_json(c, f"{where}.{key}", committed[key], ours[key])
    elif isinstance(committed, list) and isinstance(ours, list) and len(committed) == len(ours):
        for i, (a, b) in enumerate(zip(committed, ours)):
            compare_json(c, f"{where}[{i}]", a, b)
    elif committed is None and _is_number(ours) or ours is None and _is_number(committed):
        c.number(where, committed, ours)
    else:
        c.equal(where, committed, ours)


def as_number(text):
    try:
        return float(text)
    except ValueError:
        return None


def compare_csv(c, where, committed, ours):
    old, new = list(csv.reader(io.StringIO(committed))), list(csv.reader(io.StringIO(ours)))
    c.equal(f"{where} header", old[:1], new[:1])
    c.equal(f"{where} rows", len(old), len(new))
    for i, (a, b) in enumerate(zip(old[1:], new[1:]), start=2):
        row = f"{where}:{i} {a[0]}"
        for column, x, y in zip(old[0], a, b):
            if as_number(x) is not None and as_number(y) is not None:
                c.number(f"{row} {column}", as_number(x), as_number(y))
            else:
                c.equal(f"{row} {column}", x, y)


def unit_of(token):
    """One unit of the last digit printed in `token` ("2.1070": 1e-4, "1.2e-06": 1e-7)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def words(text):
    """Text with its whitespace and markdown tables' padding collapsed."""
    return re.sub(r"-{3,}", "---", " ".join(text.split()))


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def compare_text(c, where, committed, ours):
    """Line by line: the words equal, each number within tolerance of the committed one, after
    the rounding of its last printed digit. A number in a markdown table is placed by its
    row's first cell and its column, one in prose by the last `name` before it."""
    old, new = committed.splitlines(), ours.splitlines()
    c.equal(f"{where} lines", len(old), len(new))
    header = []
    for i, (a, b) in enumerate(zip(old, new), start=1):
        if not a.startswith("|"):
            header = []
        elif not header:
            header = cells(a)
        x, y = NUMBER.split(a), NUMBER.split(b)
        if len(x) != len(y):
            c.equal(f"{where}:{i}", a, b)
            continue
        c.equal(f"{where}:{i}", [words(t) for t in x[::2]], [words(t) for t in y[::2]])
        row = cells(a) if header and a.startswith("|") and not set(a) <= set("|:- ") else None
        for k, (m, n) in enumerate(zip(x[1::2], y[1::2])):
            before = "".join(x[: 2 * k + 1])
            if row:
                column = before.count("|") - 1
                place = f"{where}:{i} {row[0]} | {header[min(column, len(header) - 1)]}"
            else:  # in prose, a number is about the last `name` before it
                names = re.findall(r"`([^`]+)`", before)
                place = f"{where}:{i} {names[-1] if names else ''}".rstrip()
            c.number(place, float(m), float(n), unit=unit_of(m))


def compare_samples(c, where, committed, ours):
    """Sampled names: equal, but where a wider tolerance applies (a chaotic variant, whose
    model differs enough to draw other names), only as many names, each of a-z."""
    if c.tolerance(where).match is None:
        c.equal(where, committed, ours)
        return
    names = ours.splitlines()
    c.equal(f"{where} names", len(committed.splitlines()), len(names))
    c.equal(f"{where} letters", True, all(re.fullmatch(r"[a-z]*", n) for n in names))


def _text(value):
    """A notebook's multiline string, which nbformat may store as a list of lines."""
    return "".join(value) if isinstance(value, list) else value


def _is_png(data):
    """Whether base64 `data` starts as a PNG file does."""
    try:
        return base64.b64decode(data[:12])[:8] == b"\x89PNG\r\n\x1a\n"
    except ValueError:  # binascii.Error
        return False


def _shape(output):
    """What kind of output a notebook's output is: its type, stream and MIME types."""
    return (output["output_type"], output.get("name"), sorted(output.get("data", {})))


def chaotic_rows_as_committed(c, where, committed, ours):
    """`ours` with each markdown table row of a chaotic variant or config (one whose tolerance
    allows any value: on another CPU its numbers, its sampled names, its words may all differ)
    replaced by the committed row when the two have the same first cell and as many cells: such
    a row is compared by its shape, as compare_samples compares its names."""
    old, new = committed.splitlines(), ours.splitlines()
    for i, (a, b) in enumerate(zip(old, new)):
        if not (a.startswith("|") and b.startswith("|")):
            continue
        first, row = cells(a), cells(b)
        place = f"{where}:{i + 1} {first[0]} |"
        if first[0] == row[0] and len(first) == len(row) and c.tolerance(place).abs == math.inf:
            new[i] = a
    return "\n".join(new)


def compare_ipynb(c, where, committed, ours):
    """An executed notebook (reports/tour.ipynb): its metadata, cells, sources and the kinds of
    their outputs equal; each text output (a stream, markdown, plain text) compared as the
    report's text is, its numbers within tolerance, placed by `cell <n>` and their table row
    or the last `name` before them; each figure by its presence, a PNG."""
    old, new = json.loads(committed), json.loads(ours)
    c.equal(f"{where} metadata", old.get("metadata"), new.get("metadata"))
    c.equal(f"{where} cells", len(old["cells"]), len(new["cells"]))
    for i, (a, b) in enumerate(zip(old["cells"], new["cells"]), start=1):
        cell = f"{where} cell {i}"
        c.equal(f"{cell} source", _text(a.get("source")), _text(b.get("source")))
        for key in ("cell_type", "metadata", "execution_count"):
            c.equal(f"{cell} {key}", a.get(key), b.get(key))
        outputs = a.get("outputs", []), b.get("outputs", [])
        shapes = [[_shape(o) for o in side] for side in outputs]
        c.equal(f"{cell} outputs", *shapes)
        if shapes[0] != shapes[1]:
            continue
        for x, y in zip(*outputs):
            if x["output_type"] == "stream":
                pairs = [(x["name"], _text(x["text"]), _text(y["text"]))]
            else:
                pairs = [(m, _text(x["data"][m]), _text(y["data"][m])) for m in x.get("data", {})]
            for mime, old_text, new_text in pairs:
                if mime == "image/png":
                    c.equal(f"{cell} {mime}", True, _is_png(new_text))
                elif mime.startswith("image/"):
                    c.equal(f"{cell} {mime}", True, bool(new_text))
                else:
                    new_text = chaotic_rows_as_committed(c, cell, old_text, new_text)
                    compare_text(c, cell, old_text, new_text)


def compare_lock(c, where, committed, ours):
    """Stages, commands, params and out paths equal; outputs, and folders of them, compared as
    files, not by hash. The deps are lock_changes' business."""
    old, new = load_yaml(committed)["stages"], load_yaml(ours)["stages"]
    c.equal(f"{where} stages", sorted(old), sorted(new))
    for stage in old.keys() & new.keys():
        a, b = old[stage], new[stage]
        c.equal(f"{where} {stage} cmd", a["cmd"], b["cmd"])
        c.equal(f"{where} {stage} params", a.get("params"), b.get("params"))
        paths = [[d["path"] for d in e.get("outs", [])] for e in (a, b)]
        c.equal(f"{where} {stage} outs", *paths)


def lock_changes(committed, ours):
    """(what differs in dvc.lock's stages, commands, params and outs, {source dep: [stages]}):
    a source dep (a file or folder that holds nothing a stage writes) moves with any edit of the
    code, an edit that may leave every output as it was."""
    old, new = (load_yaml(text or "stages: {}")["stages"] for text in (committed, ours))
    written = {o["path"] for entry in old.values() for o in entry.get("outs", [])}
    differ = [
        f"stage {stage} is {'gone' if stage in old else 'new'}" for stage in old.keys() ^ new.keys()
    ]
    moved = {}
    for stage in sorted(old.keys() & new.keys()):
        a, b = old[stage], new[stage]
        differ += [
            f"{stage} {key}" for key in ("cmd", "params", "outs") if a.get(key) != b.get(key)
        ]
        deps = [{d["path"]: d.get("md5") for d in e.get("deps", [])} for e in (a, b)]
        for path in deps[0].keys() | deps[1].keys():
            if deps[0].get(path) == deps[1].get(path):
                continue
            if any(inside(path, w) or inside(w, path) for w in written):
                differ.append(f"{stage} dep {path}")
            else:
                moved.setdefault(path, []).append(stage)
    return sorted(differ), moved


def inside(path, folder):
    """Whether `path` is `folder` or lies in it."""
    return f"{path}/".startswith(f"{folder}/")


def say_moved(moved, base):
    """Print the source deps whose hashes moved, and whether that fails: against HEAD it does,
    since the committed dvc.lock no longer describes the code; against an older commit a change
    of the code is what is being checked."""
    if not moved:
        return False
    deps = ", ".join(
        f"{path} ({len(stages)} stage{'s' * (len(stages) > 1)})"
        for path, stages in sorted(moved.items())
    )
    print(f"dvc.lock: the hashes of source deps moved: {deps}")
    at_head = git("rev-parse", base) == git("rev-parse", "HEAD")
    if at_head:
        print(f"{base}'s dvc.lock has the old hashes: commit the new dvc.lock", file=sys.stderr)
    else:
        print(f"  the code changed since {base}; its outputs are compared above")
    return at_head


# --- the two modes ----------------------------------------------------------------------------


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def committed_text(base, path):
    out = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def tracked_outputs(base):
    files = git("ls-tree", "-r", "--name-only", base, "--", *OUTPUTS).split()
    return sorted(f for f in files if f != MACHINE)


def workspace_outputs():
    files = git("ls-files", "--cached", "--others", "--exclude-standard", "--", *OUTPUTS).split()
    return sorted(f for f in files if f != MACHINE and Path(f).exists())


def changed_outputs(base):
    """The output files that are not `base`'s, bit for bit: changed, deleted or new."""
    paths = ("--", *OUTPUTS, f":!{MACHINE}")
    changed = git("diff", "--name-status", base, *paths).splitlines()
    new = git("ls-files", "--others", "--exclude-standard", *paths).split()
    return sorted([f"  {' '.join(line.split())}" for line in changed] + [f"  A {f}" for f in new])


def compare_values(base, spec):
    c = Comparison(tolerances(spec))
    committed, ours = tracked_outputs(base), workspace_outputs()
    for missing in sorted(set(committed) - set(ours)):
        c.problems.append(f"the output files: {missing} is missing")
    for new in sorted(set(ours) - set(committed)):
        c.problems.append(f"the output files: {new} is new")
    for path in sorted(set(committed) & set(ours)):
        if path.endswith(".png"):
            c.equal(path, True, Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")
            continue
        old, new = committed_text(base, path), Path(path).read_text()
        if path == "dvc.lock":
            compare_lock(c, path, old, new)
        elif path.endswith(".json"):
            compare_json(c, path, json.loads(old), json.loads(new))
        elif path.endswith(".ipynb"):
            compare_ipynb(c, path, old, new)
        elif path.endswith(".csv"):
            compare_csv(c, path, old, new)
        elif path.startswith("reports/samples/"):
            compare_samples(c, path, old, new)
        else:
            compare_text(c, path, old, new)
    return c


def same_machine(base):
    """(every machine of the committed outputs and of the workspace's is this one, the
    committed machines)."""
    from actgrad.kernels import fingerprint

    text = committed_text(base, MACHINE)
    committed = list(json.loads(text)["machines"].values()) if text else []
    ours = list(machines.read()["machines"].values())
    here = fingerprint()
    return bool(committed) and all(m == here for m in committed + ours), committed


def report(c, mode):
    print(f"{mode}: {c.compared:,} values compared", end="")
    c.deviations.sort(reverse=True)
    if c.deviations:
        print(f", {len(c.deviations):,} differ; the largest, against what the tolerance allows:")
        for share, delta, where, ours, committed in c.deviations[:5]:
            print(f"  {delta:.3g} ({share:.0%} of allowed)  {where}: {ours!r} vs {committed!r}")
    else:
        print(", all equal")


@click.command()
@click.option("--base", default="HEAD", show_default=True, help="the commit to compare with")
@click.option(
    "--mode",
    type=click.Choice(["auto", "bits", "values"]),
    default="auto",
    show_default=True,
    help="auto: bits on the machine that made the committed outputs, values elsewhere",
)
@click.option("--tolerance", default="tolerance.yaml", show_default=True)
def main(base, mode, tolerance):
    same, committed = same_machine(base)
    if mode == "auto":
        mode = "bits" if same else "values"
        print(f"committed outputs made on: {committed or 'unrecorded machines'}")
        print(f"this machine is {'the same' if same else 'another'}: comparing {mode}")
    lock = lock_changes(committed_text(base, "dvc.lock"), Path("dvc.lock").read_text())
    if mode == "bits":
        changed = changed_outputs(base)
        if not lock[0]:  # dvc.lock differs at most in its source deps: said below
            changed = [line for line in changed if line != "  M dvc.lock"]
        print(f"bit mode: {len(tracked_outputs(base))} files compared, {len(changed)} differ")
        for line in changed + [f"  dvc.lock: {what}" for what in lock[0]]:
            print(line)
        if say_moved(lock[1], base) or changed:
            sys.exit(1)
        same = "metrics, reports and the rest of dvc.lock" if lock[1] else " ".join(OUTPUTS)
        print(f"the outputs ({same}) are {base}'s, bit for bit")
        return
    c = compare_values(base, load_yaml(Path(tolerance).read_text()))
    report(c, "value mode")
    moved = say_moved(lock[1], base)
    if c.problems:
        print(f"{len(c.problems)} differences beyond tolerance:", file=sys.stderr)
        print("\n".join(f"  {p}" for p in c.problems[:50]), file=sys.stderr)
    if c.problems or moved:
        sys.exit(1)
    print("the outputs agree with the committed ones within tolerance.yaml")


if __name__ == "__main__":
    main()
