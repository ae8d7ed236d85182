"""Optimizers: each a small piece that updates parameters in place from their gradients.

An optimizer's fields are its hyperparameters, read from params.yaml, with a step learning-rate
schedule shared by all: `lr` until step `decay_step`, then `decayed_lr`. `update(params, grads,
lr, state)` takes lists of tensors; an element-wise optimizer can take the whole flat parameter
buffer as one tensor, a layer-wise one (`layerwise = True`) takes one tensor per layer shaped
(seeds, rows, cols), where a bias or a norm's gain has one row. `state` is what init_state(params)
made for the same list. Like the pieces, they use Tensor methods only (no torch import).
"""

from dataclasses import dataclass
from typing import ClassVar

from .pieces import require


@dataclass(frozen=True)
class Schedule:
    lr: float = 0.1
    decay_step: int | None = None  # from this step on, decayed_lr; None: lr throughout
    decayed_lr: float | None = None

    def __post_init__(self):
        require(self.lr > 0, "lr", "a number > 0", self.lr)
        if self.decay_step is not None:
            require(self.decay_step >= 0, "decay_step", "an integer >= 0", self.decay_step)
            require(
                self.decayed_lr is not None and self.decayed_lr > 0,
                "decayed_lr",
                "a number > 0 when decay_step is set",
                self.decayed_lr,
            )

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

    momentum: float = 0.9
    name: ClassVar = "momentum"
    layerwise: ClassVar = False

    def __post_init__(self):
        super().__post_init__()
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)

    def init_state(self, params):
        return {"v": [p.new_zeros(p.shape) for p in params]}

    def update(self, params, grads, lr, state):
        for p, g, v in zip(params, grads, state["v"]):
            p.add_(v.mul_(self.momentum).add_(g), alpha=-lr)


@dataclass(frozen=True)
class Adam(Schedule):
    """torch.optim.Adam: moments with bias correction, θ -= lr · m̂ / (√v̂ + eps)."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: ClassVar = "adam"
    layerwise: ClassVar = False

    def __post_init__(self):
        super().__post_init__()
        for field in ("beta1", "beta2"):
            require(0 <= getattr(self, field) < 1, field, "in [0, 1)", getattr(self, field))
        require(self.eps > 0, "eps", "a number > 0", self.eps)

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

    trust: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    name: ClassVar = "lars"
    layerwise: ClassVar = True

    def __post_init__(self):
        super().__post_init__()
        require(self.trust > 0, "trust", "a number > 0", self.trust)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)

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
