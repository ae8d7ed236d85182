"""What the engine reads of the MLP while it trains: update:data ratios and gradient norms, dead
and distinct hidden units, and the activations at init; plain numbers or tensors, seed by seed."""

import math

import torch

from .network import batch_stats, hidden

MATRICES = ("C", "W1", "W2")  # the weights whose update:data ratio is recorded


def each_seed(tensors, reduce):
    """(S, len(tensors)) of reduce(one seed's tensor), seed by seed: a reduction over a batch of
    seeds may round differently with the number of seeds, and these must not."""
    return torch.tensor([[reduce(t[s]).item() for t in tensors] for s in range(len(tensors[0]))])


def update_ratios(before, params):
    """(S, len(MATRICES)) log10 std(θ after − θ before) / std(θ after) of each seed's matrices."""
    after = [params[name] for name in MATRICES]
    steps = each_seed([a - before[name] for a, name in zip(after, MATRICES)], torch.std)
    return (steps / each_seed(after, torch.std)).log10()


@torch.no_grad()
def unit_counts(weights, variant, contexts):
    """(dead, distinct, negative, distinct dims, distinct W1 rows) of each seed: dead means
    inactive (the activation's rule) on every one of `contexts`, NaN where the activation has
    no such rule; distinct counts the units that compute different functions of the input
    (different W1 columns, biases or gains); negative, the units whose input to the activation
    is <= 0 on every context (a ReLU's are dead; a leaky ReLU's or an ELU's still learn); the
    distinct dims, the columns of the embedding C that differ from each other, and the W1 rows,
    those of W1's rows (one per context position and embedding dimension) that do."""
    activation, norm = variant.activation, variant.norm
    dead, distinct, negative, dims, rows = [], [], [], [], []
    for s in range(len(weights.seeds)):
        w = weights.seed_slice(s)
        a = w["C"][contexts].view(len(contexts), -1) @ w["W1"] + w.get("b1", 0)
        z = norm.evaluate(a, w.get("norm_gain"), w.get("norm_bias"), w)
        inactive = activation.inactive(z, activation.forward(z))
        dead.append(math.nan if inactive is None else float(inactive.all(0).sum()))
        negative.append(float((z <= 0).all(0).sum()))
        units = torch.cat([w[n].T for n in ("W1", "b1", "norm_gain", "norm_bias") if n in w], 1)
        distinct.append(_distinct(units))
        dims.append(_distinct(w["C"].T))
        rows.append(_distinct(w["W1"]))
    return tuple(map(torch.tensor, (dead, distinct, negative, dims, rows)))


def _distinct(rows):
    """How many of the rows of a 2-D tensor differ from each other, to the bit."""
    same = (rows[:, None] == rows[None]).all(-1)  # row i equals row j
    return float(len(rows) - same.triu(1).any(0).sum())  # minus the repeats


def unique_contexts(X, vocab_size):
    """The distinct rows of X (N, T), each context read as a number in base vocab_size."""
    place = vocab_size ** torch.arange(X.shape[1] - 1, -1, -1)
    codes = torch.unique(X @ place)
    return codes[:, None] // place % vocab_size


@torch.no_grad()
def batch_activations(w, X, variant):
    """One seed's activation input and output for a batch of contexts X; a BatchNorm
    normalises with the batch's own statistics, as in training."""
    stats = batch_stats(w, X, variant) if variant.batchnorm else None
    return hidden(w, X, variant, stats)


def init_activations(weights, generators, X, variant, batch_size):
    """(z, h), each (S, batch, units): every seed's batch_activations at init, on the first
    minibatch it trains on (drawn from a copy of its generator)."""
    zs, hs = [], []
    for s, generator in enumerate(generators):
        copy = torch.Generator().set_state(generator.get_state())
        batch = X[torch.randint(0, X.shape[0], (batch_size,), generator=copy)]
        z, h = batch_activations(weights.seed_slice(s), batch, variant)
        zs.append(z)
        hs.append(h)
    return torch.stack(zs), torch.stack(hs)


def changed(initial, final):
    """(S, tensors) bool: whether each seed's tensor differs from where it started."""
    names = list(initial)
    return torch.tensor(
        [
            [not torch.equal(final[n][s], initial[n][s]) for n in names]
            for s in range(len(final[names[0]]))
        ]
    )
