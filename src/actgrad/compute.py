"""Where seeds train: in this process, or as tasks of a Dask cluster, a LocalCluster of
single-threaded worker processes on this machine or any cluster by its scheduler's address.

    with tasks(workers=2) as run:            # or address="tcp://...", or $DASK_SCHEDULER_ADDRESS
        results = run(train_group, groups, X, Y, ...)

`run(fn, groups, *shared)` is [fn(group, *shared, on_chunk=...) for group in groups], in order.
On a cluster the shared arguments are scattered once, each group is a task, and each task
first checks that its worker computes with this process's kernel switches (kernels.py): it
refuses to train with others. fn calls on_chunk(step, losses) after each chunk of steps; there
a task reports its progress, and stops once the caller has cancelled it (Future.cancel cannot
stop a running task, dask/distributed#2617): its worker has then forgotten it, which the task
sees without a round trip to the scheduler. A task that raises stops the others; so does
Ctrl-C. A worker that dies has its task run again elsewhere, with the same bits: a group's
numbers depend on its seeds alone.

Dask's nanny gives each worker MALLOC_TRIM_THRESHOLD_=65536, with which glibc hands freed
memory back to the kernel at once: the engine's many small tensors then cost 10-80% more per
step (docs/speed.md). The clusters started here, and `actgrad worker`, leave it unset.
"""

import os
import signal
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import kernels

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"  # Dask's own setting: distributed.Client() reads it
CONNECT_TIMEOUT = 10  # seconds to reach a scheduler before a stage gives up
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # no nanny or event-loop chatter
# a worker's own upkeep takes a core from the training beside it: no statistical profiler (it
# samples every thread each 10 ms; the dashboard's profile page stays empty), and the event loop
# and system monitors at a second rather than 20 and 500 ms; glibc's malloc left as it is
WORKER_SETTINGS = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
}


class ClusterError(RuntimeError):
    """The Dask scheduler cannot be reached, or a worker computes with other kernels."""


class Cancelled(RuntimeError):
    """The caller cancelled the task: it stops at its next chunk of steps."""


@dataclass
class Placement:
    """Where one task ran: the worker, its host and kernels, and how long it took."""

    worker: str
    host: str
    fingerprint: dict
    seconds: float


@dataclass
class Tasks:
    """Runs groups of seeds here (client None) or on a Dask cluster; remembers where."""

    client: object = None
    group_size: int | None = None  # seeds a task trains; None: all of them
    placements: list = field(default_factory=list)  # one per group of the last run, in order
    on_progress: object = None  # on_progress(group index, step, losses) as tasks report; a
    # cluster's tasks report on the client's event-loop thread

    @property
    def workers(self):
        """How many tasks can run at once."""
        return sum(self.client.nthreads().values()) if self.client else 1

    def __str__(self):
        """Where the tasks run, in words: this process, or the cluster and its dashboard."""
        if self.client is None:
            return "this process"
        where = f"the Dask cluster at {self.client.scheduler.address} ({self.workers} workers"
        dashboard = _dashboard(self.client)
        return where + (f", dashboard {dashboard})" if dashboard else ")")

    def __call__(self, fn, groups, *shared, on_done=None):
        """[fn(group, *shared, on_chunk=...) for group in groups]; on_done(i, placement) as
        each group ends."""
        if self.client is None:
            return self._here(fn, groups, shared, on_done)
        return self._cluster(fn, groups, shared, on_done)

    def _here(self, fn, groups, shared, on_done):
        results, self.placements = [], []
        for i, group in enumerate(groups):
            started = time.time()

            def on_chunk(step, losses, i=i):
                if self.on_progress:
                    self.on_progress(i, step, losses[:, -1].tolist())

            results.append(fn(group, *shared, on_chunk=on_chunk))
            here = Placement("this process", socket.gethostname(), None, time.time() - started)
            self.placements.append(here)
            if on_done:
                on_done(i, here)
        return results

    def _cluster(self, fn, groups, shared, on_done):
        from distributed import as_completed

        topic = f"actgrad-progress-{uuid.uuid4().hex}"
        if self.on_progress:
            self.client.subscribe_topic(topic, lambda event: self.on_progress(*event[1]))
        scattered = [self.client.scatter(arg, broadcast=True) for arg in shared]
        expected = kernels.active()
        futures = [
            self.client.submit(_task, fn, i, group, scattered, expected, topic, pure=False)
            for i, group in enumerate(groups)
        ]
        results, self.placements = [None] * len(groups), [None] * len(groups)
        try:
            for future in as_completed(futures, loop=self.client.loop):
                i, result, placement = future.result()
                results[i], self.placements[i] = result, placement
                if on_done:
                    on_done(i, placement)
        except BaseException:  # a task's error, or Ctrl-C: stop the others where they are
            self.client.cancel(futures, force=True)
            raise
        finally:
            if self.on_progress:
                self.client.unsubscribe_topic(topic)
        return results


