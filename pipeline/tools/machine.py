"""The machine that made the outputs: what decides their last bits.

`python -m pipeline.tools.machine FILE` writes this machine's fingerprint to FILE (repro.py
does, to metrics/machine.json, after a run); `make check-outputs` demands bit-identical outputs
only on a machine with the committed fingerprint.
"""

import hashlib
import json
import os
import platform
import re
import sys
from pathlib import Path

import torch

from actgrad.kernels import SWITCHES

from ..files import writing


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def cpu_id():
    """The CPU's family, model and stepping, and a hash of its feature flags: a virtual
    machine's model name may be the same for several CPUs."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor()
    first = cpuinfo.read_text().split("\n\n")[0]
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in first.splitlines())
    )
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode())
    ids = " ".join(f"{k} {fields.get(k, '?')}" for k in ("cpu family", "model", "stepping"))
    return f"{ids}, flags {flags.hexdigest()[:12]}"


def fingerprint():
    """The CPU, the vector ISA torch's kernels dispatch to, the math libraries and Python, and
    the kernel switches of the environment."""
    config = torch.__config__.show()

    def version(pattern):
        found = re.search(pattern, config)
        return found.group(1) if found else "absent"

    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "mkl": version(r"Math Kernel Library Version (\S+)"),
        "onednn": version(r"MKL-DNN v(\S+)"),
        "python": platform.python_version(),
        **{name: os.environ.get(name, "unset") for name in SWITCHES},
    }


def main(path):
    with writing() as out:
        out.path(path).write_text(json.dumps(fingerprint(), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
