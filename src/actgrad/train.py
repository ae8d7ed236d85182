"""The training engine: every seed of a variant in one batched program, composed of pieces.

A step runs embedding -> Linear -> norm -> activation -> Linear -> cross-entropy forward, then
backward by hand: the norm, the activation and the optimizer are the variant's pieces (pieces.py,
optim.py), the rest is the engine's own few lines. Each seed has its own generator, which draws
that seed's minibatches exactly as the lecture's loop does, so a seed's trajectory does not
depend on which other seeds share the batch. Losses land in a preallocated tensor and are checked
for divergence once per chunk of steps, so the loop never waits on the host.
"""

import io
import json
import math
import multiprocessing
import signal
from dataclasses import dataclass

import torch

from .errors import Diverged
from .model import Weights, init_weights

MATRICES = ("C", "W1", "W2")  # the weights whose update:data ratio is recorded


@dataclass
class TrainResult:
    losses: torch.Tensor  # (S, steps) minibatch loss of every step, per seed
    update_ratio: torch.Tensor  # (S, records, len(MATRICES)) log10 std(Δθ) / std(θ after)
    grad_norm: torch.Tensor  # (S, records, params) each tensor's gradient norm
    dead_units: torch.Tensor  # (S, unit records) units inactive on every training context
    distinct_units: torch.Tensor  # (S, unit records) hidden units that differ from each other


