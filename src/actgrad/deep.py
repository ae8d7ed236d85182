"""The lecture's deep network, trained as the notebook does, and the instruments read off it.

The net is the notebook's: an embedding C, then n_layers blocks Linear -> [BatchNorm1d] ->
activation, then an output Linear -> [BatchNorm1d]. It trains with autograd and the optimizer
pieces of optim.py; each layer keeps its last output (`.out`, gradient retained) so that
activations and gradients can be read after the last step, and BatchNorm keeps running
statistics for evaluation, as the notebook's classes do.
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import optim, pieces
from .errors import Diverged
from .instruments import block_means
from .model import split_loss

SATURATED = 0.97  # the notebook's: a tanh output with |t| above this counts as saturated
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
    """The notebook's layer around the BatchNorm piece of pieces.py: the batch's mean and
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
    """A layer applying an activation piece (pieces.py); autograd differentiates its forward."""

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
    norm = pieces.NotebookBatchNorm(momentum=train.bn_momentum, eps=train.bn_eps)
    blocks = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        block = [Linear(fan_in, fan_out, generator, bias=not cfg.batchnorm)]
        if cfg.batchnorm:
            block.append(BatchNorm1d(fan_out, norm))
        if i < train.n_layers:
            block.append(Activation(pieces.activation(cfg.activation)))
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


def histogram(t):
    """(bin centres, density) of a tensor's values."""
    density, edges = torch.histogram(t.detach().flatten().float(), bins=BINS, density=True)
    return ((edges[:-1] + edges[1:]) / 2).tolist(), density.tolist()


@dataclass
class ReadOut:
    """The instruments at one step, read after its backward pass."""

    layers: dict  # "tanh2" -> label and numbers of one hidden layer's output and its gradient
    weights: dict  # "W1" -> label and numbers of one 2-D parameter's gradient
    histograms: dict  # "activations" / "gradients" / "weight_grads" -> {label: (x, density)}