def _dashboard(client):
    """The address of the cluster's dashboard where it answers from here, else None (a
    scheduler started with --no-dashboard still names one, which answers 404)."""
    import urllib.request

    if not client.scheduler_info().get("services", {}).get("dashboard"):
        return None
    try:
        with urllib.request.urlopen(client.dashboard_link, timeout=2):
            return client.dashboard_link
    except OSError:
        return None


def _task(fn, i, group, shared, expected, topic):
    """One group on a worker: (i, fn's result, where it ran)."""
    from distributed import get_worker

    worker, active = get_worker(), kernels.active()
    if active != expected:
        differ = ", ".join(
            f"{k} {active[k]} (the stage: {v})" for k, v in expected.items() if active[k] != v
        )
        raise ClusterError(
            f"worker {worker.address} computes with {differ}: start workers with `actgrad worker "
            "ADDRESS` or `dask worker --nthreads 1 --preload actgrad ADDRESS`"
        )
    key, started = worker.get_current_task(), time.time()

    def on_chunk(step, losses):
        if getattr(worker.state.tasks.get(key), "state", "released") in ("cancelled", "released"):
            raise Cancelled(f"seeds {list(group)} cancelled at step {step}")
        worker.log_event(topic, (i, step, losses[:, -1].tolist()))

    result = fn(group, *shared, on_chunk=on_chunk)
    fingerprint = kernels.fingerprint()
    return (
        i,
        result,
        Placement(worker.address, socket.gethostname(), fingerprint, time.time() - started),
    )


@contextmanager
def tasks(workers=1, address=None, group_size=None):
    """Tasks on the cluster at `address` (else $DASK_SCHEDULER_ADDRESS), else on a LocalCluster
    of `workers` single-threaded processes, else (workers 1) in this process; `group_size`
    seeds a task (None: all of them in one)."""
    address = address or os.environ.get(ADDRESS_ENV)
    if address:
        with connect(address) as client:
            yield Tasks(client, group_size)
    elif workers > 1:
        with local_cluster(workers) as client:
            yield Tasks(client, group_size)
    else:
        yield Tasks(group_size=group_size)


@contextmanager
def connect(address):
    """A client of the scheduler at `address`; ClusterError naming it, within
    CONNECT_TIMEOUT seconds, if it does not answer."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except OSError as e:
        raise ClusterError(
            f"Dask scheduler {address} is unreachable ({' '.join(str(e).split())}); start it, or "
            f"unset {ADDRESS_ENV} to train on this machine"
        ) from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def local_cluster(workers):
    """A LocalCluster of `workers` single-threaded processes, and a client of it. They start
    with this process's environment, so with its kernel switches (`import actgrad` set them)."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    # the workers ignore Ctrl-C, which a terminal sends to them too: the stage stops their tasks
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    with dask.config.set(WORKER_SETTINGS):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port, if the dashboard's bokeh is installed
            silence_logs=logging.CRITICAL,  # a task's error is the stage's, in one line
        )
    signal.signal(signal.SIGINT, interrupt)
    try:
        with Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        cluster.close()
