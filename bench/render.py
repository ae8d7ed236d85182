"""Run every bench a docs page names and put its output in the page: `make bench`.

Each `<!-- make bench: COMMAND -->` line of the page is followed by COMMAND's output, in a
fenced block, up to the next `<!-- end -->`; the rest of the page stays as written.

    python bench/render.py docs/speed.md
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

MARKED = re.compile(r"(<!-- make bench: (.+?) -->\n)(.*?)(<!-- end -->)", re.S)


def render(page):
    def output(match):
        command = match.group(2)
        print(f"$ {command}", flush=True)
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True)
        print(result.stdout, end="", flush=True)
        return f"{match.group(1)}```\n$ {command}\n{result.stdout}```\n{match.group(4)}"

    text = MARKED.sub(output, page.read_text())
    page.write_text(text)


if __name__ == "__main__":
    render(Path(sys.argv[1]))
