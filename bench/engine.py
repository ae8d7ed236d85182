"""Throughput of the training engine against the lecture's plain loop, for every variant.

Times (a) the lecture loop transcribed (autograd, one seed, the Kaiming recipe) and (b) the
engine training every variant of params.yaml on 5 seeds, each single-threaded, as one process
alone and as one process per core at once. Prints µs per model-step (one seed's training step),
model-steps per second of the whole machine, and each variant's best rate as a multiple of the
lecture loop's best. A stage trains 200,000 steps; the default 20,000 keep the once-per-run
costs (drawing the weights, counting units) near their share of a real run.

    python bench/engine.py [--steps 20000]
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 5


def load_train_split():
    from actgrad.data import default_cache_dir, make_splits, read_words

    names = Path(os.environ.get("ACTGRAD_NAMES", default_cache_dir() / "names.txt"))
    _, splits = make_splits(read_words(names.read_text()), 3, (0.8, 0.1, 0.1), 42)
    return splits["train"]


def time_one(program, steps):
    """Seconds per training step of `program` ("lecture" or a variant's name), this process."""
    from actgrad.config import load_params
    from actgrad.parallel import train_group

    sys.path.insert(0, str(ROOT / "tests"))
    from lecture import RECIPES, lecture_loop

    X, Y = load_train_split()
    params = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    torch.set_num_threads(1)

    def run(n):
        if program == "lecture":
            return lecture_loop(X, Y, RECIPES["kaiming"], n, n)
        cfg = dataclasses.replace(params.train, steps=n, seeds=tuple(range(SEEDS)))
        return train_group(cfg.seeds, params.variants[program], cfg, X, Y, 27)

    run(200)  # warm up
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def measure(program, steps, processes):
    """(model-steps per second of the machine, µs per model-step) with `processes` copies."""
    cmd = [sys.executable, __file__, "--worker", program, "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    per_step = [json.loads(p.communicate()[0])["seconds_per_step"] for p in procs]
    seeds = 1 if program == "lecture" else SEEDS
    return sum(seeds / s for s in per_step), max(per_step) / seeds * 1e6


@click.command()
@click.option("--steps", default=20000, show_default=True)
@click.option("--worker", default=None, hidden=True)
def main(steps, worker):
    if worker:
        print(json.dumps({"seconds_per_step": time_one(worker, steps)}))
        return
    cores = os.cpu_count()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    print(f"{cores} cores, torch {torch.__version__}, {steps} steps per measurement")
    print(f"engine: {SEEDS} seeds per process, one thread; lecture loop: one seed\n")
    header = f"{'program':<28}" + "".join(
        f"{f'{p} proc µs/step':>18}{f'{p} proc steps/s':>18}" for p in sorted({1, cores})
    )
    print(header + f"{'best vs lecture':>17}")
    lecture = None
    for program in ["lecture", *params["variants"]]:
        rates, line = [], f"{'lecture loop' if program == 'lecture' else program:<28}"
        for processes in sorted({1, cores}):
            rate, per_model_step = measure(program, steps, processes)
            rates.append(rate)
            line += f"{per_model_step:>18.1f}{rate:>18,.0f}"
        lecture = lecture or max(rates)
        print(f"{line}{max(rates) / lecture:>16.2f}x", flush=True)


if __name__ == "__main__":
    main()
