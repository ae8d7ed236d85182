"""The training loop: all seeds of a variant in one batched program, backward written by hand.

The math is the lecture's (tanh MLP, optional BatchNorm with unbiased batch std and no
epsilon, cross-entropy, plain SGD). Each seed has its own generator, which draws that seed's
minibatch indices exactly as the lecture's loop does, so a seed's trajectory does not depend
on which other seeds share the batch. The hot loop is TorchScript, so a step costs no Python,
and it never syncs with the host: losses land in a preallocated tensor and are checked for
divergence once per chunk of steps.
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

MATRICES = ("C", "W1", "W2")  # the weights whose grad:data ratio is recorded


@dataclass
class TrainResult:
    losses: torch.Tensor  # (S, steps) minibatch loss of every step, per seed
    grad_data: torch.Tensor  # (S, steps // ratio_every, len(MATRICES)) std(grad) / std(weight)


def _flatten(params):
    """Copy params into one flat buffer; return it and same-shaped views into it."""
    flat = torch.cat([t.reshape(-1) for t in params.values()])
    views, offset = {}, 0
    for name, t in params.items():
        views[name] = flat[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    return flat, views


@torch.jit.script
def _steps(
    p: dict[str, torch.Tensor],
    g: dict[str, torch.Tensor],
    flat: torch.Tensor,
    gflat: torch.Tensor,
    rows: torch.Tensor,
    dnll: torch.Tensor,
    targets: torch.Tensor,
    picked: torch.Tensor,
    lrs: list[float],
    first_step: int,
    ratio_every: int,
    grad_data: torch.Tensor,
    bn_running: list[torch.Tensor],
    bn_momentum: float,
):
    """Run len(lrs) training steps of every seed at once (TorchScript: no Python per op).

    p and g hold the parameters and their gradients as views into `flat` and `gflat`, W2 kept
    transposed: (S, V, H), so the output layer works on (S, V, B) logits, which this CPU's
    batched matmuls run about 1.5x faster than (S, B, V). `rows[i]` are step i's rows of the
    stacked embedding table, `dnll[i]` the gradient of its mean NLL w.r.t. the log-probs.
    Writes each step's target log-probs into `picked` and, every `ratio_every` steps, the
    grad:data ratios of C, W1 and W2 into `grad_data`. BatchNorm iff `bn_running` holds the
    running (mean, std), updated in place.
    """
    S, V, E = p["C"].shape
    B, TE = dnll.shape[3], p["W1"].shape[1]
    C, W1, W2, b2, table = p["C"], p["W1"], p["W2"], p["b2"].view(S, V, 1), p["C"].view(S * V, E)
    gC, gW1, gW2, gb2 = g["C"].view(S * V, E), g["W1"], g["W2"], g["b2"].view(S, V, 1)
    minus_one = torch.tensor(-1.0)
    xhat, std = minus_one, minus_one  # BatchNorm's, set by each step's forward
    for i in range(len(lrs)):
        # forward; the tanh is 2 sigmoid(2a) - 1, the same function, 3x faster here
        x = torch.index_select(table, 0, rows[i]).view(S, B, TE)
        if len(bn_running) > 0:
            hpre = torch.bmm(x, W1)
            mean = hpre.mean(1, keepdim=True)
            diff = hpre - mean
            std = (diff * diff).sum(1, keepdim=True).div_(B - 1).sqrt_()
            xhat = diff.div_(std)
            twice = torch.addcmul(p["bn_bias"], p["bn_gain"], xhat).mul_(2)
            bn_running[0].lerp_(mean, bn_momentum)
            bn_running[1].lerp_(std, bn_momentum)
        else:
            twice = torch.baddbmm(p["b1"], x, W1, beta=2.0, alpha=2.0)  # exactly 2a
        h = torch.add(minus_one, torch.sigmoid_(twice), alpha=2)
        logp = torch.log_softmax(torch.baddbmm(b2, W2, h.transpose(1, 2)), 1)
        torch.gather(logp, 1, targets[i], out=picked[i])
        # backward
        dlogits = torch._log_softmax_backward_data(dnll[i], logp, 1, logp.dtype)
        torch.bmm(dlogits, h, out=gW2)
        torch.sum(dlogits, [2], True, out=gb2)
        dhpre = torch.ops.aten.tanh_backward(torch.bmm(dlogits.transpose(1, 2), W2), h)
        if len(bn_running) > 0:
            torch.sum(dhpre * xhat, [1], True, out=g["bn_gain"])
            torch.sum(dhpre, [1], True, out=g["bn_bias"])
            # d/dx of gain * (x - mean) / std over the batch, std unbiased
            dhpre = torch.addcmul(dhpre, xhat, g["bn_gain"], value=-1.0 / (B - 1))
            dhpre.sub_(g["bn_bias"], alpha=1.0 / B).mul_(p["bn_gain"] / std)
        else:
            torch.sum(dhpre, [1], True, out=g["b1"])
        torch.bmm(x.transpose(1, 2), dhpre, out=gW1)
        demb = torch.bmm(W1, dhpre.transpose(1, 2)).transpose(1, 2)  # (S, B, T * E)
        gC.zero_().index_add_(0, rows[i], demb.reshape(-1, E))
        # update: every parameter of every seed in one fused call
        flat.add_(gflat, alpha=-lrs[i])
        step = first_step + i
        if step % ratio_every == 0:  # after the update, as the lecture reads it
            ratios = [gC.view(S, -1).std(1) / C.view(S, -1).std(1)]
            ratios += [gW1.flatten(1).std(1) / W1.flatten(1).std(1)]
            ratios += [gW2.flatten(1).std(1) / W2.flatten(1).std(1)]
            torch.stack(ratios, 1, out=grad_data[step // ratio_every])


def train(weights, generators, X, Y, cfg, on_chunk=None):
    """Train `weights` in place on examples (X, Y) following `cfg` (a TrainConfig).

    `generators[s]` draws seed s's minibatches. `on_chunk(step, losses)` is called after every
    `cfg.curve_every` steps with the steps done so far (for progress reporting).
    """
    S, B, steps = len(weights.seeds), cfg.batch_size, cfg.steps
    V = weights.params["C"].shape[1]
    T = X.shape[1]
    flat, p = _flatten({**weights.params, "W2": weights.params["W2"].transpose(1, 2)})
    gflat, g = _flatten({name: torch.zeros_like(t) for name, t in p.items()})
    weights.params = {**p, "W2": p["W2"].transpose(1, 2)}
    bn_running = [weights.bn_mean, weights.bn_std] if weights.batchnorm else []
    seed_offset = (torch.arange(S) * V).view(1, S, 1, 1)
    losses = torch.empty(steps, S)
    grad_data = torch.empty(math.ceil(steps / cfg.ratio_every), S, len(MATRICES))

    for start in range(0, steps, cfg.curve_every):
        n = min(cfg.curve_every, steps - start)
        ix = torch.stack(
            [torch.randint(0, X.shape[0], (n, B), generator=gen) for gen in generators], 1
        )
        rows = (X[ix] + seed_offset).view(n, S * B * T)  # rows of the stacked embedding table
        targets = Y[ix].unsqueeze(2)  # (n, S, 1, B)
        # gradient of the mean NLL w.r.t. log-probs: -1/B at each target, for the whole chunk
        dnll = torch.zeros(n, S, V, B).scatter_(2, targets, -1.0 / B)
        picked = torch.empty(n, S, 1, B)  # log-prob of each target, averaged into the loss below
        lrs = [cfg.lr_at(start + i) for i in range(n)]
        _steps(
            p,
            g,
            flat,
            gflat,
            rows,
            dnll,
            targets,
            picked,
            lrs,
            start,
            cfg.ratio_every,
            grad_data,
            bn_running,
            cfg.bn_momentum,
        )
        losses[start : start + n] = -picked.mean((2, 3))
        _check_diverged(losses[start : start + n], weights.seeds, start, cfg.max_loss)
        if on_chunk is not None:
            on_chunk(start + n, losses[: start + n].T)
    return TrainResult(losses.T.contiguous(), grad_data.transpose(0, 1).contiguous())


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


def train_group(seeds, variant, cfg, X, Y, vocab_size, on_chunk=None):
    """Draw and train the weights of `seeds` in this process; returns (Weights, TrainResult)."""
    torch.set_num_threads(1)  # the matmuls are far too small to gain from more threads
    weights, generators = init_weights(
        seeds, variant, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden
    )
    return weights, train(weights, generators, X, Y, cfg, on_chunk)


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
        state = weights.state_dict() | {"losses": result.losses, "grad_data": result.grad_data}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        conn.send_bytes(buffer.getvalue())


class _Worker:
    """One group of seeds training in a spawned process."""

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
        result = TrainResult(state.pop("losses"), state.pop("grad_data"))
        return Weights.from_state_dict(state), result


def merge(parts):
    """One (Weights, TrainResult) from those of groups of seeds, in the groups' order."""
    weights = [w for w, _ in parts]
    merged = Weights(
        tuple(s for w in weights for s in w.seeds),
        {name: torch.cat([w.params[name] for w in weights]) for name in weights[0].params},
    )
    if merged.batchnorm:
        merged.bn_mean = torch.cat([w.bn_mean for w in weights])
        merged.bn_std = torch.cat([w.bn_std for w in weights])
    results = [r for _, r in parts]
    return merged, TrainResult(
        torch.cat([r.losses for r in results]), torch.cat([r.grad_data for r in results])
    )


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
