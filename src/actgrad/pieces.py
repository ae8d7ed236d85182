"""Activations and norms: each a forward and a hand-written backward, in public torch ops.

A piece is a frozen dataclass: its fields are its hyperparameters, as config.py validated them
from params.yaml, and its methods are the math. `activation(spec)` and `norm(spec)` build the
piece a config.Piece names. Every method works on tensors of any shape, the seeds stacked in
front. An activation's forward is also differentiable by autograd (the deep network trains
through it); a norm's works in place on its own temporaries, to save passes over the batch.
tests/test_pieces.py checks every piece against torch.autograd and torch.nn.functional.
"""

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

# --- activations ------------------------------------------------------------------------------
# forward(a) -> h; backward(dh, a, h) -> da. `inactive(a, h)` marks the units that pass (almost)
# no gradient, and `inactive_rule` says so in words; None for an activation that always passes
# one.


@dataclass(frozen=True)
class Tanh:
    name: ClassVar = "tanh"
    inactive_rule: ClassVar = "|h| > 0.99"

    def forward(self, a):
        return (a * 2).sigmoid_().mul(2).sub_(1)  # tanh, 3x faster than a.tanh() on this CPU

    def backward(self, dh, a, h):
        return dh.addcmul(dh * h, h, value=-1)  # dh · (1 - h²)

    def inactive(self, a, h):
        return h.abs() > 0.99


@dataclass(frozen=True)
class Sigmoid:
    name: ClassVar = "sigmoid"
    inactive_rule: ClassVar = "h < 0.01 or h > 0.99"

    def forward(self, a):
        return a.sigmoid()

    def backward(self, dh, a, h):
        return dh * h * (1 - h)

    def inactive(self, a, h):
        return (h - 0.5).abs() > 0.49


@dataclass(frozen=True)
class Relu:
    name: ClassVar = "relu"
    inactive_rule: ClassVar = "a <= 0"

    def forward(self, a):
        return a.clamp_min(0)

    def backward(self, dh, a, h):
        # h.sign() is 1 where a > 0, else 0 (a finite): the product dh * (a > 0), without a
        # boolean mask, which costs this CPU 5x as much
        return dh * h.sign()

    def inactive(self, a, h):
        return a <= 0


@dataclass(frozen=True)
class LeakyRelu:
    slope: float
    name: ClassVar = "leaky_relu"
    inactive_rule: ClassVar = None

    def forward(self, a):
        return a.where(a > 0, a * self.slope)

    def backward(self, dh, a, h):
        return dh.where(a > 0, dh * self.slope)

    def inactive(self, a, h):
        return None


@dataclass(frozen=True)
class Elu:
    alpha: float
    name: ClassVar = "elu"
    inactive_rule: ClassVar = "h < -0.99 alpha"

    def forward(self, a):
        return a.where(a > 0, a.expm1() * self.alpha)

    def backward(self, dh, a, h):
        return dh.where(a > 0, dh * (h + self.alpha))

    def inactive(self, a, h):
        return h < -0.99 * self.alpha


@dataclass(frozen=True)
class Gelu:
    """The exact GELU, a·Φ(a)."""

    name: ClassVar = "gelu"
    inactive_rule: ClassVar = "a < -3"

    def forward(self, a):
        return a * (1 + (a / math.sqrt(2)).erf()) / 2

    def backward(self, dh, a, h):
        cdf = (1 + (a / math.sqrt(2)).erf()) / 2
        pdf = (a * a / -2).exp() / math.sqrt(2 * math.pi)
        return dh * (cdf + a * pdf)

    def inactive(self, a, h):
        return a < -3


@dataclass(frozen=True)
class Identity:
    """params.yaml's `linear`: no activation at all."""

    name: ClassVar = "linear"
    inactive_rule: ClassVar = None

    def forward(self, a):
        return a

    def backward(self, dh, a, h):
        return dh

    def inactive(self, a, h):
        return None


# --- norms ------------------------------------------------------------------------------------
# Over the hidden pre-activation a of shape (..., batch, units), with a gain and a bias of shape
# (..., 1, units). forward(a, gain, bias, running) -> (out, cache); backward(dout, cache, gain)
# -> (da, dgain, dbias). `running` holds statistics a norm keeps for evaluation, updated in place
# while training; evaluate(a, gain, bias, stats) normalises with fixed statistics.


