"""The MLP of the lecture, with weights stacked along a leading seed dimension: its init, drawn
in the lecture's order, and its evaluation: embedding C -> concat -> Linear W1 (+ b1) -> norm ->
activation -> Linear W2 + b2.

Every tensor in a `Weights` has shape (S, ...): one slice per seed. Vectors (biases, a norm's
gain and bias, its running statistics) are kept as (S, 1, n) so they broadcast over a batch.
"""

import functools
from dataclasses import dataclass, field

import torch

from ..evaluate import split_loss

NORM_PARAMS = ("norm_gain", "norm_bias")
PARAM_ORDER = ("C", "W1", "b1", *NORM_PARAMS, "W2", "b2")


@dataclass
class Weights:
    seeds: tuple[int, ...]
    params: dict[str, torch.Tensor]  # trained tensors, in PARAM_ORDER
    running: dict[str, torch.Tensor] = field(default_factory=dict)  # a norm's {mean, std}

    def seed_slice(self, s):
        """The weights of seed index s, as the 2-D tensors the lecture's code would hold."""
        return {name: t[s] for name, t in {**self.params, **self.running}.items()}

    def slices(self):
        """Every seed's weights, in seed order."""
        return [self.seed_slice(s) for s in range(len(self.seeds))]

    def state_dict(self):
        """Plain tensors only, so torch.load(..., weights_only=True) reads it back."""
        state = {name: t.contiguous().clone() for name, t in self.params.items()}
        state.update({f"running_{name}": t.clone() for name, t in self.running.items()})
        state["seeds"] = torch.tensor(self.seeds, dtype=torch.long)
        return state

    @classmethod
    def from_state_dict(cls, state):
        params = {name: state[name] for name in PARAM_ORDER if name in state}
        running = {k.removeprefix("running_"): v for k, v in state.items() if "running_" in k}
        return cls(tuple(state["seeds"].tolist()), params, running)


def shapes(vocab_size, block_size, n_embd, n_hidden):
    """{tensor: (shape, fan_in, fan_out)}: a bias has its layer's fans, C those of a one-hot
    lookup."""
    fan_in = n_embd * block_size
    return {
        "C": ((vocab_size, n_embd), vocab_size, n_embd),
        "W1": ((fan_in, n_hidden), fan_in, n_hidden),
        "b1": ((n_hidden,), fan_in, n_hidden),
        "W2": ((n_hidden, vocab_size), n_hidden, vocab_size),
        "b2": ((vocab_size,), n_hidden, vocab_size),
    }


def draw(seed, variant, vocab_size, block_size, n_embd, n_hidden):
    """One seed's weights {name: tensor} for `variant`, and its generator, which goes on to draw
    the minibatches. Every tensor the variant has is drawn with randn, whatever its init scheme
    (zeros and constants are drawn, then replaced), so all variants of a seed see the same
    minibatches; a BatchNorm variant has no b1 and draws none, as in the notebook. A norm's gain
    starts at 1 and its bias at 0, drawing nothing."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, (shape, fan_in, fan_out) in shapes(vocab_size, block_size, n_embd, n_hidden).items():
        if name in variant.tensors:
            drawn = torch.randn(shape, generator=g)
            scheme = variant.init_of(name)
            weights[name] = scheme.tensor(drawn, fan_in, fan_out, variant.gain_of(name))
    if variant.normed:
        weights["norm_gain"] = torch.ones(n_hidden)
        weights["norm_bias"] = torch.zeros(n_hidden)
    return weights, g


def init_weights(seeds, variant, vocab_size, block_size, n_embd, n_hidden):
    """Stacked weights for all seeds, and one generator per seed (positioned after the init)."""
    drawn = [draw(s, variant, vocab_size, block_size, n_embd, n_hidden) for s in seeds]
    names = [n for n in PARAM_ORDER if n in drawn[0][0]]
    params = {n: torch.stack([w[n].view(-1, w[n].shape[-1]) for w, _ in drawn]) for n in names}
    running = {}
    if variant.batchnorm:  # running mean 0 and std 1 to start
        running = {"mean": torch.zeros(len(seeds), 1, n_hidden)}
        running["std"] = torch.ones(len(seeds), 1, n_hidden)
    return Weights(tuple(seeds), params, running), [g for _, g in drawn]


def preactivation(w, X):
    """One seed's first-layer output, before any norm, for contexts X of shape (N, T)."""
    emb = w["C"][X].view(X.shape[0], -1)
    return torch.addmm(w["b1"], emb, w["W1"]) if "b1" in w else emb @ w["W1"]


def hidden(w, X, variant, stats=None):
    """One seed's activation input z and output h. A BatchNorm normalises with `stats`
    ({mean, std}) if given, else with its running statistics in w."""
    a = preactivation(w, X)
    gain, bias = w.get("norm_gain"), w.get("norm_bias")
    z = variant.norm.evaluate(a, gain, bias, stats or w)
    return z, variant.activation.forward(z)


def logits(w, X, variant, stats=None):
    return torch.addmm(w["b2"], hidden(w, X, variant, stats)[1], w["W2"])


def loss(w, variant, X, Y, stats=None):
    """One seed's mean cross-entropy over a whole split."""
    return split_loss(functools.partial(logits, w, variant=variant, stats=stats), X, Y)


def seed_losses(weights, variant, X, Y):
    """Every seed's loss over a whole split, in seed order."""
    return [loss(w, variant, X, Y) for w in weights.slices()]


def one_unit(weights):
    """Every seed's network cut down to its first hidden unit, with that unit's outgoing weights
    summed over all units. It computes the whole network's function exactly when every unit is a
    copy of the first (constant init), because then h @ W2 = h_0 · Σ_j W2[j]."""
    cut = ("W1", "b1", *NORM_PARAMS)  # a hidden unit's column of each
    params = {n: t[..., :1] if n in cut else t for n, t in weights.params.items()}
    params["W2"] = torch.stack([W2.contiguous().sum(0, keepdim=True) for W2 in params["W2"]])
    running = {name: t[..., :1] for name, t in weights.running.items()}
    return Weights(weights.seeds, params, running)


@torch.no_grad()
def batch_stats(w, X, variant):
    """The BatchNorm statistics of one seed's first-layer output over all of X."""
    return variant.norm.statistics(preactivation(w, X))


def fold_batchnorm(w, stats):
    """One seed's weights with BatchNorm (normalising with `stats`) folded into W1 and a new b1:
    gain · (x W1 - mean) / std + bias = x (W1 · gain / std) + (bias - mean · gain / std)."""
    tensors = (w["norm_gain"], w["norm_bias"], stats["mean"], stats["std"])
    gain, bias, mean, std = (t.double() for t in tensors)
    scale = gain / std  # in float64, so that the folded weights carry one rounding each
    folded = {name: w[name] for name in ("C", "W2", "b2")}
    folded["W1"] = (w["W1"].double() * scale).to(w["W1"].dtype)
    folded["b1"] = (bias - mean * scale).to(w["W1"].dtype)
    return folded