def _flatten(tensors):
    """Copy tensors into one flat buffer; return it and same-shaped views into it."""
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    views, offset = {}, 0
    for name, t in tensors.items():
        views[name] = flat[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    return flat, views


class Engine:
    """The parameters of all seeds in one flat buffer, their gradients in another, and a step.

    `params` and `grads` are views in the layout of `Weights` (S, rows, cols). W2 and b2 are
    stored transposed, (S, V, H) and (S, V, 1), so the output layer works on (S, V, B) logits,
    which this CPU's batched matmuls run about 1.5x faster than (S, B, V). b1 is stored as a
    last row of W1, which multiplies an input of ones.
    """

    def __init__(self, weights, variant):
        tensors = weights.params
        self.bias_row = "b1" in tensors  # b1 is stored as one more row of W1
        stored = {}
        for name, t in tensors.items():
            if name == "W1" and self.bias_row:
                stored[name] = torch.cat([t, tensors["b1"]], 1)
            elif name in ("W2", "b2"):
                stored[name] = t.transpose(1, 2)
            elif name != "b1":
                stored[name] = t
        self.flat, self.stored = _flatten(stored)
        self.gflat, self.gstored = _flatten({n: torch.zeros_like(t) for n, t in stored.items()})
        self.params = self._canonical(self.stored, tensors)
        self.grads = self._canonical(self.gstored, tensors)
        weights.params = self.params  # training updates the caller's weights in place
        S, V, E = self.params["C"].shape
        self.table, self.gtable = self.stored["C"].view(S * V, E), self.gstored["C"].view(S * V, E)
        self.ones = None  # (S, B, 1), the input that b1's row of W1 multiplies
        self.running = weights.running
        self.activation, self.norm, self.optimizer = (
            variant.activation,
            variant.norm,
            variant.optimizer,
        )
        if self.optimizer.layerwise:
            self.updated, self.updating = list(self.params.values()), list(self.grads.values())
        else:
            self.updated, self.updating = [self.flat], [self.gflat]
        self.state = self.optimizer.init_state(self.updated)

    def _canonical(self, stored, tensors):
        """Views of `stored` in the layout and order of `tensors` (Weights.params)."""
        views = {}
        for name in tensors:
            if name in ("W1", "b1") and self.bias_row:
                rows = stored["W1"].shape[1] - 1
                views[name] = stored["W1"][:, :rows] if name == "W1" else stored["W1"][:, rows:]
            else:
                views[name] = stored[name].transpose(1, 2) if name in ("W2", "b2") else stored[name]
        return views

    def step(self, rows, targets, dnll, lr, picked):
        """One step of every seed: forward, backward and update.

        `rows` are the step's rows of the stacked embedding table (S·B·T), `targets` (S, 1, B),
        `dnll` the gradient of the mean NLL w.r.t. the log-probs (S, V, B); the target
        log-probs are written into `picked` (S, 1, B).
        """
        p, g, s, gs = self.params, self.grads, self.stored, self.gstored
        S, _, B = dnll.shape
        # forward
        x = self.table.index_select(0, rows).view(S, B, -1)
        if self.bias_row:
            if self.ones is None:
                self.ones = dnll.new_ones(S, B, 1)
            x = torch.cat([x, self.ones], 2)
        a = torch.bmm(x, s["W1"])
        gain, bias = p.get("norm_gain"), p.get("norm_bias")
        z, cache = self.norm.forward(a, gain, bias, self.running)
        h = self.activation.forward(z)
        logp = torch.baddbmm(s["b2"], s["W2"], h.transpose(1, 2)).log_softmax(1)
        torch.gather(logp, 1, targets, out=picked)
        # backward
        dlogits = torch.add(dnll, logp.exp_(), alpha=1 / B)  # (softmax - one-hot) / B
        torch.bmm(dlogits, h, out=gs["W2"])
        torch.sum(dlogits, 2, keepdim=True, out=gs["b2"])
        dh = torch.bmm(dlogits.transpose(1, 2), s["W2"])
        da, dgain, dbias = self.norm.backward(self.activation.backward(dh, z, h), cache, gain)
        if dgain is not None:
            g["norm_gain"].copy_(dgain)
            g["norm_bias"].copy_(dbias)
        # W1's gradient and, in its last row, b1's: one matmul treats every unit the same, to
        # the bit (a sum over the batch would not), so units that start equal stay equal
        torch.bmm(x.transpose(1, 2), da, out=gs["W1"])
        demb = torch.bmm(self.params["W1"], da.transpose(1, 2)).transpose(1, 2)  # (S, B, T·E)
        self.gtable.zero_().index_put_((rows,), demb.reshape(len(rows), -1), accumulate=True)
        # update: every parameter of every seed, in one call for an element-wise optimizer
        self.optimizer.update(self.updated, self.updating, lr, self.state)


def per_seed(tensors, reduce):
    """(S, len(tensors)) of reduce(one seed's tensor), seed by seed: a reduction over a batch of
    seeds may round differently with the number of seeds, and these must not."""
    return torch.tensor([[reduce(t[s]).item() for t in tensors] for s in range(len(tensors[0]))])


def update_ratios(before, params):
    """(S, len(MATRICES)) log10 std(θ after − θ before) / std(θ after) of each seed's matrices."""
    after = [params[name] for name in MATRICES]
    steps = per_seed([a - before[name] for a, name in zip(after, MATRICES)], torch.std)
    return (steps / per_seed(after, torch.std)).log10()


@torch.no_grad()
def unit_counts(weights, variant, contexts):
    """(dead, distinct) hidden units of each seed: dead means inactive (the activation's rule)
    on every one of `contexts`, NaN where the activation has no such rule; distinct counts the
    units that compute different functions of the input: different W1 columns, biases or gains."""
    dead, distinct = [], []
    for s in range(len(weights.seeds)):
        w = weights.seed_slice(s)
        a = w["C"][contexts].view(len(contexts), -1) @ w["W1"] + w.get("b1", 0)
        z = variant.norm.evaluate(a, w.get("norm_gain"), w.get("norm_bias"), w)
        inactive = variant.activation.inactive(z, variant.activation.forward(z))
        dead.append(math.nan if inactive is None else float(inactive.all(0).sum()))
        units = torch.cat([w[n].T for n in ("W1", "b1", "norm_gain", "norm_bias") if n in w], 1)
        same = (units[:, None] == units[None]).all(-1)  # (H, H): unit i equals unit j
        distinct.append(float(len(units) - same.triu(1).any(0).sum()))  # minus the repeats
    return torch.tensor(dead), torch.tensor(distinct)


def unique_contexts(X, vocab_size):
    """The distinct rows of X (N, T), each context read as a number in base vocab_size."""
    place = vocab_size ** torch.arange(X.shape[1] - 1, -1, -1)
    codes = torch.unique(X @ place)
    return codes[:, None] // place % vocab_size


def train(weights, generators, X, Y, cfg, variant, on_chunk=None):
    """Train `weights` of `variant` in place on examples (X, Y) following `cfg` (TrainConfig).

    `generators[s]` draws seed s's minibatches. `on_chunk(step, losses)` is called after every
    `cfg.curve_every` steps with the steps done so far (for progress reporting).
    """
    # inference mode spares each of the step's small ops autograd's bookkeeping, about a tenth
    # of its cost; what it made leaves it as ordinary tensors, each a contiguous copy of its
    # own, so every later computation sees the same memory layout, here or after a trip
    # through another process, and gets the same bits
    with torch.inference_mode():
        result = _train_steps(weights, generators, X, Y, cfg, variant, on_chunk)
    weights.params = {name: _own(t) for name, t in weights.params.items()}
    return TrainResult(**{field: _own(t) for field, t in vars(result).items()})


def _own(t):
    return t.clone(memory_format=torch.contiguous_format)


def _train_steps(weights, generators, X, Y, cfg, variant, on_chunk):
    """train()'s steps; `weights.params` are left as views into the engine's buffers."""
    S, B, steps = len(weights.seeds), cfg.batch_size, cfg.steps
    V = weights.params["C"].shape[1]
    engine = Engine(weights, variant)
    contexts = unique_contexts(X, V)
    seed_offset = (torch.arange(S) * V).view(1, S, 1, 1)
    losses = torch.empty(steps, S)
    records = math.ceil(steps / cfg.ratio_every)
    update_ratio = torch.empty(records, S, len(MATRICES))
    grad_norm = torch.empty(records, S, len(engine.grads))
    units = []

    for start in range(0, steps, cfg.curve_every):
        n = min(cfg.curve_every, steps - start)
        ix = torch.stack(
            [torch.randint(0, X.shape[0], (n, B), generator=gen) for gen in generators], 1
        )
        flat_ix = ix.view(-1)  # index_select is several times faster than X[ix] here
        # each step's rows of the stacked embedding table
        rows = X.index_select(0, flat_ix).view(n, S, B, -1).add_(seed_offset).view(n, -1)
        targets = Y.index_select(0, flat_ix).view(n, S, 1, B)
        # gradient of the mean NLL w.r.t. log-probs: -1/B at each target, for the whole chunk
        dnll = torch.zeros(n, S, V, B, dtype=engine.flat.dtype).scatter_(2, targets, -1.0 / B)
        picked = torch.empty(n, S, 1, B, dtype=engine.flat.dtype)
        # each step's slices, taken in one call per tensor: indexing them one by one costs more
        # than some of the step's ops
        by_step = list(zip(rows.unbind(0), targets.unbind(0), dnll.unbind(0), picked.unbind(0)))
        for i in range(n):
            step = start + i
            if step % cfg.units_every == 0:
                units.append(unit_counts(weights, variant, contexts))
            record = step % cfg.ratio_every == 0
            if record:
                before = {name: engine.params[name].clone() for name in MATRICES}
            batch_rows, batch_targets, batch_dnll, batch_picked = by_step[i]
            lr = variant.optimizer.lr_at(step)
            engine.step(batch_rows, batch_targets, batch_dnll, lr, batch_picked)
            if record:
                k = step // cfg.ratio_every
                update_ratio[k] = update_ratios(before, engine.params)
                grad_norm[k] = per_seed(list(engine.grads.values()), torch.linalg.norm)
        losses[start : start + n] = -picked.mean((2, 3))
        _check_diverged(losses[start : start + n], weights.seeds, start, cfg.max_loss)
        if on_chunk is not None:
            on_chunk(start + n, losses[: start + n].T)
    units.append(unit_counts(weights, variant, contexts))
    dead, distinct = (torch.stack(c, 1) for c in zip(*units))
    return TrainResult(
        losses.T, update_ratio.transpose(0, 1), grad_norm.transpose(0, 1), dead, distinct
    )


def _check_diverged(chunk, seeds, start, max_loss):
    """Raise Diverged at the first step of (n, S) `chunk` with a NaN, inf or > max_loss loss."""
    bad = ~(chunk <= max_loss)
    if bad.any():
        i, s = (int(v) for v in bad.nonzero()[0])
        raise Diverged(seeds[s], start + i, chunk[i, s].item())


def curve(losses, every):
    """Mean loss over each block of `every` steps: (S, steps) -> (S, ceil(steps / every))."""
    S, steps = losses.shape
    blocks = math.ceil(steps / every)
    padded = torch.full((S, blocks * every), float("nan"))
    padded[:, :steps] = losses
    return padded.view(S, blocks, every).nanmean(-1)


def unit_steps(cfg):
    """The steps at which dead and distinct units are counted: every units_every, and the end."""
    return [*range(0, cfg.steps, cfg.units_every), cfg.steps]


def train_group(seeds, variant, cfg, X, Y, vocab_size, on_chunk=None):
    """Draw and train the weights of `seeds` in this process; returns (Weights, TrainResult)."""
    torch.set_num_threads(1)  # the matmuls are far too small to gain from more threads
    weights, generators = init_weights(
        seeds, variant, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden
    )
    return weights, train(weights, generators, X, Y, cfg, variant, on_chunk)


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


class SeedGroups:
    """The seeds of a variant split into up to `workers` groups that train in parallel.

    The other groups start at once, each in a spawned process; this process trains the first
    group, the smallest, which holds seeds[0], with `train_own`, and can work on its result
    while `others` waits for the rest. Seeds are independent: the grouping changes the speed,
    never the numbers. Leaving the `with` block ends any process still running.
    """

    def __init__(self, seeds, variant, cfg, X, Y, vocab_size, workers=1):
        n = max(1, min(workers, len(seeds)))
        sizes = [len(seeds) // n + (i >= n - len(seeds) % n) for i in range(n)]
        bounds = [sum(sizes[:i]) for i in range(n + 1)]
        groups = [tuple(seeds[a:b]) for a, b in zip(bounds, bounds[1:])]
        self.args = (groups[0], variant, cfg, X, Y, vocab_size)
        # torch pickles a tensor for another process by moving its storage to shared memory,
        # which must not happen under our feet while this process trains on X: send copies
        self.workers = [
            _Worker((g, variant, cfg, X.clone(), Y.clone(), vocab_size)) for g in groups[1:]
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for worker in self.workers:
            worker.process.terminate()
            worker.process.join()

    def train_own(self, on_chunk=None):
        """Train the first group here; (Weights, TrainResult). A worker's error stops it too."""

        def check_workers(step, losses):
            for worker in self.workers:
                worker.check()
            if on_chunk is not None:
                on_chunk(step, losses)

        return train_group(*self.args, check_workers)

    def others(self):
        """[(Weights, TrainResult)] of the other groups, once they are done."""
        return [worker.result() for worker in self.workers]


def train_seeds(seeds, variant, cfg, X, Y, vocab_size, workers=1, on_chunk=None):
    """Train all `seeds` over up to `workers` processes; (Weights, TrainResult) in seed order."""
    with SeedGroups(seeds, variant, cfg, X, Y, vocab_size, workers) as groups:
        own = groups.train_own(on_chunk)
        return merge([own, *groups.others()])
