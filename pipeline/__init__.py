"""The DVC stages and the tools around them. Every stage imports actgrad before torch, which
pins the CPU kernels (actgrad/kernels.py)."""

import actgrad  # noqa: F401
