"""The docs show what the program prints: every `<!-- make docs: COMMAND -->` block of docs/
is COMMAND's output, run again here on the study's outputs and models (`make repro` made them;
CI runs the tests after `make repro-all`). `make docs` rewrites the blocks."""

import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.tools.render import blocks, output_of

pytestmark = pytest.mark.slow  # the study's models and MLflow store

SHOWN = [
    (page.name, command, shown)
    for page in sorted((ROOT / "docs").glob("*.md"))
    for command, shown in blocks(page.read_text(), "docs")
]


def test_the_docs_show_commands_output():
    assert len(SHOWN) >= 5, "docs/models.md and docs/mlflow.md show commands and their output"


@pytest.mark.parametrize("page, command, shown", SHOWN, ids=[f"{p}: {c}" for p, c, _ in SHOWN])
def test_each_shown_output_is_the_commands(page, command, shown, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert output_of(command) == shown, f"{page}: `make docs` writes the output again"
