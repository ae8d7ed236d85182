"""The lecture's deep network and the instruments read off it after a short run.

The net is the lecture's: an embedding C, then n_layers blocks Linear -> [BatchNorm1d] -> [Tanh],
then an output Linear -> [BatchNorm1d]. It trains with autograd; each layer keeps its last output
(`.out`, with its gradient retained) so that activations and gradients can be read after the last
step, as the lecture does.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import Diverged

SATURATED = 0.97  # a tanh output with |t| above this counts as saturated
BINS = 100  # histogram bins, torch.histogram's default as in the lecture


class Linear:
    def __init__(self, fan_in, fan_out, generator, bias=True):
        self.weight = torch.randn((fan_in, fan_out), generator=generator) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    """Training-mode BatchNorm: each batch is normalised with its own mean and variance."""

    def __init__(self, dim, eps=1e-5):
        self.eps = eps
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)

    def __call__(self, x):
        xhat = (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True) + self.eps)
        self.out = self.gamma * xhat + self.beta
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self):
        return []


@dataclass
class DeepNet:
    C: torch.Tensor
    blocks: list  # n_layers hidden blocks [Linear, BatchNorm1d?, Tanh?], then the output block

    @property
    def layers(self):
        return [layer for block in self.blocks for layer in block]

    def parameters(self):
        return [self.C] + [p for layer in self.layers for p in layer.parameters()]

    def weights(self):
        """The 2-D parameters by name: C, then W1 ... W{n_layers + 1} (the output Linear)."""
        return {"C": self.C} | {f"W{i}": b[0].weight for i, b in enumerate(self.blocks, start=1)}

    def __call__(self, X):
        x = self.C[X].view(X.shape[0], -1)
        for layer in self.layers:
            x = layer(x)
        return x


def build_net(cfg, train, block_size, vocab_size, generator):
    """The lecture's init: C, then each Linear's weight drawn in order from one generator."""
    C = torch.randn((vocab_size, train.n_embd), generator=generator)
    sizes = [train.n_embd * block_size] + [train.n_hidden] * train.n_layers + [vocab_size]
    blocks = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        block = [Linear(fan_in, fan_out, generator, bias=not cfg.batchnorm)]
        if cfg.batchnorm:
            block.append(BatchNorm1d(fan_out))
        if cfg.tanh and i < train.n_layers:
            block.append(Tanh())
        blocks.append(block)
    net = DeepNet(C, blocks)
    layers = net.layers
    with torch.no_grad():
        # last layer: make it less confident; all other Linear layers: apply the gain
        if cfg.batchnorm:
            layers[-1].gamma *= cfg.last_scale
        else:
            layers[-1].weight *= cfg.last_scale
        for layer in layers[:-1]:
            if isinstance(layer, Linear):
                layer.weight *= cfg.gain
    return net


def histogram(t):
    """(bin centres, density) of a tensor's values."""
    density, edges = torch.histogram(t.detach().flatten().float(), bins=BINS, density=True)
    return ((edges[:-1] + edges[1:]) / 2).tolist(), density.tolist()


@dataclass
class ReadOut:
    """The instruments at one step, read after its backward pass and before its update."""

    layers: dict  # "tanh1" -> label and numbers of one hidden layer's output and its gradient
    weights: dict  # "W1" -> label and numbers of one 2-D parameter's gradient
    histograms: dict  # "activations" / "gradients" / "weight_grads" -> {label: (x, density)}


def read_out(net):
    """Each hidden layer's output (after Tanh, else after its last layer) and each weight's grad."""
    layers, weights = {}, {}
    histograms = {"activations": {}, "gradients": {}, "weight_grads": {}}
    index = -1
    for block in net.blocks[:-1]:
        index += len(block)
        out, w = block[-1], block[0].weight
        pre = block[-2] if isinstance(out, Tanh) else out
        t = out.out
        # the lecture's names: the layer's index in the flat list of layers, and its class
        kind = type(out).__name__
        label = f"layer {index} ({kind})"
        layers[f"{kind.lower()}{index}"] = {
            "label": label,
            "act_mean": t.mean().item(),
            "act_std": t.std().item(),
            "saturated_pct": (t.abs() > SATURATED).float().mean().item() * 100
            if isinstance(out, Tanh)
            else None,
            "preact_mean": pre.out.mean().item(),
            "preact_std": pre.out.std().item(),
            "grad_mean": t.grad.mean().item(),
            "grad_std": t.grad.std().item(),
            "weight_grad_data": (w.grad.std() / w.std()).item(),
        }
        histograms["activations"][label] = histogram(t)
        histograms["gradients"][label] = histogram(t.grad)
    for name, w in net.weights().items():
        label = f"{name} {tuple(w.shape)}"
        weights[name] = {
            "label": label,
            "grad_mean": w.grad.mean().item(),
            "grad_std": w.grad.std().item(),
            "grad_data_ratio": (w.grad.std() / w.std()).item(),
        }
        histograms["weight_grads"][label] = histogram(w.grad)
    return ReadOut(layers, weights, histograms)


@dataclass
class DeepResult:
    init: ReadOut  # at the first step: the freshly initialised net
    final: ReadOut | None  # at the last step; None if training diverged
    update_ratios: dict  # "W1" -> log10(std(lr * grad) / std(weight)) per step
    losses: list  # minibatch loss per step, up to the first non-finite one
    train_loss: float | None  # over the whole training split after training; None if diverged
    diverged_at: int | None  # the step (from 1) whose minibatch loss was not finite


def run_deep(cfg, train, X, Y, vocab_size):
    """Train the deep net `train.steps` steps on (X, Y), reading its instruments on the way.

    A non-finite minibatch loss stops training: the result then says at which step (or, at the
    first step, Diverged is raised).
    """
    g = torch.Generator().manual_seed(train.seed)
    net = build_net(cfg, train, X.shape[1], vocab_size, g)
    parameters = net.parameters()
    for p in parameters:
        p.requires_grad = True
    weights = net.weights()
    init = final = diverged_at = None
    losses, ratios = [], []
    for step in range(1, train.steps + 1):
        ix = torch.randint(0, X.shape[0], (train.batch_size,), generator=g)
        loss = F.cross_entropy(net(X[ix]), Y[ix])
        if not torch.isfinite(loss):
            if step == 1:  # nothing to read out
                raise Diverged(train.seed, step, loss.item())
            diverged_at = step
            break
        for layer in net.layers:
            layer.out.retain_grad()
        for p in parameters:
            p.grad = None
        loss.backward()
        if step == 1:
            init = read_out(net)
        if step == train.steps:
            final = read_out(net)
        with torch.no_grad():
            for p in parameters:
                p -= train.lr * p.grad
            ratios.append(
                torch.stack([(train.lr * w.grad).std() / w.std() for w in weights.values()])
            )
        losses.append(loss.item())
    update_ratios = dict(zip(weights, torch.stack(ratios).log10().T.tolist()))
    train_loss = None
    if final is not None:
        with torch.no_grad():  # BatchNorm normalises with the whole split's statistics here
            x = net.C[X].view(X.shape[0], -1)
            for layer in net.layers:
                x = layer(x)
                layer.out = None  # keep one layer's output of the whole split, not all of them
            train_loss = F.cross_entropy(x, Y).item()
    return DeepResult(init, final, update_ratios, losses, train_loss, diverged_at)
