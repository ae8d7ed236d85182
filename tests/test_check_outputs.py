"""`make check-outputs` on a reproduced project: bits on the machine that made the committed
outputs, values within tolerance.yaml elsewhere, and a failure beyond it."""

import json
import re
import subprocess
import sys

import pytest
from conftest import commit, copy_project, run

pytestmark = pytest.mark.slow

CHECK = [sys.executable, "-m", "pipeline.tools.check_outputs"]


def check(path, env, *args):
    return subprocess.run([*CHECK, *args], cwd=path, env=env, capture_output=True, text=True)


def perturb(path, file, key, delta):
    """Add `delta` to the number at `key` (dotted) of a metrics JSON; the old value."""
    metrics = json.loads((path / file).read_text())
    *parents, name = key.split(".")
    node = metrics
    for part in parents:
        node = node[part]
    old = node[name]
    node[name] = old + delta
    (path / file).write_text(json.dumps(metrics, indent=2) + "\n")
    return old


def as_if_made_elsewhere(path, env):
    """Commit machine fingerprints that are not this machine's."""
    machine = path / "metrics/machine.json"
    recorded = json.loads(machine.read_text())
    for fingerprint in recorded["machines"].values():
        fingerprint["cpu"] = "another CPU"
    machine.write_text(json.dumps(recorded, indent=2) + "\n")
    commit(path, "made elsewhere")


def test_on_the_machine_that_made_the_outputs_it_demands_their_bits(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    out = check(path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "this machine is the same: comparing bits" in out.stdout
    assert re.search(r"bit mode: \d+ files compared, 0 differ", out.stdout)

    perturb(path, "metrics/kaiming.json", "val_loss", 1e-9)  # within any tolerance, not a bit
    out = check(path, env)
    assert out.returncode == 1
    assert " M metrics/kaiming.json" in out.stdout


def test_it_tells_moved_source_deps_from_changed_outputs(reproduced, tmp_path):
    """An edit of the code that leaves every output as it was moves dvc.lock's hashes of its
    source deps, no output: that fails against HEAD until dvc.lock is committed, and passes
    against the commit before the edit; an output hash that moves is an output that changed."""
    path, env = copy_project(reproduced, tmp_path)
    stats = path / "src/actgrad/stats.py"
    stats.write_text(stats.read_text() + "# an edit that computes nothing new\n")
    run(["dvc", "commit", "-f", "report"], path, env)  # the lock as a rerun would write it
    out = check(path, env)
    assert out.returncode == 1
    assert re.search(r"bit mode: \d+ files compared, 0 differ", out.stdout)
    moved = re.search(r"dvc.lock: the hashes of source deps moved: (.*)", out.stdout)
    assert moved and moved.group(1) == "src/actgrad/stats.py (1 stage)", out.stdout
    assert "HEAD's dvc.lock has the old hashes: commit the new dvc.lock" in out.stderr

    commit(path, "an edit of the code")
    assert check(path, env).returncode == 0
    out = check(path, env, "--base", "HEAD~1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "src/actgrad/stats.py (1 stage)" in out.stdout
    assert "the code changed since HEAD~1" in out.stdout

    lock = path / "dvc.lock"
    outs = lock.read_text().split("outs:", 1)
    lock.write_text(outs[0] + "outs:" + re.sub(r"md5: \w", "md5: x", outs[1], count=1))
    out = check(path, env)
    assert out.returncode == 1
    assert re.search(r"bit mode: \d+ files compared, 1 differ", out.stdout)
    assert re.search(r"dvc.lock: \S+ outs", out.stdout)


def test_elsewhere_it_compares_values_and_fails_beyond_the_tolerance(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    as_if_made_elsewhere(path, env)
    out = check(path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "this machine is another: comparing values" in out.stdout
    assert re.search(r"value mode: [\d,]+ values compared, all equal", out.stdout)

    # within the default tolerance (1e-5 + 1e-4 relative): passes, and shows the deviation
    old = perturb(path, "metrics/kaiming.json", "seeds.1.val_loss", 2e-6)
    out = check(path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"value mode: [\d,]+ values compared, 1 differ", out.stdout)
    assert "metrics/kaiming.json.seeds.1.val_loss" in out.stdout

    # beyond it: fails naming the number; a chaotic variant's wider tolerance still holds
    perturb(path, "metrics/kaiming.json", "seeds.1.val_loss", 1e-3)
    perturb(path, "metrics/baseline.json", "seeds.1.val_loss", 1e-3)
    out = check(path, env)
    assert out.returncode == 1
    assert f"metrics/kaiming.json.seeds.1.val_loss: {old + 2e-6 + 1e-3!r}" in out.stderr
    assert "baseline" not in out.stderr


def test_elsewhere_words_file_lists_and_commands_must_match(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    as_if_made_elsewhere(path, env)
    report = path / "reports/comparison.md"
    report.write_text(report.read_text().replace("Beyond the lecture", "Beyond the lectures", 1))
    (path / "reports/samples/kaiming.txt").unlink()
    out = check(path, env)
    assert out.returncode == 1
    assert "reports/comparison.md" in out.stderr and "lectures" in out.stderr
    assert "the output files" in out.stderr and "reports/samples/kaiming.txt" in out.stderr


def test_ci_and_the_workflow_run_the_same_check():
    from conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\ncheck-outputs:", 1)[1].split("\n\n", 1)[0]
    assert "python -m pipeline.tools.check_outputs" in target
    assert "make check-outputs" in (ROOT / ".ci/run").read_text()
    assert "run: make check-outputs" in (ROOT / ".github/workflows/ci.yml").read_text()
    run(["make", "-n", "check-outputs"], ROOT)
