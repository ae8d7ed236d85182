"""The lecture's deep network, as the notebook builds it: an embedding C, then n_layers blocks
Linear -> [BatchNorm1d] -> activation, then an output Linear -> [BatchNorm1d]. Each layer keeps
its last output (`.out`) so that activations and gradients can be read after a step, and
BatchNorm keeps running statistics for evaluation, as the notebook's classes do.
"""

import functools
from dataclasses import dataclass

import torch

from ..pieces.norms import NotebookBatchNorm

SATURATED = 0.97  # the notebook's: a tanh output with |t| above this counts as saturated


class Linear:
    """randn / sqrt(fan_in), or with `scaled` false randn alone: the fan-in scaling forgotten."""

    def __init__(self, fan_in, fan_out, generator, bias=True, scaled=True):
        self.weight = torch.randn((fan_in, fan_out), generator=generator)
        if scaled:
            self.weight = self.weight / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    """The notebook's layer around the BatchNorm piece (pieces/norms.py): the batch's mean and
    unbiased variance while training, the running ones when not."""

    def __init__(self, dim, piece):
        self.piece, self.training = piece, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)
        self.running = {"mean": torch.zeros(1, dim), "var": torch.ones(1, dim)}

    def __call__(self, x):
        stats = self.piece.statistics(x) if self.training else self.running
        self.out = self.piece.evaluate(x, self.gamma, self.beta, stats)
        if self.training:
            with torch.no_grad():
                self.piece.update(self.running, stats)
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Activation:
    """A layer applying an activation piece (pieces/); autograd differentiates its forward."""

    def __init__(self, piece):
        self.piece = piece

    def __call__(self, x):
        self.out = self.piece.forward(x)
        return self.out

    def parameters(self):
        return []


@dataclass
class DeepNet:
    C: torch.Tensor
    blocks: list  # n_layers hidden blocks [Linear, BatchNorm1d?, Activation], then the output

    @property
    def layers(self):
        return [layer for block in self.blocks for layer in block]

    def parameters(self):
        return [self.C] + [p for layer in self.layers for p in layer.parameters()]

    def weights(self):
        """The 2-D parameters by name: C, then W1 ... W{n_layers + 1} (the output Linear)."""
        return {"C": self.C} | {f"W{i}": b[0].weight for i, b in enumerate(self.blocks, start=1)}

    def train(self, mode):
        for layer in self.layers:
            layer.training = mode

    def tensors(self):
        """{name: tensor} of every parameter and running statistic: what the stage saves."""
        found = {"C": self.C}
        for i, block in enumerate(self.blocks, start=1):
            for layer in block:
                if isinstance(layer, Linear):
                    found |= {f"W{i}": layer.weight, f"b{i}": layer.bias}
                elif isinstance(layer, BatchNorm1d):
                    found |= {f"gamma{i}": layer.gamma, f"beta{i}": layer.beta}
                    found |= {f"running_{k}{i}": v for k, v in layer.running.items()}
        return {name: t for name, t in found.items() if t is not None}

    def state_dict(self):
        """Plain tensors only, so torch.load(..., weights_only=True) reads it back."""
        return {name: t.detach().clone() for name, t in self.tensors().items()}

    def load(self, state):
        """Take the tensors of state_dict(); the net in evaluation mode."""
        with torch.no_grad():
            for name, t in self.tensors().items():
                t.copy_(state[name])
        self.train(False)
        return self

    def __call__(self, X):
        x = self.C[X].view(X.shape[0], -1)
        for layer in self.layers:
            x = layer(x)
        return x


def build_net(cfg, train, block_size, vocab_size, generator):
    """The notebook's init: C, then each Linear's weight drawn in order from one generator."""
    C = torch.randn((vocab_size, train.n_embd), generator=generator)
    sizes = [train.n_embd * block_size] + [train.n_hidden] * train.n_layers + [vocab_size]
    norm = NotebookBatchNorm(momentum=train.bn_momentum, eps=train.bn_eps)
    blocks = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        block = [Linear(fan_in, fan_out, generator, not cfg.batchnorm, cfg.fan_in_scaling)]
        if cfg.batchnorm:
            block.append(BatchNorm1d(fan_out, norm))
        if i < train.n_layers:
            block.append(Activation(cfg.activation))
        blocks.append(block)
    net = DeepNet(C, blocks)
    with torch.no_grad():
        # last layer: make it less confident; every other Linear: apply the gain
        if cfg.batchnorm:
            blocks[-1][-1].gamma *= cfg.last_scale
        else:
            blocks[-1][0].weight *= cfg.last_scale
        for block in blocks[:-1]:
            block[0].weight *= cfg.gain
    return net


def trained_logits(cfg, train, block_size, vocab_size, state):
    """The logits function of a net with the weights and running statistics of state_dict()."""
    net = build_net(cfg, train, block_size, vocab_size, torch.Generator())
    return functools.partial(evaluation_logits, net.load(state))


def evaluation_logits(net, contexts):
    """The net's logits, keeping one layer's output at a time (not every `.out`)."""
    x = net.C[contexts].view(len(contexts), -1)
    for layer in net.layers:
        x = layer(x)
        layer.out = None
    return x
