"""The whole study, forced, two ways in one run: the lanes with every stage training in its own
process (`python -m pipeline.tools.repro --force --no-cluster`, the way before Dask), then the
lanes training on one shared LocalCluster (`make repro-all`'s way); then a `dvc repro` with
nothing to do.

For each way: the wall time against the target of 30 s per train stage and 5 s per other stage,
how busy the cores were (the CPU seconds of the whole process tree over wall time × cores), and
the peak resident memory of the process tree (sampled every 0.1 s); then the cluster's time over
the lanes', and whether the two ways wrote the same bits (every output's md5 in dvc.lock).
With --plain, a plain `dvc repro -f` too (one stage at a time). Run from the project
root with the data cache seeded; the outputs are rewritten (with the same bits on one machine).

    python bench/repro.py [--plain]
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

import click
import psutil

from actgrad.params import load_yaml

TRAIN_TARGET, OTHER_TARGET = 30, 5  # seconds per train stage, per other stage
GIB = 1024**3
REPRO = [sys.executable, "-m", "pipeline.tools.repro", "--force"]


def cpu_seconds():
    """User and system seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sampled(cmd):
    """Run cmd, its output kept aside (shown if it fails); (seconds, CPU seconds of its tree,
    peak summed RSS of its tree in bytes)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    output = tempfile.TemporaryFile()
    proc = psutil.Popen(cmd, stdout=output, stderr=subprocess.STDOUT)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode:
        output.seek(0)
        sys.stderr.write(output.read().decode(errors="replace")[-3000:])
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}")
    return time.perf_counter() - start, cpu_seconds() - cpu, peak


def locked_stages():
    """dvc.lock's stages, as the last run left them."""
    with open("dvc.lock") as f:
        return load_yaml(f.read())["stages"]


def output_hashes(stages):
    """{path: md5} of every stage output that dvc.lock records."""
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def target(stages):
    """(train stages, other stages, target seconds) of the study."""
    train = sum(s.startswith("train@") for s in stages)
    return train, len(stages) - train, TRAIN_TARGET * train + OTHER_TARGET * (len(stages) - train)


@click.command()
@click.option("--plain/--no-plain", default=False, help="also time a plain `dvc repro -f`")
def main(plain):
    runs = {
        "lanes, each stage in its process": REPRO + ["--no-cluster"],
        "lanes on one LocalCluster": REPRO,
    }
    if plain:
        runs["dvc repro -f"] = ["dvc", "repro", "-f"]
    cores = os.cpu_count()
    walls, hashes = {}, {}
    for label, cmd in runs.items():
        seconds, cpu, peak = run_sampled(cmd)
        stages = locked_stages()
        walls[label], hashes[label] = seconds, output_hashes(stages)
        if len(walls) == 1:  # dvc.lock now holds every stage of params.yaml
            train, other, budget = target(stages)
            print(f"{train} train stages, {other} other stages: target {budget} s; {cores} cores")
        print(
            f"{label:<34} wall {seconds:6.1f} s ({seconds / budget:.0%} of the target), "
            f"cores busy {cpu / (seconds * cores):.0%}, peak RSS {peak / GIB:.2f} GiB"
        )
    ratio = walls["lanes on one LocalCluster"] / walls["lanes, each stage in its process"]
    print(f"the cluster's wall time over the lanes': {ratio:.3f}x")
    first, *others = hashes.values()
    differ = sorted(path for other in others for path in first if other.get(path) != first[path])
    print(
        f"outputs of the ways: {len(first)} bit-identical"
        if not differ
        else f"outputs of the ways: {len(differ)} of {len(first)} differ: {', '.join(differ)}"
    )
    noop, _, _ = run_sampled(["dvc", "repro"])
    print(f"dvc repro (nothing to do)          wall {noop:6.1f} s")


if __name__ == "__main__":
    main()
