"""The GitHub Actions workflow: actionlint and zizmor pass on it and fail on broken copies, each
`run:` step calls a make target or a command that exists, and .ci/run, the workflow and the
README's CI section name the same make targets."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
BIN = Path(sys.executable).parent
# commands that an action installs for the later steps of its job: the name, the action
INSTALLED_BY = {"cml": "iterative/setup-cml"}
SEPARATORS = {"&&", "||", ";", "|", "(", ")", "{", "}", "!"}


def actionlint(path):
    return run([BIN / "actionlint", "-oneline", path], cwd=path.parent, check=False)


def zizmor(path):
    return run([BIN / "zizmor", "--offline", "--no-progress", path], cwd=path.parent, check=False)


def simple_commands(script):
    """The words of each simple command in a script of one-line commands joined by && || ; |."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        command = []
        for word in [*lexer, ";"]:
            if word not in SEPARATORS:
                command.append(word)
            elif command:
                yield command
                command = []


def command_and_args(words):
    """The command word and its arguments, without leading VAR=value assignments, nor the
    `phase` that .ci/run times a command with."""
    while words and ("=" in words[0] or words[0] == "phase"):
        words = words[1:]
    return words[0] if words else None, words[1:]


def targets(make_args):
    return [arg for arg in make_args if not arg.startswith("-") and "=" not in arg]


def make_targets(script):
    commands = map(command_and_args, simple_commands(script))
    return [target for command, args in commands if command == "make" for target in targets(args)]


def is_make_target(target):
    return run(["make", "-n", target], cwd=ROOT, check=False).returncode == 0


def on_runner_path(command):
    """A shell builtin or an executable on PATH, virtual environments left out (this project's
    and any other one activated in the shell): a runner has none."""
    entries = os.environ["PATH"].split(os.pathsep)
    path = os.pathsep.join(p for p in entries if p and not Path(p, "..", "pyvenv.cfg").exists())
    out = subprocess.run(
        ["bash", "-c", 'type -t "$1"', "_", command],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() != ""


def missing_commands(workflow):
    """Each command of each `run:` step that is no make target, not installed by an earlier step
    of its job and not on this machine's PATH."""
    missing = []
    for job_name, job in workflow["jobs"].items():
        actions_before = set()
        for step in job["steps"]:
            for command, args in map(command_and_args, simple_commands(step.get("run", ""))):
                if command == "make":
                    found = all(map(is_make_target, targets(args)))
                elif command in INSTALLED_BY:
                    found = INSTALLED_BY[command] in actions_before
                else:
                    found = on_runner_path(command)
                if not found:
                    missing.append(f"{job_name}: {shlex.join([command, *args])}")
            actions_before.add(step.get("uses", "").split("@")[0])
    return missing


def test_actionlint_passes_on_the_workflow():
    out = actionlint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr


def test_zizmor_finds_nothing_in_the_workflow():
    out = zizmor(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No findings to report" in out.stdout


def test_each_run_step_calls_a_make_target_or_a_command_that_exists():
    assert missing_commands(yaml.safe_load(WORKFLOW.read_text())) == []


SETUP_CML_PIN = "iterative/setup-cml@f12ea7685438c1fc438d50f77519b3860cf5fa98"
SETUP_CML = f"""\
      - uses: {SETUP_CML_PIN} # v2.0.1
        with:
          version: v0.20.6
          vega: false
"""


@pytest.mark.parametrize(
    "old, new, check, expected",
    [
        ("needs: reproduce", "needs: reproduc", "actionlint", "reproduc"),
        ("run: make test", "rnu: make test", "actionlint", 'must run script with "run"'),
        ("id: repro\n", "id: reproduce\n", "actionlint", '"repro" is not defined'),
        (SETUP_CML_PIN, "iterative/setup-cml@v2", "zizmor", "unpinned"),
        ("origin/$BASE_REF", "origin/${{ github.head_ref }}", "zizmor", "template-injection"),
        ("run: make check-outputs", "run: make check-ouputs", "run steps", "make check-ouputs"),
        ("run: make data", "run: dvc repro download", "run steps", "reproduce: dvc repro"),
        (SETUP_CML, "", "run steps", "comment: cml comment update"),
    ],
    ids=[
        "misspelt needs",
        "misspelt step key",
        "renamed step id",
        "unpinned action",
        "untrusted input in a script",
        "unknown make target",
        "a venv tool outside make",
        "cml without setup-cml",
    ],
)
def test_a_broken_workflow_fails_the_check(tmp_path, old, new, check, expected):
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"the workflow no longer holds {old!r} once"
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new))
    if check == "run steps":
        report = "\n".join(missing_commands(yaml.safe_load(broken.read_text())))
    else:
        out = actionlint(broken) if check == "actionlint" else zizmor(broken)
        assert out.returncode != 0
        report = out.stdout + out.stderr
    assert expected in report, report


def test_ci_run_the_workflow_and_the_readme_name_the_same_make_targets():
    ci_run = make_targets((ROOT / ".ci" / "run").read_text())
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]
    workflow = make_targets("\n".join(step.get("run", "") for step in steps))
    assert ci_run == [t for t in workflow if t not in ("data", "pr-comment")]
    docs = (ROOT / "docs" / "ci.md").read_text()
    assert [t for t in workflow if not re.search(rf"`make {t}(?![\w-])", docs)] == []
