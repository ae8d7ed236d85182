"""Wall time and memory of the whole study, against its target, then a `dvc repro` with nothing
to do.

Runs the forced full study once, as `make repro-all` does: `python -m pipeline.tools.repro --force`
(independent stages at once, one process per train stage); with --plain, a plain `dvc repro -f`
too (one stage at a time, each train stage spreading its seeds over the cores). Prints each
one's wall time against the target of 30 s per train stage and 5 s per other stage, the peak
resident memory of the largest single process (getrusage) and of the whole process tree at once
(sampled every 0.1 s). Run from the project root with the pipeline's data cache seeded.

    python bench/repro.py [--plain]
"""

import resource
import subprocess
import sys
import time

import click
import psutil

from actgrad.params import load_yaml

TRAIN_TARGET, OTHER_TARGET = 30, 5  # seconds per train stage, per other stage
GIB = 1024**3


def run_sampled(cmd):
    """Run cmd; return (seconds, peak summed RSS of it and its descendants in bytes)."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}")
    return time.perf_counter() - start, peak


def target():
    """(train stages, other stages, target seconds) of the study in dvc.lock."""
    with open("dvc.lock") as f:
        stages = list(load_yaml(f.read())["stages"])
    train = sum(s.startswith("train@") for s in stages)
    return train, len(stages) - train, TRAIN_TARGET * train + OTHER_TARGET * (len(stages) - train)


@click.command()
@click.option("--plain/--no-plain", default=False, help="also time a plain `dvc repro -f`")
def main(plain):
    runs = {
        "python -m pipeline.tools.repro --force": [
            sys.executable,
            *("-m", "pipeline.tools.repro", "-f"),
        ]
    }
    if plain:
        runs["dvc repro -f"] = ["dvc", "repro", "-f"]
    train, other, budget = target()
    print(f"{train} train stages, {other} other stages: target {budget} s")
    tree_peak = 0
    for label, cmd in runs.items():
        seconds, peak = run_sampled(cmd)
        tree_peak = max(tree_peak, peak)
        print(f"{label:<34} wall {seconds:6.1f} s ({seconds / budget:.0%} of the target)")
        print(f"{'':<34} {seconds / (train + other):.1f} s per stage on average")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"peak RSS: largest process {largest / GIB:.2f} GiB, all at once {tree_peak / GIB:.2f}")
    noop, _ = run_sampled(["dvc", "repro"])
    print(f"dvc repro (nothing to do)          wall {noop:6.1f} s")


if __name__ == "__main__":
    main()
