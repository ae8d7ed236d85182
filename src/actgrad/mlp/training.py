"""A variant's seeds trained in up to `workers` processes: the one entry point that the train
stage, the tests and the benches call.

The seeds are split into groups; each group but the first trains in a spawned process, the
first (the smallest, holding the lecture seed) in this one. Seeds are independent: the grouping
changes the speed, never the numbers. A worker's divergence or error stops the training here
too, and leaving train_seeds, however it ends, ends every worker still running.
"""

import io
import json
import multiprocessing
import signal

import torch

from ..errors import Diverged
from .engine import TrainResult, train_group
from .network import Weights


def _work(conn, args):
    """A worker process: train one group of seeds; send back its tensors, or what went wrong.

    The reply is torch.save bytes (read back with weights_only=True) or a JSON error: plain
    data both ways, nothing the parent has to unpickle.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    try:
        weights, result = train_group(*args)
    except Diverged as e:
        conn.send_bytes(json.dumps({"diverged": [e.seed, e.step, e.loss]}).encode())
    except Exception as e:
        conn.send_bytes(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
    else:
        buffer = io.BytesIO()
        torch.save({"weights": weights.state_dict(), "result": vars(result)}, buffer)
        conn.send_bytes(buffer.getvalue())


class _Worker:
    """One group of seeds training in a spawned process.

    Not multiprocessing.Pool (a worker that dies leaves its result waiting forever) nor
    ProcessPoolExecutor (Python 3.11 has no public way to end a worker that is running).
    """

    def __init__(self, args):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_work, args=(child, args), daemon=True)
        self.process.start()
        child.close()
        self.seeds, self.reply = args[0], None

    def check(self, timeout=0.0):
        """Raise the worker's error, or if it died; True once its result is in."""
        if self.reply is None and self.conn.poll(timeout):
            self.reply = self.conn.recv_bytes()
        if self.reply is None and not self.process.is_alive() and not self.conn.poll():
            raise RuntimeError(
                f"the process training seeds {list(self.seeds)} exited "
                f"(code {self.process.exitcode}) without a result"
            )
        if self.reply is not None and self.reply.startswith(b"{"):
            error = json.loads(self.reply)
            if "diverged" in error:
                raise Diverged(*error["diverged"])
            raise RuntimeError(f"the process training seeds {list(self.seeds)}: {error['error']}")
        return self.reply is not None

    def result(self):
        while not self.check(timeout=1.0):
            pass
        state = torch.load(io.BytesIO(self.reply), weights_only=True)
        return Weights.from_state_dict(state["weights"]), TrainResult(**state["result"])

    def stop(self):
        self.process.terminate()
        self.process.join()


def merge(parts):
    """One (Weights, TrainResult) from those of groups of seeds, in the groups' order."""
    weights = [w for w, _ in parts]
    merged = Weights(
        tuple(s for w in weights for s in w.seeds),
        {name: torch.cat([w.params[name] for w in weights]) for name in weights[0].params},
        {name: torch.cat([w.running[name] for w in weights]) for name in weights[0].running},
    )
    results = [vars(r) for _, r in parts]
    return merged, TrainResult(**{k: torch.cat([r[k] for r in results]) for k in results[0]})


def groups(seeds, workers):
    """`seeds` split into up to `workers` groups, the smallest first."""
    n = max(1, min(workers, len(seeds)))
    sizes = [len(seeds) // n + (i >= n - len(seeds) % n) for i in range(n)]
    bounds = [sum(sizes[:i]) for i in range(n + 1)]
    return [tuple(seeds[a:b]) for a, b in zip(bounds, bounds[1:])]


def train_seeds(seeds, variant, cfg, X, Y, vocab_size, workers=1, on_chunk=None):
    """Train all `seeds` of `variant` over up to `workers` processes; (Weights, TrainResult)
    in seed order. `on_chunk(step, losses)` follows this process's group."""
    own, *others = groups(seeds, workers)
    # torch pickles a tensor for another process by moving its storage to shared memory,
    # which must not happen under our feet while this process trains on X: send copies
    workers = [_Worker((g, variant, cfg, X.clone(), Y.clone(), vocab_size)) for g in others]

    def check_workers(step, losses):
        for worker in workers:
            worker.check()
        if on_chunk is not None:
            on_chunk(step, losses)

    try:
        trained = train_group(own, variant, cfg, X, Y, vocab_size, check_workers)
        return merge([trained, *(worker.result() for worker in workers)])
    finally:
        for worker in workers:
            worker.stop()
