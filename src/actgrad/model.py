"""The MLP of the lecture, with weights stacked along a leading seed dimension.

Every tensor in a `Weights` has shape (S, ...): one slice per seed. Biases and BatchNorm
vectors are kept as (S, 1, n) so they broadcast over a batch.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PARAM_NAMES = ("C", "W1", "b1", "W2", "b2", "bn_gain", "bn_bias")


@dataclass
class Weights:
    seeds: tuple[int, ...]
    params: dict[str, torch.Tensor]  # trained tensors, in PARAM_NAMES order
    bn_mean: torch.Tensor | None = None  # (S, 1, H) running statistics, BatchNorm only
    bn_std: torch.Tensor | None = None

    @property
    def batchnorm(self):
        return "bn_gain" in self.params

    def seed_slice(self, s):
        """The weights of seed index s, as 2-D tensors the lecture's code would hold."""
        one = {name: t[s] for name, t in self.params.items()}
        if self.batchnorm:
            one["bn_mean"], one["bn_std"] = self.bn_mean[s], self.bn_std[s]
        return one

    def state_dict(self):
        """Plain tensors only, so torch.load(..., weights_only=True) reads it back."""
        state = {n: t.clone(memory_format=torch.contiguous_format) for n, t in self.params.items()}
        state["seeds"] = torch.tensor(self.seeds, dtype=torch.long)
        if self.batchnorm:
            state["bn_mean"], state["bn_std"] = self.bn_mean.clone(), self.bn_std.clone()
        return state

    @classmethod
    def from_state_dict(cls, state):
        params = {name: state[name] for name in PARAM_NAMES if name in state}
        return cls(
            tuple(state["seeds"].tolist()), params, state.get("bn_mean"), state.get("bn_std")
        )


def init_one(seed, variant, vocab_size, block_size, n_embd, n_hidden):
    """Draw one seed's weights in the lecture's order: C, W1, b1, W2, b2.

    Returns the weights and the generator, which goes on to draw the minibatches.
    """
    fan_in = n_embd * block_size
    g = torch.Generator().manual_seed(seed)
    w = {"C": torch.randn((vocab_size, n_embd), generator=g)}
    w["W1"] = torch.randn((fan_in, n_hidden), generator=g) * variant.w1_scale
    if variant.w1_fan_in:
        w["W1"] = w["W1"] / fan_in**0.5
    if not variant.batchnorm:
        w["b1"] = torch.randn(n_hidden, generator=g) * variant.b1_scale
    w["W2"] = torch.randn((n_hidden, vocab_size), generator=g) * variant.w2_scale
    w["b2"] = torch.randn(vocab_size, generator=g) * variant.b2_scale
    if variant.batchnorm:
        w["bn_gain"] = torch.ones(n_hidden)
        w["bn_bias"] = torch.zeros(n_hidden)
    return w, g


def init_weights(seeds, variant, vocab_size, block_size, n_embd, n_hidden):
    """Stacked weights for all seeds, and one generator per seed (positioned after the init)."""
    drawn = [init_one(s, variant, vocab_size, block_size, n_embd, n_hidden) for s in seeds]
    params = {
        name: torch.stack([w[name] if w[name].dim() == 2 else w[name][None] for w, _ in drawn])
        for name in PARAM_NAMES
        if name in drawn[0][0]
    }
    weights = Weights(tuple(seeds), params)
    if variant.batchnorm:
        weights.bn_mean = torch.zeros(len(seeds), 1, n_hidden)
        weights.bn_std = torch.ones(len(seeds), 1, n_hidden)
    return weights, [g for _, g in drawn]


def preactivation(w, X):
    """One seed's hidden pre-activation (before BatchNorm) for contexts X of shape (N, T)."""
    emb = w["C"][X].view(X.shape[0], -1)
    return torch.addmm(w["b1"], emb, w["W1"]) if "b1" in w else emb @ w["W1"]


def tanh_input(w, X, stats=None):
    """One seed's input to tanh: the pre-activation, batch-normalised if the model has BatchNorm.

    BatchNorm uses `stats` = (mean, std) if given, else the running statistics in `w`.
    """
    hpre = preactivation(w, X)
    if "bn_gain" in w:
        mean, std = stats if stats is not None else (w["bn_mean"], w["bn_std"])
        scale = w["bn_gain"] / std  # gain * (hpre - mean) / std + bias, in one pass
        hpre = torch.addcmul(w["bn_bias"] - mean * scale, hpre, scale)
    return hpre


def hidden(w, X, stats=None):
    """One seed's hidden activation h = tanh(...), as 2 sigmoid(2a) - 1 (3x faster here)."""
    return torch.sigmoid_(tanh_input(w, X, stats).mul_(2)).mul_(2).sub_(1)


@torch.no_grad()
def split_loss(w, X, Y, stats=None):
    """One seed's mean cross-entropy over a whole split."""
    h = hidden(w, X, stats)
    return F.cross_entropy(h @ w["W2"] + w["b2"], Y).item()


def seed_losses(weights, X, Y):
    """Every seed's loss over a whole split, in seed order."""
    return [split_loss(weights.seed_slice(s), X, Y) for s in range(len(weights.seeds))]


@torch.no_grad()
def batch_stats(w, X):
    """BatchNorm mean and (unbiased) std of one seed's pre-activation over all of X."""
    hpre = preactivation(w, X)
    return hpre.mean(0, keepdim=True), hpre.std(0, keepdim=True)
