"""The CPU kernels the study computes with: pinned, so that the same params give the same bits
whatever the number of cores, and on every Intel CPU with AVX2 (on other CPUs MKL ignores its
AVX2 branch and takes its own path: docs/determinism.md).

MKL's conditional numerical reproducibility takes its AVX2 code path in strict mode (MKL_CBWR;
without STRICT, that path rounds some of a matmul's 200 columns unlike the others, and the
units of constant init, computed alike, drift apart), ATen's vectorised kernels their AVX2
versions (ATEN_CPU_CAPABILITY), and torch one thread (OMP_NUM_THREADS: a reduction split over
threads rounds with their number). They must be set
before torch starts, so `import actgrad` sets them, and every stage imports actgrad before
torch (pipeline/__init__.py). A switch already set in the environment wins; a CPU without AVX2
keeps its own kernels (metrics/machine.json records what a run used).
"""

import os
import platform
from pathlib import Path

SWITCHES = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}


def has_avx2():
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine().lower() not in ("x86_64", "amd64") or not cpuinfo.is_file():
        return False
    return " avx2 " in f" {cpuinfo.read_text().split('flags', 1)[-1].splitlines()[0]} "


def pin():
    """Set each switch that the environment leaves unset (on a CPU without AVX2, the threads
    only)."""
    for name, value in SWITCHES.items():
        if name == "OMP_NUM_THREADS" or has_avx2():
            os.environ.setdefault(name, value)
