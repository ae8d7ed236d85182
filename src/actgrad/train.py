"""The training loop: all seeds of a variant in one batched program, backward written by hand.

The math is the lecture's (tanh MLP, optional BatchNorm with unbiased batch std and no
epsilon, cross-entropy, plain SGD). Each seed has its own generator, which draws that seed's
minibatch indices exactly as the lecture's loop does, so a seed's trajectory does not depend
on which other seeds share the batch. The hot loop never syncs with the host: losses land in
a preallocated tensor and are checked for divergence once per chunk of steps.
"""

import io
import json
import math
import multiprocessing
import signal
from dataclasses import dataclass

import torch

from .model import Weights, init_weights


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""

    def __init__(self, seed, step, loss):
        super().__init__(seed, step, loss)
        self.seed, self.step, self.loss = seed, step, loss

    def __str__(self):
        return f"seed {self.seed} diverged at step {self.step} (loss {self.loss:.4g})"


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


def train(weights, generators, X, Y, cfg, on_chunk=None):
    """Train `weights` in place on examples (X, Y) following `cfg` (a TrainConfig).

    `generators[s]` draws seed s's minibatches. `on_chunk(step, losses)` is called after every
    `cfg.curve_every` steps with the steps done so far (for progress reporting).
    """
    S, B, steps = len(weights.seeds), cfg.batch_size, cfg.steps
    V, E = weights.params["C"].shape[1:]
    T = X.shape[1]
    # W2 is kept transposed, (S, V, H), so the output layer works on (S, V, B) logits: on this
    # CPU those batched matmuls run about 1.5x faster than the (S, B, V) ones.
    flat, p = _flatten({**weights.params, "W2": weights.params["W2"].transpose(1, 2)})
    gflat, g = _flatten({name: torch.zeros_like(t) for name, t in p.items()})
    weights.params = {**p, "W2": p["W2"].transpose(1, 2)}
    b2, gb2 = p["b2"].view(S, V, 1), g["b2"].view(S, V, 1)
    bn = weights.batchnorm
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
        for i in range(n):
            # forward
            x = torch.index_select(p["C"].view(S * V, E), 0, rows[i]).view(S, B, T * E)
            if bn:
                hpre = torch.bmm(x, p["W1"])
                mean = hpre.mean(1, keepdim=True)
                diff = hpre - mean
                std = diff.square().sum(1, keepdim=True).div_(B - 1).sqrt_()
                xhat = diff.div_(std)
                hpre = torch.addcmul(p["bn_bias"], p["bn_gain"], xhat)
                weights.bn_mean.lerp_(mean, cfg.bn_momentum)
                weights.bn_std.lerp_(std, cfg.bn_momentum)
            else:
                hpre = torch.baddbmm(p["b1"], x, p["W1"])
            # tanh(a) = 2 sigmoid(2a) - 1: the same function, 3x faster than torch.tanh here
            h = torch.sigmoid_(hpre.mul_(2)).mul_(2).sub_(1)
            logp = torch.log_softmax(torch.baddbmm(b2, p["W2"], h.transpose(1, 2)), 1)
            torch.gather(logp, 1, targets[i], out=picked[i])
            # backward
            dlogits = torch._log_softmax_backward_data(dnll[i], logp, 1, logp.dtype)
            torch.bmm(dlogits, h, out=g["W2"])
            torch.sum(dlogits, 2, keepdim=True, out=gb2)
            dhpre = torch.ops.aten.tanh_backward(torch.bmm(dlogits.transpose(1, 2), p["W2"]), h)
            if bn:
                torch.sum(dhpre * xhat, 1, keepdim=True, out=g["bn_gain"])
                torch.sum(dhpre, 1, keepdim=True, out=g["bn_bias"])
                # d/dx of gain * (x - mean) / std over the batch, std unbiased
                dhpre.sub_(g["bn_bias"] / B).sub_(xhat * (g["bn_gain"] / (B - 1)))
                dhpre.mul_(p["bn_gain"] / std)
            else:
                torch.sum(dhpre, 1, keepdim=True, out=g["b1"])
            torch.bmm(x.transpose(1, 2), dhpre, out=g["W1"])
            demb = torch.bmm(p["W1"], dhpre.transpose(1, 2)).transpose(1, 2)  # (S, B, T * E)
            g["C"].zero_().view(S * V, E).index_add_(0, rows[i], demb.reshape(-1, E))
            # update: every parameter of every seed in one fused call
            flat.add_(gflat, alpha=-cfg.lr_at(start + i))
            if (start + i) % cfg.ratio_every == 0:
                torch.stack(
                    [g[m].flatten(1).std(1) / p[m].flatten(1).std(1) for m in MATRICES],
                    1,
                    out=grad_data[(start + i) // cfg.ratio_every],
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


def _merge(parts):
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


def train_seeds(seeds, variant, cfg, X, Y, vocab_size, workers=1, on_chunk=None):
    """Train all `seeds`, split into up to `workers` groups that run in parallel processes.

    Seeds are independent, so the grouping changes the speed, never the numbers. This process
    trains the first group itself and reports its progress through `on_chunk`.
    """
    n = max(1, min(workers, len(seeds)))
    size = math.ceil(len(seeds) / n)
    groups = [tuple(seeds[i : i + size]) for i in range(0, len(seeds), size)]
    if len(groups) == 1:
        return train_group(groups[0], variant, cfg, X, Y, vocab_size, on_chunk)
    # torch pickles a tensor for another process by moving its storage to shared memory,
    # which must not happen under our feet while this process trains on X: send copies
    others = [_Worker((g, variant, cfg, X.clone(), Y.clone(), vocab_size)) for g in groups[1:]]

    def check_others(step, losses):
        for worker in others:  # a worker's error (e.g. Diverged) stops us now, not at the end
            worker.check()
        if on_chunk is not None:
            on_chunk(step, losses)

    try:
        first = train_group(groups[0], variant, cfg, X, Y, vocab_size, check_others)
        parts = [first] + [worker.result() for worker in others]
    finally:
        for worker in others:
            worker.process.terminate()
            worker.process.join()
    return _merge(parts)
