"""The deep network trained as the notebook trains it: autograd, one generator for the init and
the minibatches, the instruments read at the first and the last step, then train and val
evaluated with BatchNorm's running statistics."""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import Diverged
from ..evaluate import split_loss
from .network import build_net, evaluation_logits
from .probes import ReadOut, read_out, spectra


@dataclass
class DeepResult:
    init: ReadOut  # at the first step: the freshly initialised net
    final: ReadOut | None  # at the last step, after its update; None if training diverged
    update_ratios: dict  # "W1" -> log10(std(θ after - θ before) / std(θ after)) per step
    losses: list  # minibatch loss per step, up to the first non-finite one
    split_losses: dict | None  # {train, val} in evaluation mode after training; None if diverged
    diverged_at: int | None  # the step (from 1) whose minibatch loss was not finite
    spectra: dict  # {"init": spectra(...), "final": spectra(...) or None}
    state: dict  # the net's tensors as training left them (DeepNet.state_dict)


def memory_needed(train, block_size):
    """{param: the bytes that a deep run takes at its peak for the part that param sizes}: a
    minibatch through the stack, its outputs and gradients kept (batch_size), each step's loss
    and update:data ratios as Python floats (steps), the fixed batch's Jacobians and their
    singular values in float64 (jacobian_examples)."""
    inputs, H, L = block_size * train.n_embd, train.n_hidden, train.n_layers
    return {
        "batch_size": train.batch_size * H * (L + 1) * 4 * 8,
        "steps": train.steps * (L + 3) * 32,
        "jacobian_examples": train.jacobian_examples * inputs * H * 8 * 3,
    }


def train_deep(seeds, cfg, train, splits, vocab_size, on_chunk=None):
    """run_deep of each seed: a task of compute.py, one DeepResult per seed."""
    return [run_deep(cfg, train, splits, vocab_size, seed, on_chunk) for seed in seeds]


CHUNK = 100  # steps between two calls of on_chunk


def run_deep(cfg, train, splits, vocab_size, seed=None, on_chunk=None):
    """Train the deep net `train.steps` steps on splits["train"] from `seed` (default the
    notebook's, the first of train.seeds), reading its instruments on the way, then evaluate
    train and val with BatchNorm's running statistics, as the notebook does. on_chunk(step,
    losses) every CHUNK steps.

    A non-finite minibatch loss stops training: the result then says at which step (or, at the
    first step, Diverged is raised).
    """
    seed = train.seeds[0] if seed is None else seed
    X, Y = splits["train"]
    g = torch.Generator().manual_seed(seed)
    net = build_net(cfg, train, X.shape[1], vocab_size, g)
    probe_generator = torch.Generator().manual_seed(seed)
    probe = X[torch.randint(0, len(X), (train.jacobian_examples,), generator=probe_generator)]
    spectra_at = {"init": spectra(net, probe), "final": None}
    parameters = net.parameters()
    for p in parameters:
        p.requires_grad = True
    weights = net.weights()
    optimizer = cfg.optimizer
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
                raise Diverged(seed, step, loss.item())
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
        if on_chunk and step % CHUNK == 0:
            on_chunk(step, torch.tensor([losses[-CHUNK:]]))
    update_ratios = dict(zip(weights, torch.stack(ratios).log10().T.tolist()))
    split_losses = None
    if diverged_at is None:
        final = read_out(net)  # the last step's outputs and gradients, its updated weights
        spectra_at["final"] = spectra(net, probe)
        net.train(False)
        logits_of = functools.partial(evaluation_logits, net)
        split_losses = {name: split_loss(logits_of, *splits[name]) for name in ("train", "val")}
    return DeepResult(
        init, final, update_ratios, losses, split_losses, diverged_at, spectra_at, net.state_dict()
    )
