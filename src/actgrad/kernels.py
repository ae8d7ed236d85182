"""The CPU kernels the study computes with: pinned, so that the same params give the same bits
whatever the number of cores, and on every Intel CPU with AVX2 (on other CPUs MKL ignores its
AVX2 branch and takes its own path: docs/determinism.md).

MKL's conditional numerical reproducibility takes its AVX2 code path in strict mode (MKL_CBWR;
without STRICT, that path rounds some of a matmul's 200 columns unlike the others, and the
units of constant init, computed alike, drift apart), ATen's vectorised kernels their AVX2
versions (ATEN_CPU_CAPABILITY), and torch one thread (OMP_NUM_THREADS: a reduction split over
threads rounds with their number). They must be set before torch starts, so `import actgrad`
sets them: every stage, and every Dask worker that trains for one, imports actgrad before
torch. A switch already set in the environment wins; a CPU without AVX2 keeps its own kernels.
`fingerprint()` is what decides the last bits of an output; metrics/machine.json records it.
"""

import hashlib
import os
import platform
import re
from pathlib import Path

SWITCHES = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
VECTOR_FLAGS = ("avx", "fma", "sse", "amx")  # the CPU flags that choose a kernel's code path


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo, or {} where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return {}
    first = cpuinfo.read_text().split("\n\n")[0]
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())
    }


def has_avx2():
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and "avx2" in _cpuinfo().get("flags", "").split()
    )


def pin():
    """Set each switch that the environment leaves unset (on a CPU without AVX2, the threads
    only)."""
    for name, value in SWITCHES.items():
        if name == "OMP_NUM_THREADS" or has_avx2():
            os.environ.setdefault(name, value)


def switches():
    """The kernel switches this process runs with."""
    return {name: os.environ.get(name, "unset") for name in SWITCHES}


def active():
    """The kernels this process computes with: its switches, and what torch made of them (a
    switch set after torch started has no effect)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return switches() | {"torch_cpu_capability": capability, "threads": torch.get_num_threads()}


def cpu_id():
    """The CPU's family, model and stepping, and a hash of its vector-instruction flags: a
    virtual machine's model name may be the same for several CPUs."""
    fields = _cpuinfo()
    if not fields:
        return platform.processor()
    vector = sorted(f for f in fields.get("flags", "").split() if f.startswith(VECTOR_FLAGS))
    flags = hashlib.sha256(" ".join(vector).encode()).hexdigest()[:12]
    ids = " ".join(f"{k} {fields.get(k, '?')}" for k in ("cpu family", "model", "stepping"))
    return f"{ids}, vector flags {flags}"


def fingerprint():
    """What decides the last bits of this process's outputs: the CPU, the vector ISA torch's
    kernels dispatch to, the math libraries, Python and the kernel switches."""
    import torch

    config = torch.__config__.show()

    def version(pattern):
        found = re.search(pattern, config)
        return found.group(1) if found else "absent"

    return {
        "cpu": _cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "cpu_id": cpu_id(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "mkl": version(r"Math Kernel Library Version (\S+)"),
        "onednn": version(r"MKL-DNN v(\S+)"),
        "python": platform.python_version(),
        **switches(),
    }
