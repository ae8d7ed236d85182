"""Throughput of the training loop: the lecture's plain loop vs the batched engine.

Times (a) the lecture loop transcribed (autograd, one seed), (b) the engine with 1 seed and
(c) with 5 seeds, on the same data and variant (Kaiming init), each single-threaded, run as one
process alone and as one process per core at once. Prints µs per model-step (one seed's
training step), model-steps per second of the whole machine, and the ratios to the lecture's
best setting. Then, for one train stage alone, the two ways to use a second core: intra-op
threads, or the seeds split over two processes.

    python bench/engine.py [--steps 4000]
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
KAIMING = dict(w1_scale=5 / 3, w1_fan_in=True, b1_scale=0.01, w2_scale=0.01, b2_scale=0.0)


def load_train_split():
    from actgrad.data import default_cache_dir, make_splits, read_words

    names = Path(os.environ.get("ACTGRAD_NAMES", default_cache_dir() / "names.txt"))
    _, splits = make_splits(read_words(names.read_text()), 3, (0.8, 0.1, 0.1), 42)
    return splits["train"]


PROGRAMS = {
    "lecture": "(a) lecture loop",
    "engine 1 seed": "(b) engine, 1 seed",
    "engine 5 seeds": "(c) engine, 5 seeds",
}
STAGE_SETTINGS = {
    "engine 5 seeds, 2 threads": "5 seeds, 2 intra-op threads",
    "engine 5 seeds, 2 workers": "5 seeds over 2 processes (2+3)",
}


def seeds_of(kind):
    return 1 if kind == "lecture" else int(kind.split()[1])


def time_one(kind, steps):
    """Seconds per training step of one program of `kind`, in this process."""
    from actgrad.config import TrainConfig, Variant
    from actgrad.train import train_seeds

    sys.path.insert(0, str(ROOT / "tests"))
    from lecture import lecture_loop

    X, Y = load_train_split()
    variant = Variant(**KAIMING)
    seeds = tuple(range(seeds_of(kind)))
    threads = 2 if "2 threads" in kind else 1
    workers = 2 if "2 workers" in kind else 1

    def run(n):
        torch.set_num_threads(threads)
        if kind == "lecture":
            return lecture_loop(X, Y, variant, n, n)
        cfg = TrainConfig(steps=n, lr_decay_step=n, seeds=seeds)
        if threads > 1:  # train_seeds pins one thread per process; here we want two
            from actgrad.model import init_weights
            from actgrad.train import train

            weights, generators = init_weights(seeds, variant, 27, 3, cfg.n_embd, cfg.n_hidden)
            return train(weights, generators, X, Y, cfg)
        return train_seeds(seeds, variant, cfg, X, Y, 27, workers)

    run(200)  # warm up
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def measure(kind, steps, processes):
    """Model-steps per second of the machine with `processes` copies running at once."""
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    per_step = [json.loads(p.communicate()[0])["seconds_per_step"] for p in procs]
    return sum(seeds_of(kind) / s for s in per_step), max(per_step) / seeds_of(kind)


@click.command()
@click.option("--steps", default=4000, show_default=True)
@click.option("--worker", default=None, hidden=True)
def main(steps, worker):
    if worker:
        print(json.dumps({"seconds_per_step": time_one(worker, steps)}))
        return
    cores = os.cpu_count()
    print(f"{cores} cores, torch {torch.__version__}, {steps} steps per measurement\n")
    print(f"{'program':<34}{'processes':>10}{'µs/model-step':>16}{'model-steps/s':>16}")
    best = {}
    for kind, label in PROGRAMS.items():
        for processes in sorted({1, cores}):
            rate, per_model_step = measure(kind, steps, processes)
            best[kind] = max(best.get(kind, 0), rate)
            print(f"{label:<34}{processes:>10}{per_model_step * 1e6:>16.1f}{rate:>16,.0f}")
    print("\nbest setting of each, whole machine:")
    for kind, label in PROGRAMS.items():
        ratio = best[kind] / best["lecture"]
        print(f"  {label:<32}{best[kind]:>10,.0f} model-steps/s  {ratio:.2f}x the lecture loop")
    print("\none train stage (dvc repro runs stages one at a time): how to use both cores")
    for kind, label in {"engine 5 seeds": "5 seeds, 1 thread", **STAGE_SETTINGS}.items():
        # the worker process starts in ~2 s, paid once per stage: time a stage-sized run
        rate, per_model_step = measure(kind, steps * 10 if "workers" in kind else steps, 1)
        print(f"  {label:<32}{per_model_step * 1e6:>10.1f} µs/model-step {rate:>10,.0f} /s")


if __name__ == "__main__":
    main()
