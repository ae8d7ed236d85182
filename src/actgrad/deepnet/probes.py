"""What is read off the deep network: each hidden layer's output and gradient and each weight's
gradient after a step (the notebook's plots), and the singular values of the hidden stack's
Jacobian and of every weight (the conditioning study)."""

from dataclasses import dataclass

import torch

from .network import SATURATED, BatchNorm1d, Linear

BINS = 100  # histogram bins, torch.histogram's default as in the lecture


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
