"""A variant's seeds trained in groups, as tasks (compute.py): the one entry to training that the
train stage, the tests and the benches call. Seeds are independent, so how they are grouped
changes the speed, never the numbers."""

import torch

from .engine import TrainResult, train_group
from .network import Weights


def groups(seeds, size):
    """`seeds` in consecutive groups of `size` (the last may be smaller)."""
    return [tuple(seeds[i : i + size]) for i in range(0, len(seeds), size)]


def merge(parts):
    """One (Weights, TrainResult) from those of groups of seeds, in the groups' order."""
    weights = [w for w, _ in parts]
    merged = Weights(
        tuple(s for w in weights for s in w.seeds),
        {name: torch.cat([w.params[name] for w in weights]) for name in weights[0].params},
        {name: torch.cat([w.running[name] for w in weights]) for name in weights[0].running},
    )
    results = [vars(r) for _, r in parts]
    return merged, TrainResult(**{k: torch.cat([r[k] for r in results]) for k in results[0]})


def train_seeds(seeds, variant, cfg, X, Y, vocab_size, tasks, on_done=None):
    """Train all `seeds` of `variant` as tasks of `tasks` (compute.Tasks), its group_size
    seeds a task, else all of them in one: a step of five seeds costs hardly more than a step
    of one (docs/speed.md); (Weights, TrainResult) in seed order. on_done(seeds, placement) as
    each group ends."""
    size = tasks.group_size or len(seeds)
    parts = groups(tuple(seeds), size)
    done = on_done and (lambda i, placement: on_done(parts[i], placement))
    return merge(tasks(train_group, parts, variant, cfg, X, Y, vocab_size, on_done=done))
