"""Where a training step's time goes: the engine's matmuls and each piece, at a stage's shapes.

Times, on one thread, the parts of one step of the engine over all seeds of a variant, at
params.yaml's sizes: the step's six batched matmuls, each activation's and each norm's forward
and backward, and each optimizer's update of the parameters of params.yaml's first variant.
Prints µs per model-step (one seed's share), and for scale what one core gets from a large
matmul and what one pass over a hidden layer costs. bench/engine.py times the whole step.

    python bench/step.py [--calls 5000]
"""

import time
from pathlib import Path

import actgrad  # noqa: F401  (before torch: the kernels the stages run with)

# isort: split
import click
import torch

from actgrad.mlp.engine import Engine
from actgrad.mlp.network import init_weights
from actgrad.pieces import activations, choices, norms, optimizers
from actgrad.recipes import read_params

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 27  # '.' and a-z


def seconds_per_call(fn, calls):
    """Mean wall seconds of fn(), after a warm-up."""
    for _ in range(calls // 10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def matmuls(seeds, batch, inputs, hidden):
    """(the six matmuls of a step, their floating-point operations), in the engine's layouts;
    `inputs` is the concatenated embeddings' width."""
    x, w1 = torch.randn(seeds, batch, inputs + 1), torch.randn(seeds, inputs + 1, hidden)
    w2, b2 = torch.randn(seeds, VOCAB, hidden), torch.randn(seeds, VOCAB, 1)
    h, da = torch.randn(seeds, batch, hidden), torch.randn(seeds, batch, hidden)
    dlogits = torch.randn(seeds, VOCAB, batch)

    def step():
        torch.bmm(x, w1)  # the hidden layer (b1 as W1's last row)
        torch.baddbmm(b2, w2, h.transpose(1, 2))  # the logits
        torch.bmm(dlogits, h)  # dW2
        torch.bmm(dlogits.transpose(1, 2), w2)  # dh
        torch.bmm(x.transpose(1, 2), da)  # dW1 and db1
        torch.bmm(w1[:, :inputs], da.transpose(1, 2))  # the embedding's gradient

    flops = 2 * seeds * batch * hidden * (3 * VOCAB + 2 * (inputs + 1) + inputs)
    return step, flops


def large_matmul_gflops(n=1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, 20) / 1e9


def activation_step(activation, shape):
    a, dh = torch.randn(shape), torch.randn(shape)

    def step():
        h = activation.forward(a)
        activation.backward(dh, a, h)

    return step


def norm_step(norm, shape):
    """`shape`: (seeds, batch, hidden units)."""
    a, dout = torch.randn(shape), torch.randn(shape)
    vector = (shape[0], 1, shape[2])
    gain, bias = torch.ones(vector), torch.zeros(vector)
    running = {"mean": torch.zeros(vector), "std": torch.ones(vector)}

    def step():
        _, cache = norm.forward(a, gain, bias, running)
        norm.backward(dout, cache, gain)

    return step


def optimizer_step(variant, optimizer, cfg, block_size):
    """An update of the variant's parameters by `optimizer`, as the engine calls it."""
    variant = variant.model_copy(update={"optimizer": optimizer})
    seeds = range(len(cfg.seeds))
    weights, _ = init_weights(seeds, variant, VOCAB, block_size, cfg.n_embd, cfg.n_hidden)
    engine = Engine(weights, variant)
    engine.gflat.normal_()
    return lambda: optimizer.update(engine.updated, engine.updating, 1e-3, engine.state)


@click.command()
@click.option("--calls", default=5000, show_default=True, help="timed calls of each part")
def main(calls):
    params = read_params(ROOT / "params.yaml")
    cfg, block_size = params.train, params.split.block_size
    seeds, batch, hidden = len(cfg.seeds), cfg.batch_size, cfg.n_hidden
    print(
        f"one thread, torch {torch.__version__}; a step of {seeds} stacked seeds, batch "
        f"{batch}, {hidden} hidden units\n"
    )
    print(f"{'part':<38}{'µs per model-step':>18}")

    def row(label, seconds, note=""):
        print(f"{label:<38}{seconds / seeds * 1e6:>18.1f}  {note}".rstrip(), flush=True)

    with torch.inference_mode():  # as train() runs the engine
        step, flops = matmuls(seeds, batch, block_size * cfg.n_embd, hidden)
        seconds = seconds_per_call(step, calls)
        note = f"{flops / seconds / 1e9:.0f} GFLOP/s; a 1024² matmul: {large_matmul_gflops():.0f}"
        row("the six matmuls", seconds, note)
        a, b = torch.randn(seeds, batch, hidden), torch.randn(seeds, batch, hidden)
        row("one pass over the hidden layer (a * b)", seconds_per_call(lambda: a * b, calls))
        for name, piece in choices(activations.Activation).items():
            step = activation_step(piece(), a.shape)
            row(f"activation {name}", seconds_per_call(step, calls))
        for name, piece in choices(norms.Norm).items():
            step = norm_step(piece(), a.shape)
            row(f"norm {name}", seconds_per_call(step, calls))
        variant = params.variant(next(iter(params.variants)))
        for name, piece in choices(optimizers.Optimizer).items():
            step = optimizer_step(variant, piece(), cfg, block_size)
            row(f"optimizer {name}", seconds_per_call(step, calls))


if __name__ == "__main__":
    main()
