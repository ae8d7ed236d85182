"""Optimizers: each its params, and an update of parameters in place from their gradients.

Every optimizer has a step learning-rate schedule: `lr` until step `decay_step`, then
`decayed_lr`. `update(params, grads, lr, state)` takes lists of tensors; an element-wise
optimizer can take the whole flat parameter buffer as one tensor, a layer-wise one
(`layerwise = True`) takes one tensor per layer shaped (seeds, rows, cols), where a bias or a
norm's gain has one row. `state` is what init_state(params) made for the same list. Public
Tensor methods only, checked against torch.optim in tests/test_pieces.py.
"""

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..params import Section, invalid


class Optimizer(Section):
    """The base of every optimizer: params.yaml names one by its `name`, with its schedule."""

    name: str
    lr: float = Field(0.1, gt=0)
    decay_step: int | None = Field(None, ge=0)  # from this step on, decayed_lr; None: lr always
    decayed_lr: float | None = Field(None, gt=0)
    layerwise: ClassVar = False

    @model_validator(mode="after")
    def _decayed_lr_with_decay_step(self):
        if self.decay_step is not None and self.decayed_lr is None:
            raise invalid("decayed_lr", "must be a number > 0 when decay_step is set, got None")
        return self

    def lr_at(self, step):
        return self.lr if self.decay_step is None or step < self.decay_step else self.decayed_lr


class Sgd(Optimizer):
    """θ -= lr · g, the lecture's."""

    name: Literal["sgd"] = "sgd"

    def init_state(self, params):
        return {}

    def update(self, params, grads, lr, state):
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)


class Momentum(Optimizer):
    """v = momentum · v + g; θ -= lr · v (torch.optim.SGD with momentum)."""

    name: Literal["momentum"] = "momentum"
    momentum: float = Field(0.9, ge=0, lt=1)

    def init_state(self, params):
        return {"v": [p.new_zeros(p.shape) for p in params]}

    def update(self, params, grads, lr, state):
        for p, g, v in zip(params, grads, state["v"]):
            p.add_(v.mul_(self.momentum).add_(g), alpha=-lr)


class Adam(Optimizer):
    """torch.optim.Adam: moments with bias correction, θ -= lr · m̂ / (√v̂ + eps)."""

    name: Literal["adam"] = "adam"
    lr: float = Field(0.001, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)

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


class Lars(Optimizer):
    """You, Gitman & Ginsburg 2017: each weight matrix's step is scaled, per seed, by its trust
    ratio trust · ‖w‖ / (‖g‖ + weight_decay · ‖w‖); biases and gains (one row) take the plain lr,
    as is usual. v = momentum · v + lr · ratio · (g + weight_decay · w); w -= v."""

    name: Literal["lars"] = "lars"
    trust: float = Field(0.001, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
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