@dataclass(frozen=True)
class NoNorm:
    name: ClassVar = "none"

    def forward(self, a, gain, bias, running):
        return a, None

    def backward(self, dout, cache, gain):
        return dout, None, None

    def evaluate(self, a, gain, bias, stats):
        return a


@dataclass(frozen=True)
class BatchNorm:
    """Each unit normalised over the batch with its unbiased std, the lecture's convention: no
    epsilon, and a running mean and std, each kept as running = (1 - momentum) * running +
    momentum * batch. forward and backward are the engine's training pass, by hand;
    statistics, evaluate and update serve the deep network too (NotebookBatchNorm)."""

    momentum: float
    name: ClassVar = "batchnorm"
    kept: ClassVar = ("mean", "std")  # the running statistics

    def forward(self, a, gain, bias, running):
        mean = a.mean(-2, keepdim=True)
        diff = a - mean
        std = (diff * diff).sum(-2, keepdim=True).div_(a.shape[-2] - 1).sqrt_()
        xhat = diff.div_(std)
        running["mean"].lerp_(mean, self.momentum)
        running["std"].lerp_(std, self.momentum)
        return bias.addcmul(gain, xhat), (xhat, std)

    def backward(self, dout, cache, gain):
        xhat, std = cache
        n = dout.shape[-2]
        dgain = (dout * xhat).sum(-2, keepdim=True)
        dbias = dout.sum(-2, keepdim=True)
        # d/da of gain * (a - mean) / std over the batch, with the unbiased std
        da = (dout - dbias / n).addcmul_(xhat, dgain, value=-1 / (n - 1)).mul_(gain / std)
        return da, dgain, dbias

    def std(self, stats):
        return stats["std"]

    def scale(self, gain, stats):
        """What evaluate multiplies a by: gain / std."""
        return gain / self.std(stats)

    def evaluate(self, a, gain, bias, stats):
        """gain · (a - mean) / std + bias with fixed statistics, as one multiply-add."""
        scale = self.scale(gain, stats)
        return a * scale + (bias - stats["mean"] * scale)

    def statistics(self, a):
        """The kept statistics of each unit over all rows of a: what evaluate() takes."""
        return {"mean": a.mean(-2, keepdim=True), "std": a.std(-2, keepdim=True)}

    def update(self, running, stats):
        """The running statistics moved towards a batch's."""
        for name in self.kept:
            running[name].lerp_(stats[name], self.momentum)


@dataclass(frozen=True)
class NotebookBatchNorm(BatchNorm):
    """The notebook's BatchNorm1d (and torch's): a running variance instead of a std, and
    std = sqrt(var + eps)."""

    eps: float = 1e-5
    kept: ClassVar = ("mean", "var")

    def std(self, stats):
        return (stats["var"] + self.eps).sqrt()

    def statistics(self, a):
        return {"mean": a.mean(-2, keepdim=True), "var": a.var(-2, keepdim=True)}


@dataclass(frozen=True)
class LayerNorm:
    """Each example over its units, biased variance plus eps, as torch.nn.LayerNorm."""

    eps: float
    name: ClassVar = "layernorm"

    def forward(self, a, gain, bias, running):
        diff = a - a.mean(-1, keepdim=True)
        rstd = (diff * diff).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
        xhat = diff.mul_(rstd)
        return bias.addcmul(gain, xhat), (xhat, rstd)

    def backward(self, dout, cache, gain):
        xhat, rstd = cache
        dgain = (dout * xhat).sum(-2, keepdim=True)
        dbias = dout.sum(-2, keepdim=True)
        dxhat = dout * gain
        along = (dxhat * xhat).mean(-1, keepdim=True)  # dxhat's component along xhat, per example
        da = (dxhat - dxhat.mean(-1, keepdim=True)).addcmul_(xhat, along, value=-1).mul_(rstd)
        return da, dgain, dbias

    def evaluate(self, a, gain, bias, stats):
        return self.forward(a, gain, bias, None)[0]


ACTIVATIONS = {p.name: p for p in (Tanh, Sigmoid, Relu, LeakyRelu, Elu, Gelu, Identity)}
NORMS = {p.name: p for p in (NoNorm, BatchNorm, LayerNorm)}


@functools.cache
def activation(spec):
    """The activation piece a config.Piece names, with its hyperparameters."""
    return ACTIVATIONS[spec.name](**spec.kwargs)


@functools.cache
def norm(spec):
    return NORMS[spec.name](**spec.kwargs)
