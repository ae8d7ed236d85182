"""Optimizers: each a small piece that updates parameters in place from their gradients.

An optimizer's fields are its hyperparameters, as config.py validated them from params.yaml,
with a step learning-rate schedule shared by all: `lr` until step `decay_step`, then
`decayed_lr`; `optimizer(spec)` builds the one a config.Piece names. `update(params, grads,
lr, state)` takes lists of tensors; an element-wise optimizer can take the whole flat parameter
buffer as one tensor, a layer-wise one (`layerwise = True`) takes one tensor per layer shaped
(seeds, rows, cols), where a bias or a norm's gain has one row. `state` is what init_state(params)
made for the same list. Like the pieces, they use Tensor methods only (no torch import).
"""

import functools
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Schedule:
    lr: float
    decay_step: int | None  # from this step on, decayed_lr; None: lr throughout
    decayed_lr: float | None

    def lr_at(self, step):
        return self.lr if self.decay_step is None or step < self.decay_step else self.decayed_lr


@dataclass(frozen=True)
class Sgd(Schedule):
    """θ -= lr · g, the lecture's."""

    name: ClassVar = "sgd"
    layerwise: ClassVar = False

    def init_state(self, params):
        return {}

    def update(self, params, grads, lr, state):
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)


@dataclass(frozen=True)
class Momentum(Schedule):
    """v = momentum · v + g; θ -= lr · v (torch.optim.SGD with momentum)."""

    momentum: float
    name: ClassVar = "momentum"
    layerwise: ClassVar = False

    def init_state(self, params):
        return {"v": [p.new_zeros(p.shape) for p in params]}

    def update(self, params, grads, lr, state):
        for p, g, v in zip(params, grads, state["v"]):
            p.add_(v.mul_(self.momentum).add_(g), alpha=-lr)


@dataclass(frozen=True)
class Adam(Schedule):
    """torch.optim.Adam: moments with bias correction, θ -= lr · m̂ / (√v̂ + eps)."""

    beta1: float
    beta2: float
    eps: float
    name: ClassVar = "adam"
    layerwise: ClassVar = False

    def init_state(self, params):
        zeros = [p.new_zeros(p.shape) for p in params]
        return {"t": 0, "m": zeros, "v": [z.clone() for z in zeros]}

    def update(self, params, grads, lr, state):
        t = state["t"] = state["t"] + 1
        correction1, correction2 = 1 - self.beta1**t, 1 - self.beta2**t
        # m̂ / (√v̂ + eps) = (√c2 / c1) · m / (√v + eps · √c2): the corrections as two scalars
        step, eps = lr * correction2**0.5 / correction1, self.eps * correction2**0.5
        for p, g, m, v in zip(params, grads, state["m"], state["v"]):
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            p.addcdiv_(m, v.sqrt().add_(eps), value=-step)


@dataclass(frozen=True)
class Lars(Schedule):
    """You, Gitman & Ginsburg 2017: each weight matrix's step is scaled, per seed, by its trust
    ratio trust · ‖w‖ / (‖g‖ + weight_decay · ‖w‖); biases and gains (one row) take the plain lr,
    as is usual. v = momentum · v + lr · ratio · (g + weight_decay · w); w -= v."""

    trust: float
    momentum: float
    weight_decay: float
    name: ClassVar = "lars"
    layerwise: ClassVar = True

    def init_state(self, params):
        return {"v": [p.new_zeros(p.shape) for p in params]}

    def update(self, params, grads, lr, state):
        for p, g, v in zip(params, grads, state["v"]):
            scale = lr
            if p.shape[-2] > 1:
                w_norm = p.flatten(1).norm(dim=1).view(-1, 1, 1)
                g_norm = g.flatten(1).norm(dim=1).view(-1, 1, 1)
                ratio = w_norm * self.trust / (g_norm + self.weight_decay * w_norm)
                # a zero matrix or gradient has no scale to trust yet: it takes the plain lr
                scale = ratio.where((w_norm > 0) & (g_norm > 0), ratio.new_ones(())) * lr
            v.mul_(self.momentum).add_(g.add(p, alpha=self.weight_decay) * scale)
            p.sub_(v)


OPTIMIZERS = {o.name: o for o in (Sgd, Momentum, Adam, Lars)}


@functools.cache
def optimizer(spec):
    """The optimizer piece a config.Piece names, with its hyperparameters."""
    return OPTIMIZERS[spec.name](**spec.kwargs)
