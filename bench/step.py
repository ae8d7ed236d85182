"""Where a training step's time goes: the engine's matmuls and each piece, at a stage's shapes.

Times, on one thread, the parts of one step of the engine over 5 stacked seeds (batch 32, 200
hidden units, 27 outputs, 3 x 10 embedding inputs): the step's six batched matmuls, each
activation's and each norm's forward and backward, and each optimizer's update of the
parameters of params.yaml's first variant. Prints µs per model-step (one seed's share), and for
scale what one core gets from a large matmul and what one pass over a hidden layer costs.
bench/engine.py times the whole step.

    python bench/step.py [--calls 5000]
"""

import dataclasses
import time
from pathlib import Path

import click
import torch
import yaml

from actgrad.config import load_params
from actgrad.model import init_weights
from actgrad.optim import OPTIMIZERS
from actgrad.pieces import ACTIVATIONS, NORMS
from actgrad.train import Engine

ROOT = Path(__file__).resolve().parents[1]
SEEDS, BATCH, BLOCK, EMBD, HIDDEN, VOCAB = 5, 32, 3, 10, 200, 27
INPUTS = BLOCK * EMBD  # the concatenated embeddings


def seconds_per_call(fn, calls):
    """Mean wall seconds of fn(), after a warm-up."""
    for _ in range(calls // 10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def matmuls():
    """(the six matmuls of a step, their floating-point operations), in the engine's layouts."""
    x, w1 = torch.randn(SEEDS, BATCH, INPUTS + 1), torch.randn(SEEDS, INPUTS + 1, HIDDEN)
    w2, b2 = torch.randn(SEEDS, VOCAB, HIDDEN), torch.randn(SEEDS, VOCAB, 1)
    h, da = torch.randn(SEEDS, BATCH, HIDDEN), torch.randn(SEEDS, BATCH, HIDDEN)
    dlogits = torch.randn(SEEDS, VOCAB, BATCH)

    def step():
        torch.bmm(x, w1)  # the hidden layer (b1 as W1's last row)
        torch.baddbmm(b2, w2, h.transpose(1, 2))  # the logits
        torch.bmm(dlogits, h)  # dW2
        torch.bmm(dlogits.transpose(1, 2), w2)  # dh
        torch.bmm(x.transpose(1, 2), da)  # dW1 and db1
        torch.bmm(w1[:, :INPUTS], da.transpose(1, 2))  # the embedding's gradient

    flops = 2 * SEEDS * BATCH * HIDDEN * (3 * VOCAB + 2 * (INPUTS + 1) + INPUTS)
    return step, flops


def large_matmul_gflops(n=1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, 20) / 1e9


def activation_step(activation):
    a, dh = torch.randn(SEEDS, BATCH, HIDDEN), torch.randn(SEEDS, BATCH, HIDDEN)

    def step():
        h = activation.forward(a)
        activation.backward(dh, a, h)

    return step


def norm_step(norm):
    a, dout = torch.randn(SEEDS, BATCH, HIDDEN), torch.randn(SEEDS, BATCH, HIDDEN)
    gain, bias = torch.ones(SEEDS, 1, HIDDEN), torch.zeros(SEEDS, 1, HIDDEN)
    running = {"mean": torch.zeros(SEEDS, 1, HIDDEN), "std": torch.ones(SEEDS, 1, HIDDEN)}

    def step():
        _, cache = norm.forward(a, gain, bias, running)
        norm.backward(dout, cache, gain)

    return step


def optimizer_step(variant, optimizer):
    """An update of the variant's parameters by `optimizer`, as the engine calls it."""
    variant = dataclasses.replace(variant, optimizer=optimizer)
    weights, _ = init_weights(range(SEEDS), variant, VOCAB, BLOCK, EMBD, HIDDEN)
    engine = Engine(weights, variant)
    engine.gflat.normal_()
    return lambda: optimizer.update(engine.updated, engine.updating, 1e-3, engine.state)


@click.command()
@click.option("--calls", default=5000, show_default=True, help="timed calls of each part")
def main(calls):
    torch.set_num_threads(1)
    params = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    print(
        f"one thread, torch {torch.__version__}; a step of {SEEDS} stacked seeds, batch "
        f"{BATCH}, {HIDDEN} hidden units\n"
    )
    print(f"{'part':<38}{'µs per model-step':>18}")

    def row(label, seconds, note=""):
        print(f"{label:<38}{seconds / SEEDS * 1e6:>18.1f}  {note}".rstrip(), flush=True)

    with torch.inference_mode():  # as train() runs the engine
        step, flops = matmuls()
        seconds = seconds_per_call(step, calls)
        note = f"{flops / seconds / 1e9:.0f} GFLOP/s; a 1024² matmul: {large_matmul_gflops():.0f}"
        row("the six matmuls", seconds, note)
        a, b = torch.randn(SEEDS, BATCH, HIDDEN), torch.randn(SEEDS, BATCH, HIDDEN)
        row("one pass over the hidden layer (a * b)", seconds_per_call(lambda: a * b, calls))
        for name, activation in ACTIVATIONS.items():
            row(f"activation {name}", seconds_per_call(activation_step(activation()), calls))
        for name, norm in NORMS.items():
            row(f"norm {name}", seconds_per_call(norm_step(norm()), calls))
        variant = next(iter(params.variants.values()))
        for name, optimizer in OPTIMIZERS.items():
            row(f"optimizer {name}", seconds_per_call(optimizer_step(variant, optimizer()), calls))


if __name__ == "__main__":
    main()
