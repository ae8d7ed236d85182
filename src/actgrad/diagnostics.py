"""The lecture's instruments for one seed of the MLP: activations at init, inactive units, the
answers to the exercises (what zero init trains, what constant init collapses to), samples."""

import math

import torch

from .model import batch_stats, hidden, logits, split_loss


def ideal_init_loss(vocab_size):
    """The loss of a uniform prediction, -log(1/vocab_size): what a good init starts at."""
    return -math.log(1 / vocab_size)


@torch.no_grad()
def init_activations(w, X, variant):
    """The activation's input and output for a batch of contexts X at init; a BatchNorm
    normalises with the batch's own statistics, as in training."""
    stats = batch_stats(w, X, variant) if hasattr(variant.norm, "statistics") else None
    return hidden(w, X, variant, stats)


def inactive_units(z, h, activation):
    """(inactive map or None, fraction of inactive entries, units inactive for every example),
    by the activation's own rule (pieces.py: `inactive_rule`); None and NaNs where it has none."""
    inactive = activation.inactive(z, h)
    if inactive is None:
        return None, math.nan, math.nan
    return inactive, inactive.float().mean().item(), int(inactive.all(0).sum())


def block_means(values, steps, every):
    """Mean of `values` (len(steps), ...), read at `steps`, over each block of `every` steps."""
    block = torch.tensor(list(steps)) // every
    counts = torch.bincount(block).view(-1, *[1] * (values.dim() - 1))
    sums = values.new_zeros(counts.shape[0], *values.shape[1:]).index_add_(0, block, values)
    return sums / counts


def first_nonzero_steps(grad_norm, steps):
    """{tensor index: the first recorded step with a non-zero gradient norm, or None} of one
    seed's (records, tensors) gradient norms."""
    first = {}
    for k in range(grad_norm.shape[1]):
        nonzero = (grad_norm[:, k] > 0).nonzero()
        first[k] = steps[int(nonzero[0])] if len(nonzero) else None
    return first


def unigram_loss(Y, vocab_size):
    """The cross-entropy of predicting every next character by its frequency in Y: the best a
    model can do with b2 alone (the output bias only sets the unigram distribution)."""
    counts = torch.bincount(Y, minlength=vocab_size).double()
    p = counts / counts.sum()
    return -(p[p > 0] * p[p > 0].log()).sum().item()


@torch.no_grad()
def one_unit_loss(w, variant, X, Y):
    """The loss of the network cut down to its first hidden unit, with that unit's outgoing
    weights summed over all units. Equal to the full network's loss exactly when every unit
    is a copy of the first (constant init), because then h @ W2 = h_0 · Σ_j W2[j]."""
    one = dict(w)
    one["W1"], one["W2"] = w["W1"][:, :1], w["W2"].contiguous().sum(0, keepdim=True)
    for name in ("b1", "norm_gain", "norm_bias", "mean", "std"):
        if name in w:
            one[name] = w[name][..., :1]
    return split_loss(one, variant, X, Y)


@torch.no_grad()
def sample_names(w, variant, vocab, block_size, count, seed):
    """`count` names drawn from one seed's model with a generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        context, out = [0] * block_size, []
        while True:
            probs = torch.softmax(logits(w, torch.tensor([context]), variant), dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            if ix == 0:
                break
            out.append(vocab.chars[ix])
            context = context[1:] + [ix]
        names.append("".join(out))
    return names
