"""The lecture's instruments for one seed of the MLP: activations at init, saturation, samples."""

import math

import torch

from .model import batch_stats, hidden, tanh_input

SATURATED = 0.99  # |tanh| above this passes (almost) no gradient


def ideal_init_loss(vocab_size):
    """The loss of a uniform prediction, -log(1/vocab_size): what a good init starts at."""
    return -math.log(1 / vocab_size)


@torch.no_grad()
def init_activations(w, X):
    """The tanh input and output for a batch of contexts X, with BatchNorm on batch statistics."""
    hpre = tanh_input(w, X, batch_stats(w, X) if "bn_gain" in w else None)
    return hpre, torch.tanh(hpre)


def saturation(h):
    """(saturated map, fraction of |h| > SATURATED, neurons saturated for every example)."""
    saturated = h.abs() > SATURATED
    return saturated, saturated.float().mean().item(), int(saturated.all(0).sum())


def log10_update_ratios(grad_data, lr_steps, lr_of):
    """log10(std(lr * grad) / std(weight)) from recorded grad:data ratios at the given steps."""
    lrs = torch.tensor([lr_of(s) for s in lr_steps]).view(-1, *[1] * (grad_data.dim() - 1))
    return (grad_data * lrs).log10()


def block_means(values, steps, every):
    """Mean of `values` (len(steps), ...), read at `steps`, over each block of `every` steps."""
    block = torch.tensor(list(steps)) // every
    counts = torch.bincount(block).view(-1, *[1] * (values.dim() - 1))
    sums = values.new_zeros(counts.shape[0], *values.shape[1:]).index_add_(0, block, values)
    return sums / counts


@torch.no_grad()
def sample_names(w, vocab, block_size, count, seed):
    """`count` names drawn from one seed's model with a generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        context, out = [0] * block_size, []
        while True:
            h = hidden(w, torch.tensor([context]))
            probs = torch.softmax(h @ w["W2"] + w["b2"], dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            if ix == 0:
                break
            out.append(vocab.chars[ix])
            context = context[1:] + [ix]
        names.append("".join(out))
    return names
