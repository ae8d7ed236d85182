"""The training loop: all seeds of a variant in one batched program, backward written by hand.

The math is the lecture's (tanh MLP, optional BatchNorm with unbiased batch std and no
epsilon, cross-entropy, plain SGD). Each seed has its own generator, which draws that seed's
minibatch indices exactly as the lecture's loop does, so a seed's trajectory does not depend
on which other seeds share the batch. The hot loop never syncs with the host: losses land in
a preallocated tensor and are checked for NaN/inf once per chunk of steps.
"""

import math
from dataclasses import dataclass

import torch


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""

    def __init__(self, seed, step, loss):
        super().__init__(f"seed {seed} diverged at step {step} (loss {loss})")
        self.seed, self.step, self.loss = seed, step, loss


@dataclass
class TrainResult:
    losses: torch.Tensor  # (S, steps) minibatch loss of every step, per seed


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
    flat, p = _flatten(weights.params)
    weights.params = p
    gflat, g = _flatten({name: torch.zeros_like(t) for name, t in p.items()})
    bn = weights.batchnorm
    seed_offset = (torch.arange(S) * V).view(S, 1, 1)
    losses = torch.empty(steps, S)

    for start in range(0, steps, cfg.curve_every):
        n = min(cfg.curve_every, steps - start)
        ix = torch.stack(
            [torch.randint(0, X.shape[0], (n, B), generator=gen) for gen in generators], 1
        )
        ctx = X[ix] + seed_offset  # (n, S, B, T) rows of the stacked embedding table
        targets = Y[ix].unsqueeze(-1)  # (n, S, B, 1)
        for i in range(n):
            lr = cfg.lr_at(start + i)
            idx = ctx[i]
            # forward
            x = p["C"].view(S * V, E)[idx].view(S, B, T * E)
            hpre = torch.bmm(x, p["W1"]) if bn else torch.bmm(x, p["W1"]) + p["b1"]
            if bn:
                mean = hpre.mean(1, keepdim=True)
                std = hpre.std(1, keepdim=True)
                xhat = (hpre - mean) / std
                hpre = p["bn_gain"] * (hpre - mean) / std + p["bn_bias"]
                weights.bn_mean.mul_(1 - cfg.bn_momentum).add_(cfg.bn_momentum * mean)
                weights.bn_std.mul_(1 - cfg.bn_momentum).add_(cfg.bn_momentum * std)
            h = torch.tanh(hpre)
            logp = torch.log_softmax(torch.bmm(h, p["W2"]) + p["b2"], -1)
            torch.mean(logp.gather(-1, targets[i]), (1, 2), out=losses[start + i]).neg_()
            # backward, with autograd's own kernels where it has one, so the bits match
            dnll = torch.zeros_like(logp).scatter_(-1, targets[i], -1.0 / B)
            dlogits = torch._log_softmax_backward_data(dnll, logp, -1, logp.dtype)
            torch.bmm(h.transpose(1, 2), dlogits, out=g["W2"])
            torch.sum(dlogits, 1, keepdim=True, out=g["b2"])
            dhpre = torch.ops.aten.tanh_backward(torch.bmm(dlogits, p["W2"].transpose(1, 2)), h)
            if bn:
                torch.sum(dhpre * xhat, 1, keepdim=True, out=g["bn_gain"])
                torch.sum(dhpre, 1, keepdim=True, out=g["bn_bias"])
                dxhat = dhpre * p["bn_gain"]
                proj = (dxhat * xhat).sum(1, keepdim=True) / (B - 1)
                dhpre = (dxhat - dxhat.mean(1, keepdim=True) - xhat * proj) / std
            else:
                torch.sum(dhpre, 1, keepdim=True, out=g["b1"])
            torch.bmm(x.transpose(1, 2), dhpre, out=g["W1"])
            demb = torch.bmm(dhpre, p["W1"].transpose(1, 2))
            g["C"].zero_()
            g["C"].view(S * V, E).index_add_(0, idx.view(-1), demb.view(-1, E))
            # update every parameter of every seed at once, rounding as p.data += -lr * p.grad does
            flat.add_(gflat.mul_(-lr))
        _check_finite(losses[start : start + n], weights.seeds, start)
        if on_chunk is not None:
            on_chunk(start + n, losses[: start + n].T)
    return TrainResult(losses.T.contiguous())


def _check_finite(chunk, seeds, start):
    """Raise Diverged at the first step (n, S) `chunk` holds a NaN or inf, if any."""
    bad = ~torch.isfinite(chunk)
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
