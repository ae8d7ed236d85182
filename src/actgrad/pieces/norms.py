"""Norms after a Linear: each its params, a forward and a hand-written backward.

Over the hidden pre-activation a of shape (..., batch, units), with a gain and a bias of shape
(..., 1, units). forward(a, gain, bias, running) -> (out, cache); backward(dout, cache, gain)
-> (da, dgain, dbias). `running` holds statistics a norm keeps for evaluation, updated in place
while training; evaluate(a, gain, bias, stats) normalises with fixed statistics. A forward
works in place on its own temporaries, to save passes over the batch. Public Tensor methods
only, checked against autograd in tests/test_pieces.py.
"""

from typing import ClassVar, Literal

from pydantic import Field

from ..params import Section


class Norm(Section):
    """The base of every norm: params.yaml names one by its `name`."""

    name: str


class NoNorm(Norm):
    name: Literal["none"] = "none"

    def forward(self, a, gain, bias, running):
        return a, None

    def backward(self, dout, cache, gain):
        return dout, None, None

    def evaluate(self, a, gain, bias, stats):
        return a


class BatchNorm(Norm):
    """Each unit normalised over the batch with its unbiased std, the lecture's convention: no
    epsilon, and a running mean and std, each kept as running = (1 - momentum) * running +
    momentum * batch. Its bias replaces b1. forward and backward are the engine's training
    pass, by hand; statistics, evaluate and update serve the deep network too
    (NotebookBatchNorm)."""

    name: Literal["batchnorm"] = "batchnorm"
    momentum: float = Field(0.001, gt=0, le=1)
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


class NotebookBatchNorm(BatchNorm):
    """The notebook's BatchNorm1d (and torch's): a running variance instead of a std, and
    std = sqrt(var + eps). The deep network's; params.yaml names it through deep_train."""

    eps: float = Field(1e-5, gt=0)
    kept: ClassVar = ("mean", "var")

    def std(self, stats):
        return (stats["var"] + self.eps).sqrt()

    def statistics(self, a):
        return {"mean": a.mean(-2, keepdim=True), "var": a.var(-2, keepdim=True)}


class LayerNorm(Norm):
    """Each example over its units, biased variance plus eps, as torch.nn.LayerNorm."""

    name: Literal["layernorm"] = "layernorm"
    eps: float = Field(1e-5, gt=0)

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
