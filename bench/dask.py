"""What Dask costs the study, and what more cores would give it.

Measures, on a LocalCluster of single-threaded workers as `make repro` starts one:
- a worker's start-up (a LocalCluster of one, and an `actgrad worker` joining a scheduler);
- a task's round trip through the scheduler (submit, run nothing, gather), the median of 50;
- shipping the split's training tensors to every worker (`Client.scatter(broadcast=True)`,
  once per stage), the median of 5;
- one seed trained alone against five seeds trained as one group, in this process.

Then projects the study and a sweep of 100 variants on 5 seeds onto 8, 64 and 512 cores, from
the stage times that the last `make repro` (or bench/repro.py) logged in .dvc/tmp/repro/*.log:
each train stage's task time ("trained ... in Ts") and stage time ("done in Ds"), and the gap
between a stage's end and the next start in its lane (DVC and the process's start). A run takes
max(critical path, total work / cores); the critical path is the longest chain of stages, a
train stage counted with its seeds one task each where there are cores for that.

    python -m bench.dask [--steps 2000]   (from the project root, which holds pipeline/)
"""

import actgrad  # noqa: F401  (the kernel pins, before torch)

# isort: split
import functools
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import click

from actgrad import compute
from actgrad.mlp.engine import train_group
from actgrad.recipes import read_params
from pipeline.files import Split

LOGS = Path(".dvc/tmp/repro")
LINE = re.compile(r"^\[(\d\d:\d\d:\d\d)\] (\S+): (.*)$")
CHAIN = ("download", "split", "train@batchnorm", "calibrate", "fold", "report", "tour")


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def start_up():
    """(seconds for a LocalCluster of one worker to be ready, for `actgrad worker` to join)."""
    start = time.perf_counter()
    with compute.local_cluster(1) as client:
        cluster = time.perf_counter() - start
        address = client.scheduler.address
        worker = [os.path.join(os.path.dirname(sys.executable), "actgrad"), "worker", address]
        start = time.perf_counter()
        process = subprocess.Popen(worker, stderr=subprocess.DEVNULL)
        client.wait_for_workers(2, timeout=60)
        joined = time.perf_counter() - start
        process.terminate()
        process.wait()
    return cluster, joined


def round_trip_and_scatter(tensors):
    """(median seconds of a no-op task's round trip, of broadcasting `tensors`)."""
    with compute.local_cluster(2) as client:
        trips = []
        for i in range(50):
            seconds, _ = timed(lambda n: client.submit(int, n, pure=False).result(), i)
            trips.append(seconds)
        ship = functools.partial(client.scatter, broadcast=True, hash=False)
        scatters = [timed(ship, tensors)[0] for _ in range(5)]
    return statistics.median(trips), statistics.median(scatters)


def one_and_five(params, split, steps):
    """Seconds per step of one seed alone and of five seeds as one group (kaiming)."""
    train = params.train.model_copy(update={"steps": steps})
    X, Y = split["train"]
    vocab, times = len(split["vocab"]), []
    for seeds in (train.seeds[:1], train.seeds[:5]):
        seconds, _ = timed(train_group, seeds, params.variant("kaiming"), train, X, Y, vocab)
        times.append(seconds / steps)
    return times


def logged_stages():
    """{stage: (seconds in its lane, seconds of its training task or None)} from the lane
    logs: a stage's time is from its start line to its end line, plus the gap before the next
    stage of its lane starts."""
    stages = {}
    for log in sorted(LOGS.glob("*.log")):
        events, midnights = [], timedelta(0)
        for line in log.read_text().splitlines():
            match = LINE.match(line)
            if match:
                clock, stage, words = match.groups()
                at = datetime.strptime(clock, "%H:%M:%S") + midnights
                if events and at < events[-1][0]:  # the clock passed midnight
                    midnights += timedelta(days=1)
                    at += timedelta(days=1)
                events.append((at, stage, words))
        starts = [i for i, e in enumerate(events) if i == 0 or events[i - 1][1] != e[1]]
        for n, i in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(events) - 1
            stage = events[i][1]
            seconds = max((events[end][0] - events[i][0]).total_seconds(), 1.0)
            task = [re.search(r" in (\d+)s$", w) for _, s, w in events if s == stage]
            trained = [float(m.group(1)) for m in task if m and "trained on" in m.string]
            stages[stage] = (seconds, max(trained) if trained else None)
    return stages


def projection(stages, alone_ratio, seeds):
    """Rows (cores, study seconds, its critical path, sweep seconds, its critical path)."""
    trains = [s for s in stages if s.startswith("train@")]
    work = sum(seconds for seconds, _ in stages.values())
    mean_train = statistics.mean(stages[s][0] for s in trains)
    mean_task = statistics.mean(stages[s][1] or 0 for s in trains)
    rows = []
    for cores in (8, 64, 512):
        split_at = functools.partial(spread, cores=cores, seeds=seeds, alone_ratio=alone_ratio)
        chain = sum(split_at(*stages[s], len(trains)) for s in CHAIN if s in stages)
        sweep_chain = split_at(mean_train, mean_task, 100)
        study, sweep = max(chain, work / cores), max(sweep_chain, 100 * mean_train / cores)
        rows.append((cores, study, chain, sweep, sweep_chain))
    return rows


def spread(seconds, task, train_stages, cores, seeds, alone_ratio):
    """A train stage's time; its task split into one seed each where the cores can take every
    seed of `train_stages` stages at once."""
    if task and cores >= seeds * train_stages:
        return seconds - task + task * alone_ratio
    return seconds


@click.command()
@click.option("--steps", default=2000, show_default=True, help="steps of the 1-vs-5-seed timing")
def main(steps):
    params = read_params("params.yaml")
    split = Split.read("data/split")
    cluster, joined = start_up()
    print(f"a LocalCluster of one worker, ready in    {cluster:6.2f} s")
    print(f"an `actgrad worker` joining a scheduler  {joined:6.2f} s")
    trip, scatter = round_trip_and_scatter(split["train"])
    megabytes = sum(t.nbytes for t in split["train"]) / 1e6
    print(f"a task's round trip (median of 50)       {trip * 1e3:6.1f} ms")
    print(
        f"the train split ({megabytes:.1f} MB) to 2 workers {scatter * 1e3:6.1f} ms (median of 5)"
    )
    one, five = one_and_five(params, split, steps)
    print(
        f"a step of 1 seed {one * 1e6:.0f} µs, of 5 seeds as one group {five * 1e6:.0f} µs: "
        f"a seed alone costs {one / (five / 5):.2f}x its share of a group"
    )
    stages = logged_stages()
    if not stages:
        sys.exit(f"{LOGS}: no lane logs; run `make repro-all` first")
    seeds = len(params.train.seeds)
    print(f"\nprojection from the {len(stages)} stages of the last make repro (seconds):")
    header = ("cores", "study", "critical path", "100-variant sweep", "critical path")
    print("{:>6} {:>8} {:>14} {:>18} {:>14}".format(*header))
    for cores, study, chain, sweep, sweep_chain in projection(stages, one / five, seeds):
        print(f"{cores:>6} {study:8.0f} {chain:14.0f} {sweep:18.0f} {sweep_chain:14.0f}")
    print(f"critical path of the study: {' → '.join(s for s in CHAIN if s in stages)}")


if __name__ == "__main__":
    main()
