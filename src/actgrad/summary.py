"""Mean and spread over seeds (kept free of heavy imports: every train stage loads it)."""

import statistics


def seed_summary(per_seed):
    """{"mean": {key: mean}, "sd": {key: sample sd}} over the seeds of each key's list."""
    return {
        "mean": {k: statistics.fmean(v) for k, v in per_seed.items()},
        "sd": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in per_seed.items()},
    }
