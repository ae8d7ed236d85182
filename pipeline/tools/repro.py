"""`dvc repro` on every core: independent stages run at once, in lanes.

One `dvc repro` runs its stages one at a time. This runs the same DAG as three phases:
the stages that everything else needs (download, split), then the independent branches after
them that hold an out-of-date stage, spread over `--jobs` lanes, each a `dvc repro <its
stages>` running alongside the others, then whatever joins the branches (the report). DVC
still decides what is out of date and records every stage in dvc.lock; a train stage in a
lane trains all its seeds in one process. When stages ran, metrics/machine.json records the
machine (machine.py), which `make check-outputs` reads.

    python -m pipeline.tools.repro [--jobs 2] [--force]
"""

import json
import os
import subprocess
import sys
from graphlib import TopologicalSorter

import click

TRAIN_COST = 8  # a train stage takes about this many times as long as any other stage
MACHINE = "metrics/machine.json"  # the fingerprint of the machine that ran the last stages


def read_dag():
    """(stages, each after those it depends on; {stage: the stages it depends on}), from DVC's
    own graph of the pipeline."""
    from dvc.repo import Repo

    graph = Repo(".").index.graph  # an edge runs from a stage to a stage it depends on
    needs = {stage.addressing: set() for stage in graph.nodes}
    for stage, dependency in graph.edges:
        needs[stage.addressing].add(dependency.addressing)
    return list(TopologicalSorter(needs).static_order()), needs


def out_of_date():
    """The stages `dvc status` finds changed (before any of their upstream reruns)."""
    status = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, check=True)
    return set(json.loads(status.stdout))


def plan(stages, needs, jobs, todo=None):
    """(shared stages, lanes of stages, joining stages).

    Shared: the ancestors of more than one branch. A branch is a connected group of the other
    stages; a stage that depends on more than one branch joins them and runs last. Branches
    with a stage in `todo` (all of them if None) go to the lane with the least estimated work
    so far, the most costly first; the others are up to date and left out.
    """
    # follow the graph from each stage with no dependencies down to where the paths fork
    shared = set()
    frontier = [s for s in stages if not needs[s]]
    while frontier:
        stage = frontier.pop()
        shared.add(stage)
        users = [s for s in stages if stage in needs[s]]
        frontier += [u for u in users if needs[u] <= shared and len(users) == 1]
    branch_of = {}
    for stage in stages:
        if stage in shared:
            continue
        owners = {branch_of[n] for n in needs[stage] - shared}
        if len(owners) > 1 or (owners and None in owners):
            branch_of[stage] = None  # joins two branches: runs after the lanes
        else:
            branch_of[stage] = owners.pop() if owners else stage
    branches = {}
    for stage, root in branch_of.items():
        if root is not None:
            branches.setdefault(root, []).append(stage)
    lanes = [[] for _ in range(jobs)]
    work = [0] * jobs

    def cost(branch):
        return sum(TRAIN_COST if s.startswith("train@") else 1 for s in branch)

    busy = [b for b in branches.values() if todo is None or todo & set(b)]
    for branch in sorted(busy, key=cost, reverse=True):
        lane = work.index(min(work))
        lanes[lane] += branch
        work[lane] += cost(branch)
    joins = [s for s, root in branch_of.items() if root is None]
    return [s for s in stages if s in shared], [lane for lane in lanes if lane], joins


def dvc_repro(stages, force, env=None):
    """A `dvc repro` of exactly `stages` (their upstream is already built)."""
    # the lanes take turns with DVC's repo lock (held while it reads the project and writes
    # dvc.lock, not while a stage's command runs): wait for it rather than fail
    command = ["dvc", "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else [])]
    command += stages
    return subprocess.Popen(command, env=env)


@click.command()
@click.option("--jobs", default=os.cpu_count(), show_default=True, help="lanes run at once")
@click.option("--force", "-f", is_flag=True, help="rerun every stage, as `dvc repro -f`")
def main(jobs, force):
    stages, needs = read_dag()
    shared = plan(stages, needs, jobs)[0]
    if dvc_repro(shared, force).wait():
        sys.exit("Error: a shared stage failed; see DVC's message above")
    # only now, with the shared stages current, does `dvc status` see what their users need
    _, lanes, joins = plan(stages, needs, jobs, None if force else out_of_date())
    # one process per train stage: the lanes already keep every core busy
    env = {**os.environ, "ACTGRAD_WORKERS": "1"}
    running = [dvc_repro(lane, force, env) for lane in lanes]
    if [proc.wait() for proc in running].count(0) < len(running):
        sys.exit(
            "Error: a stage failed and stopped its lane (DVC's message above names it); the "
            "other lanes finished, and the stages that join them did not run"
        )
    if joins and dvc_repro(joins, force).wait():
        sys.exit(f"Error: {', '.join(joins)} failed; see DVC's message above")
    if lanes or joins:  # the outputs are this machine's now
        subprocess.run([sys.executable, "-m", "pipeline.tools.machine", MACHINE], check=True)


if __name__ == "__main__":
    main()
