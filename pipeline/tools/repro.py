"""`make repro`: params.yaml checked as a whole, then `dvc repro` on every core, independent
stages at once, in lanes, every stage training on one Dask cluster; every failure one line.

One `dvc repro` runs its stages one at a time. This runs the same DAG as three phases: the
stages that everything else needs (download, split), then the independent branches after them
that hold an out-of-date stage, spread over `--jobs` lanes, each a `dvc repro <its stages>`
running alongside the others, then whatever joins the branches (the report). DVC still decides
what is out of date and records every stage in dvc.lock. The stages of every lane train on one
cluster, so the cores stay busy whatever the balance of the lanes: the one at
$DASK_SCHEDULER_ADDRESS, checked before DVC runs, else a LocalCluster of one single-threaded
worker per core that lives as long as this run. DVC's own chatter goes to
.dvc/tmp/repro/<lane>.log; the stages' log lines pass through, and a failure prints one line:
the stage's own error, or what DVC said.

    python -m pipeline.tools.repro [--jobs 2] [--force] [--no-cluster]
"""

import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from graphlib import TopologicalSorter
from pathlib import Path

import click

from actgrad import compute
from actgrad.errors import ParamsError
from actgrad.recipes import read_params

from .. import machines

TRAIN_COST = 8  # a train stage takes about this many times as long as any other stage
LOGS = Path(".dvc/tmp/repro")  # what DVC printed, lane by lane
STAGE_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")  # a stage's own log line (runner.log)


class ReproError(click.ClickException):
    """A failure of the pipeline, already one line."""


def read_dag():
    """(stages, each after those it depends on; {stage: the stages it depends on}), from DVC's
    own graph of the pipeline."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        graph = Repo(".").index.graph  # an edge runs from a stage to a stage it depends on
    except DvcException as e:
        cause = f": {e.__cause__}" if e.__cause__ else ""
        raise ReproError(" ".join(f"{e}{cause}".split())) from None
    needs = {stage.addressing: set() for stage in graph.nodes}
    for stage, dependency in graph.edges:
        needs[stage.addressing].add(dependency.addressing)
    return list(TopologicalSorter(needs).static_order()), needs


def out_of_date():
    """The stages `dvc status` finds changed (before any of their upstream reruns)."""
    status = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if status.returncode:
        raise ReproError(f"dvc status: {' '.join(status.stderr.split()) or 'failed'}")
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


class Lane:
    """A `dvc repro` of exactly `stages` (their upstream is already built), its output kept in
    a log file; the stages' own log lines pass through to stderr."""

    def __init__(self, name, stages, force, env=None):
        # the lanes take turns with DVC's repo lock (held while it reads the project and writes
        # dvc.lock, not while a stage's command runs): wait for it rather than fail
        command = ["dvc", "--wait-for-lock", "repro", "--single-item"]
        command += ["--force"] * force + stages
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log, self.lines = LOGS / f"{name}.log", []
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self):
        with open(self.log, "w") as log:
            for line in self.process.stdout:
                log.write(line)
                self.lines.append(line.rstrip("\n"))
                if STAGE_LINE.match(line):
                    print(line, end="", file=sys.stderr, flush=True)

    def wait(self):
        """None if every stage succeeded, else the one line that says why not."""
        code = self.process.wait()
        self.pump.join()
        return None if code == 0 else self.failure()

    def failure(self):
        errors = [line for line in self.lines if line.startswith("Error: ")]
        if errors:  # the stage's own one-line error
            return errors[-1]
        dvc = [line.removeprefix("ERROR: ") for line in self.lines if line.startswith("ERROR: ")]
        killed = re.search(
            r"failed to reproduce '([^']+)': .* exited with -(\d+)", dvc[-1] if dvc else ""
        )
        if killed:
            stage, signum = killed.groups()
            return (
                f"Error: {stage} was killed by signal {signum}"
                + " (the kernel's answer to a process that exhausts memory)" * (signum == "9")
                + f"; {stage} left its outputs unchanged (persist: true); DVC's output: {self.log}"
            )
        said = " ".join(dvc[-1].split()) if dvc else "failed"
        return f"Error: dvc repro: {said}; DVC's output: {self.log}"


LEFT = re.compile(r"^(.*) \((\S+) left its outputs unchanged\)$")


def merged(failures):
    """The lanes' failure lines as one: a cause that several stages met (a bad train param
    stops every lane) once, naming them all."""
    causes = {}
    for line in failures:
        found = LEFT.match(line)
        cause, stage = found.groups() if found else (line, None)
        causes.setdefault(cause, []).extend([stage] if stage else [])
    lines = []
    for cause, stages in causes.items():
        their = "its" if len(stages) == 1 else "their"
        left = f" ({', '.join(stages)} left {their} outputs unchanged)" if stages else ""
        lines.append(cause + left)
    return "; ".join(lines)


@click.command()
@click.option("--jobs", default=os.cpu_count(), show_default=True, help="lanes run at once")
@click.option("--force", "-f", is_flag=True, help="rerun every stage, as `dvc repro -f`")
@click.option(
    "--cluster/--no-cluster",
    default=True,
    help="train on one shared Dask cluster, or each stage in its own process (bench/repro.py)",
)
def main(jobs, force, cluster):
    try:
        read_params("params.yaml")  # before DVC touches anything
    except ParamsError as e:
        raise ReproError(str(e)) from None
    try:
        if not cluster:
            env = {k: v for k, v in os.environ.items() if k != compute.ADDRESS_ENV}
            return repro(jobs, force, env | {"ACTGRAD_WORKERS": "1"})
        with shared_cluster() as address:
            repro(jobs, force, {**os.environ, compute.ADDRESS_ENV: address})
    except compute.ClusterError as e:
        raise ReproError(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)  # each stage that was running said so in its own line


@contextmanager
def shared_cluster():
    """The address of the cluster every stage trains on: $DASK_SCHEDULER_ADDRESS, once it
    answers, else that of a LocalCluster of one worker per core, closed at the end."""
    address = os.environ.get(compute.ADDRESS_ENV)
    if address:
        with compute.connect(address):
            yield address
        return
    with compute.local_cluster(os.cpu_count()) as client:
        yield client.scheduler.address


def repro(jobs, force, env):
    stages, needs = read_dag()
    shared = plan(stages, needs, jobs)[0]
    failure = Lane("shared", shared, force, env).wait()
    if failure:
        raise ReproError(failure.removeprefix("Error: "))
    # only now, with the shared stages current, does `dvc status` see what their users need
    _, lanes, joins = plan(stages, needs, jobs, None if force else out_of_date())
    running = [Lane(f"lane-{i}", lane, force, env) for i, lane in enumerate(lanes, start=1)]
    failures = [f for f in (lane.wait() for lane in running) if f]
    if failures:
        raise ReproError(merged(failures).removeprefix("Error: "))
    if joins:
        failure = Lane("joins", joins, force, env).wait()
        if failure:
            raise ReproError(failure.removeprefix("Error: "))
    machines.prune(stages)


if __name__ == "__main__":
    main()