def read_out(net):
    """Each hidden layer's output (after its activation) and each weight's gradient, with the
    notebook's names: the layer's index in the flat list of layers, and its kind."""
    layers, weights = {}, {}
    histograms = {"activations": {}, "gradients": {}, "weight_grads": {}}
    index = -1
    for block in net.blocks[:-1]:
        index += len(block)
        out, w = block[-1], block[0].weight
        t, pre = out.out, block[-2].out
        kind = out.piece.name
        label = f"layer {index} ({kind})"
        layers[f"{kind}{index}"] = {
            "label": label,
            "act_mean": t.mean().item(),
            "act_std": t.std().item(),
            "saturated_pct": (t.abs() > SATURATED).float().mean().item() * 100
            if kind == "tanh"
            else None,
            "preact_mean": pre.mean().item(),
            "preact_std": pre.std().item(),
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


# --- conditioning: singular values of the hidden stack's Jacobian and of each weight ------------


@torch.no_grad()
def stack_jacobians(net, X):
    """d(last hidden output) / d(input embedding) of each example of X: (N, inputs, units).

    Built layer by layer, J <- J W, J <- J · gamma / sqrt(var + eps), J <- J · act'(x);
    BatchNorm's statistics are those of the batch X, held fixed, so each example has its own
    Jacobian, of the map that training differentiates.
    """
    x = net.C[X].view(len(X), -1)
    J = torch.eye(x.shape[1]).expand(len(X), -1, -1)
    for block in net.blocks[:-1]:
        for layer in block:
            if isinstance(layer, Linear):
                J, x = J @ layer.weight, layer(x)
            elif isinstance(layer, BatchNorm1d):
                stats = layer.piece.statistics(x)
                scale = layer.piece.scale(layer.gamma, stats)
                J, x = J * scale[:, None], layer.piece.evaluate(x, layer.gamma, layer.beta, stats)
            else:
                h = layer.piece.forward(x)
                J, x = J * layer.piece.backward(torch.ones_like(x), x, h)[:, None], h
    return J


def spread(values):
    """Largest, smallest, their ratio, and the mean of the squares of singular values."""
    largest, smallest = values.max().item(), values.min().item()
    return {
        "largest": largest,
        "smallest": smallest,
        "ratio": largest / smallest if smallest > 0 else float("inf"),
        "mean_square": (values**2).mean().item(),
    }


def spectra(net, X):
    """The singular values of every example's stack Jacobian and of every Linear's weight:
    their spreads, and the values themselves (for the figure)."""
    # in float64: the smallest singular value of an ill-conditioned float32 matrix would carry
    # the decomposition's own rounding, which differs from CPU to CPU
    jacobian = torch.linalg.svdvals(stack_jacobians(net, X).double())
    weights = {name: torch.linalg.svdvals(w.detach().double()) for name, w in net.weights().items()}
    del weights["C"]
    return {
        "jacobian": spread(jacobian),
        "weights": {name: spread(s) for name, s in weights.items()},
        "values": {"jacobian": jacobian.flatten().tolist()}
        | {name: s.tolist() for name, s in weights.items()},
    }


@dataclass
class DeepResult:
    init: ReadOut  # at the first step: the freshly initialised net
    final: ReadOut | None  # at the last step, after its update; None if training diverged
    update_ratios: dict  # "W1" -> log10(std(θ after - θ before) / std(θ after)) per step
    losses: list  # minibatch loss per step, up to the first non-finite one
    split_losses: dict | None  # {train, val} in evaluation mode after training; None if diverged
    diverged_at: int | None  # the step (from 1) whose minibatch loss was not finite
    spectra: dict  # {"init": spectra(...), "final": spectra(...) or None}
    net: DeepNet  # as training left it, in evaluation mode unless it diverged


def evaluation_logits(net, contexts):
    """The net's logits, keeping one layer's output at a time (not every `.out`)."""
    x = net.C[contexts].view(len(contexts), -1)
    for layer in net.layers:
        x = layer(x)
        layer.out = None
    return x


def run_deep(cfg, train, splits, vocab_size):
    """Train the deep net `train.steps` steps on splits["train"], reading its instruments on the
    way, then evaluate train and val with BatchNorm's running statistics, as the notebook does.

    A non-finite minibatch loss stops training: the result then says at which step (or, at the
    first step, Diverged is raised).
    """
    X, Y = splits["train"]
    g = torch.Generator().manual_seed(train.seed)
    net = build_net(cfg, train, X.shape[1], vocab_size, g)
    probe_generator = torch.Generator().manual_seed(train.seed)
    probe = X[torch.randint(0, len(X), (train.jacobian_examples,), generator=probe_generator)]
    spectra_at = {"init": spectra(net, probe), "final": None}
    parameters = net.parameters()
    for p in parameters:
        p.requires_grad = True
    weights = net.weights()
    optimizer = optim.optimizer(cfg.optimizer)
    # the optimizer pieces take (seeds, rows, cols): one seed, biases and gains as one row
    stacked = [p.data.view(1, -1, p.shape[-1]) for p in parameters]
    state = optimizer.init_state(stacked)
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
        before = {name: w.detach().clone() for name, w in weights.items()}
        with torch.no_grad():
            grads = [p.grad.view(1, -1, p.shape[-1]) for p in parameters]
            optimizer.update(stacked, grads, optimizer.lr_at(step - 1), state)
            ratios.append(
                torch.stack([(w - before[n]).std() / w.std() for n, w in weights.items()])
            )
        losses.append(loss.item())
    update_ratios = dict(zip(weights, torch.stack(ratios).log10().T.tolist()))
    split_losses = None
    if diverged_at is None:
        final = read_out(net)  # the last step's outputs and gradients, its updated weights
        spectra_at["final"] = spectra(net, probe)
        net.train(False)
        logits_of = functools.partial(evaluation_logits, net)
        split_losses = {name: split_loss(logits_of, *splits[name]) for name in ("train", "val")}
    return DeepResult(
        init, final, update_ratios, losses, split_losses, diverged_at, spectra_at, net
    )


# --- what the deep stage writes ---------------------------------------------------------------

SERIES_EVERY = 10  # each per-step curve is kept as the mean of every 10 steps


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _spread_only(spectra):
    """The spectra without the singular values themselves (they go to the figure)."""
    return spectra and {k: v for k, v in spectra.items() if k != "values"}


def metrics(result, cfg):
    """The JSON: losses, each read-out's numbers (init, and final unless training diverged) and
    the spread of the singular values at both."""
    losses = result.split_losses or {}
    return {
        "optimizer": cfg.optimizer.name,
        "init_loss": result.losses[0],
        "final_batch_loss": result.losses[-1],
        "train_loss": losses.get("train"),
        "val_loss": losses.get("val"),
        "steps_run": len(result.losses),
        "diverged_at_step": result.diverged_at,
        "update_ratio_log10": {k: _finite(v[-1]) for k, v in result.update_ratios.items()},
        "init": {"layers": result.init.layers, "weights": result.init.weights},
        "final": result.final and {"layers": result.final.layers, "weights": result.final.weights},
        "spectra": {moment: _spread_only(s) for moment, s in result.spectra.items()},
    }


def series(result):
    """(columns, rows) of the series CSV: the batch loss and each weight's log10 update:data,
    as means of SERIES_EVERY steps, each row at the first step of its block (from step 1)."""
    curves = {"batch_loss": result.losses}
    curves |= {f"update_ratio_log10.{k}": r for k, r in result.update_ratios.items()}
    values = torch.tensor(list(curves.values()), dtype=torch.float64).T
    means = block_means(values, range(len(values)), SERIES_EVERY).tolist()
    return ["step", *curves], [(k * SERIES_EVERY + 1, *row) for k, row in enumerate(means)]
