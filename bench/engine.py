"""Throughput of the training engine, as ratios that hold on any CPU.

Times, each single-threaded and in a process of its own, with the kernels the stages use:
- the lecture's loop transcribed (autograd, one seed, the Kaiming recipe);
- the engine training every variant of params.yaml on 5 seeds, as one process alone and as one
  process per core at once;
- an idiomatic PyTorch peer on the same 5 seeds: a torch.func ensemble (vmap of grad over the
  stacked seeds' parameters, then SGD), eager and under torch.compile;
- the machine's own limit: a one-thread 1024² sgemm's GFLOP/s, turned into the µs that a
  model-step's matmul FLOPs take at that rate.
Prints µs per model-step (one seed's training step) and each figure as a ratio: the engine is
so many times the lecture loop, so many times the compiled peer, at so many times the limit.
A stage trains 200,000 steps; the default 20,000 keep the once-per-run costs (drawing the
weights, counting units) near their share of a real run.

    python bench/engine.py [--steps 20000]
"""

import actgrad  # noqa: F401  (before torch: the kernels the stages run with)

# isort: split
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 5
PEER = "kaiming"  # the recipe the lecture loop and the torch.func peer train


def load_train_split():
    from actgrad.data.examples import make_splits
    from actgrad.data.names import default_cache_dir, read_words

    names = Path(os.environ.get("ACTGRAD_NAMES", default_cache_dir() / "names.txt"))
    _, splits = make_splits(read_words(names.read_text()), 3, (0.8, 0.1, 0.1), 42)
    return splits["train"]


def func_ensemble(params, X, Y, compiled):
    """A run(steps) of the torch.func peer: the PEER variant's 5 seeds stacked, each step a
    vmap of grad of the plain model's loss over them, then SGD with the lecture's lr."""
    from actgrad.mlp.network import init_weights

    cfg, variant = params.train, params.variant(PEER)
    weights, generators = init_weights(range(SEEDS), variant, 27, 3, cfg.n_embd, cfg.n_hidden)
    p = {name: t.clone() for name, t in weights.params.items()}

    def loss(w, Xb, Yb):
        h = torch.tanh(w["C"][Xb].view(len(Xb), -1) @ w["W1"] + w["b1"])
        return F.cross_entropy(h @ w["W2"] + w["b2"], Yb)

    grads = torch.func.vmap(torch.func.grad(loss))

    def step(w, Xb, Yb, lr):
        g = grads(w, Xb, Yb)
        return {name: w[name] - lr * g[name] for name in w}

    step = torch.compile(step) if compiled else step

    def run(n):
        nonlocal p
        for i in range(n):
            ix = torch.stack(
                [torch.randint(0, len(X), (cfg.batch_size,), generator=g) for g in generators]
            )
            p = step(p, X[ix], Y[ix], 0.1 if i < n // 2 else 0.01)

    return run


def time_one(program, steps):
    """Seconds per training step of `program`: "lecture", "func", "func-compiled" or a variant's
    name, in this process."""
    from actgrad.mlp.engine import train_group
    from actgrad.recipes import read_params

    sys.path.insert(0, str(ROOT / "tests"))
    from lecture import RECIPES, lecture_loop

    X, Y = load_train_split()
    params = read_params(ROOT / "params.yaml")
    if program == "lecture":

        def run(n):
            return lecture_loop(X, Y, RECIPES[PEER], n, n)

    elif program.startswith("func"):
        run = func_ensemble(params, X, Y, compiled=program == "func-compiled")
    else:

        def run(n):
            cfg = params.train.model_copy(update={"steps": n, "seeds": tuple(range(SEEDS))})
            return train_group(cfg.seeds, params.variant(program), cfg, X, Y, 27)

    run(200)  # warm up (and compile)
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def measure(program, steps, processes, env=None):
    """µs per model-step with `processes` copies at once (the slowest copy's)."""
    cmd = [sys.executable, __file__, "--worker", program, "--steps", str(steps)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)
    ]
    outputs = [p.communicate()[0] for p in procs]
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise click.ClickException(
            f"measuring {program!r} failed (exit {failed[0]}; its error is above); rerun it "
            f"alone with: python bench/engine.py --worker {program} --steps {steps}"
        )
    per_step = [json.loads(out)["seconds_per_step"] for out in outputs]
    seeds = 1 if program == "lecture" else SEEDS
    return max(per_step) / seeds * 1e6


def limit_us_per_model_step(params):
    """The µs that one model-step's matmuls take at a one-thread 1024² sgemm's rate."""
    cfg, block = params.train, params.split.block_size
    inputs, hidden, vocab, batch = block * cfg.n_embd, cfg.n_hidden, 27, cfg.batch_size
    flops = 2 * batch * hidden * (3 * vocab + 2 * (inputs + 1) + inputs)  # the six matmuls
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    start, calls = time.perf_counter(), 20
    for _ in range(calls):
        a @ b
    gflops = 2 * 1024**3 * calls / (time.perf_counter() - start) / 1e9
    return flops / (gflops * 1e9) * 1e6, gflops


@click.command()
@click.option("--steps", default=20000, show_default=True)
@click.option("--worker", default=None, hidden=True)
def main(steps, worker):
    if worker:
        print(json.dumps({"seconds_per_step": time_one(worker, steps)}))
        return
    cores = os.cpu_count()
    from actgrad.recipes import read_params

    params = read_params(ROOT / "params.yaml")
    limit, gflops = limit_us_per_model_step(params)
    print(f"{cores} cores, torch {torch.__version__}, {steps} steps per measurement, one thread")
    print(f"machine limit: a 1024² sgemm runs {gflops:.1f} GFLOP/s, so a model-step's matmuls")
    print(f"take {limit:.1f} µs at best\n")
    lecture = measure("lecture", steps, 1)
    # Inductor's on-disk cache does not key its kernels by ATEN_CPU_CAPABILITY: one compiled
    # under another setting crashed the compiled peer (double free), so each run compiles afresh.
    with tempfile.TemporaryDirectory(prefix="actgrad-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        peer = {p: measure(p, steps, 1, env) for p in ("func", "func-compiled")}
    print(
        f"{'program':<30}{'µs/model-step':>14}{f'{cores} procs':>10}{'vs lecture':>12}"
        f"{'vs compiled peer':>18}{'vs limit':>10}"
    )

    def row(label, alone, together=None):
        best = min(alone, together or alone)
        print(
            f"{label:<30}{alone:>14.1f}{(f'{together:.1f}' if together else ''):>10}"
            f"{lecture / best:>11.2f}x{peer['func-compiled'] / best:>17.2f}x{best / limit:>9.2f}x",
            flush=True,
        )

    row("lecture loop (autograd)", lecture)
    row("torch.func ensemble", peer["func"])
    row("torch.func, torch.compile", peer["func-compiled"])
    for variant in params.variants:
        row(f"engine: {variant}", measure(variant, steps, 1), measure(variant, steps, cores))


if __name__ == "__main__":
    main()
