"""Put the real output of each command that a docs page shows into the page: `make docs` for
the `<!-- make docs: COMMAND -->` blocks of every page (cheap: they read the study's outputs and
models), `make bench` for the `<!-- make bench: COMMAND -->` blocks of docs/speed.md (minutes).

Each marker line is followed by COMMAND's output, in a fenced block, up to the next
`<!-- end -->`; the rest of the page stays as written. COMMAND runs in bash, in the project's
folder. tests/test_docs.py reruns the `make docs` blocks and compares.

    python -m pipeline.tools.render docs docs/*.md
    python -m pipeline.tools.render bench docs/speed.md
"""

import re
import subprocess
import sys
from pathlib import Path


def marked(kind):
    return re.compile(rf"(<!-- make {kind}: (.+?) -->\n)(.*?)(<!-- end -->)", re.S)


def output_of(command):
    """What `command` prints, both streams, as a reader sees it in a terminal."""
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    if done.returncode and not command.endswith("|| true"):
        sys.exit(f"Error: `{command}` exited {done.returncode}: {done.stderr.strip()[-300:]}")
    out = done.stdout + done.stderr
    return out if out.endswith("\n") or not out else out + "\n"


def blocks(text, kind):
    """[(command, the output the page shows)] of a page's `kind` markers."""
    found = []
    for match in marked(kind).finditer(text):
        shown = match.group(3).removeprefix("```\n").removesuffix("```\n")
        found.append((match.group(2), shown.split("\n", 1)[1] if "\n" in shown else ""))
    return found


def render(page, kind):
    def output(match):
        command = match.group(2)
        print(f"$ {command}", flush=True)
        out = output_of(command)
        print(out, end="", flush=True)
        return f"{match.group(1)}```\n$ {command}\n{out}```\n{match.group(4)}"

    page.write_text(marked(kind).sub(output, page.read_text()))


if __name__ == "__main__":
    kind, *pages = sys.argv[1:]
    for page in pages:
        render(Path(page), kind)
