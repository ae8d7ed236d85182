"""What the MLP, the deep net and the report share: each metric over the seeds (the lecture
seed's value, every seed's, mean and sd), "mean ± sd" in words, and the block means of a series.

Free of heavy imports (the report loads it); the block means use Tensor methods only.
"""

import math
import statistics


def seed_table(per_seed, seeds):
    """A stage's metrics of {metric: [one value per seed]}: the lecture seed's (the first) value
    of each metric at the top, every seed's under "seeds", and their mean and sd."""
    table = {key: values[0] for key, values in per_seed.items()}
    table["seeds"] = {
        str(seed): {key: values[i] for key, values in per_seed.items()}
        for i, seed in enumerate(seeds)
    }
    return table | seed_summary(per_seed)


def seed_summary(per_seed):
    """{"mean": {key: mean}, "sd": {key: sample sd}} over the seeds of each key's list; NaN
    where a seed's value is (a count that an activation has no rule for)."""
    return {
        "mean": {k: statistics.fmean(v) for k, v in per_seed.items()},
        "sd": {k: _sd(v) for k, v in per_seed.items()},
    }


def _sd(values):
    if any(math.isnan(v) for v in values):
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_sd(values):
    """ "2.1042 ± 0.0024" over the seeds, or the one value of a single seed."""
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def block_means(values, steps, every):
    """Mean of `values` (len(steps), ...), read at `steps`, over each block of `every` steps."""
    block = values.new_tensor(list(steps)).long() // every
    counts = block.bincount().view(-1, *[1] * (values.dim() - 1))
    sums = values.new_zeros(counts.shape[0], *values.shape[1:]).index_add_(0, block, values)
    return sums / counts


def curve(losses, every):
    """Mean loss over each block of `every` steps: (S, steps) -> (S, ceil(steps / every))."""
    S, steps = losses.shape
    blocks = math.ceil(steps / every)
    padded = losses.new_full((S, blocks * every), float("nan"))
    padded[:, :steps] = losses
    return padded.view(S, blocks, every).nanmean(-1)
