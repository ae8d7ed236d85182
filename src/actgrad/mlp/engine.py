"""The training engine: every seed of a variant in one batched program, composed of pieces.

A step runs embedding -> Linear -> norm -> activation -> Linear -> cross-entropy forward, then
backward by hand: the norm, the activation and the optimizer are the variant's pieces
(pieces/), the rest is the engine's own few lines. Each seed has its own generator, which draws
that seed's minibatches exactly as the lecture's loop does, so a seed's trajectory does not
depend on which other seeds share the batch. Losses land in a preallocated tensor and are checked
for divergence once per chunk of steps, so the loop never waits on the host. The probes
(probes.py) are read on the way.
"""

import math
from dataclasses import dataclass

import torch

from ..errors import Diverged
from . import probes
from .network import init_weights


@dataclass
class TrainResult:
    losses: torch.Tensor  # (S, steps) minibatch loss of every step, per seed
    update_ratio: torch.Tensor  # (S, records, len(probes.MATRICES)) log10 std(Δθ) / std(θ after)
    grad_norm: torch.Tensor  # (S, records, params) each tensor's gradient norm
    dead_units: torch.Tensor  # (S, unit records) units inactive on every training context
    distinct_units: torch.Tensor  # (S, unit records) hidden units that differ from each other
    negative_units: torch.Tensor  # (S, unit records) units whose input is <= 0 on every one
    distinct_dims: torch.Tensor  # (S, unit records) embedding dimensions that differ
    distinct_w1_rows: torch.Tensor  # (S, unit records) rows of W1 that differ
    init_z: torch.Tensor  # (S, batch, units) the activation's input at init, first minibatch
    init_h: torch.Tensor  # (S, batch, units) and its output
    changed: torch.Tensor  # (S, params) whether each tensor ended elsewhere than it started


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
    which the Xeon's batched matmuls ran about 1.5x faster than (S, B, V). b1 is stored as a
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


def train(weights, generators, X, Y, cfg, variant, on_chunk=None):
    """Train `weights` of `variant` in place on examples (X, Y) following `cfg` (TrainConfig).

    `generators[s]` draws seed s's minibatches. `on_chunk(step, losses)` is called after every
    `cfg.curve_every` steps with the steps done so far (for progress reporting).
    """
    init_z, init_h = probes.init_activations(weights, generators, X, variant, cfg.batch_size)
    initial = {name: t.clone() for name, t in weights.params.items()}
    # inference mode spares each of the step's small ops autograd's bookkeeping, about a tenth
    # of its cost; what it made leaves it as ordinary tensors, each a contiguous copy of its
    # own, so every later computation sees the same memory layout, here or after a trip
    # through another process, and gets the same bits
    with torch.inference_mode():
        result = _train_steps(weights, generators, X, Y, cfg, variant, on_chunk)
    weights.params = {name: _own(t) for name, t in weights.params.items()}
    changed = probes.changed(initial, weights.params)
    return TrainResult(
        **{field: _own(t) for field, t in result.items()},
        init_z=init_z,
        init_h=init_h,
        changed=changed,
    )


def _own(t):
    return t.clone(memory_format=torch.contiguous_format)


def _train_steps(weights, generators, X, Y, cfg, variant, on_chunk):
    """train()'s steps and what is recorded on the way; `weights.params` are left as views into
    the engine's buffers."""
    S, B, steps = len(weights.seeds), cfg.batch_size, cfg.steps
    V = weights.params["C"].shape[1]
    engine = Engine(weights, variant)
    contexts = probes.unique_contexts(X, V)
    seed_offset = (torch.arange(S) * V).view(1, S, 1, 1)
    losses = torch.empty(steps, S)
    records = math.ceil(steps / cfg.ratio_every)
    update_ratio = torch.empty(records, S, len(probes.MATRICES))
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
                units.append(probes.unit_counts(weights, variant, contexts))
            record = step % cfg.ratio_every == 0
            if record:
                before = {name: engine.params[name].clone() for name in probes.MATRICES}
            batch_rows, batch_targets, batch_dnll, batch_picked = by_step[i]
            engine.step(
                batch_rows, batch_targets, batch_dnll, engine.optimizer.lr_at(step), batch_picked
            )
            if record:
                k = step // cfg.ratio_every
                update_ratio[k] = probes.update_ratios(before, engine.params)
                grad_norm[k] = probes.each_seed(list(engine.grads.values()), torch.linalg.norm)
        losses[start : start + n] = -picked.mean((2, 3))
        _check_diverged(losses[start : start + n], weights.seeds, start, cfg.max_loss)
        if on_chunk is not None:
            on_chunk(start + n, losses[: start + n].T)
    units.append(probes.unit_counts(weights, variant, contexts))
    dead, distinct, negative, dims, rows = (torch.stack(c, 1) for c in zip(*units))
    return {
        "losses": losses.T,
        "update_ratio": update_ratio.transpose(0, 1),
        "grad_norm": grad_norm.transpose(0, 1),
        "dead_units": dead,
        "distinct_units": distinct,
        "negative_units": negative,
        "distinct_dims": dims,
        "distinct_w1_rows": rows,
    }


def _check_diverged(chunk, seeds, start, max_loss):
    """Raise Diverged at the first step of (n, S) `chunk` with a NaN, inf or > max_loss loss."""
    bad = ~(chunk <= max_loss)
    if bad.any():
        i, s = (int(v) for v in bad.nonzero()[0])
        raise Diverged(seeds[s], start + i, chunk[i, s].item())


def memory_needed(cfg, seeds, vocab_size, block_size, examples):
    """{param: the bytes that training takes at its peak for the part that param sizes}: a
    chunk of curve_every steps' minibatches and a step's activations (batch_size), every
    step's loss and every record (steps), the dead units counted over the training contexts
    (n_hidden)."""
    S, B, H, V, T = len(seeds), cfg.batch_size, cfg.n_hidden, vocab_size, block_size
    chunk = cfg.curve_every * S * B * (8 * T + 8 + 8 + 4 * V + 4)  # rows, ix, targets, dnll, loss
    step = S * B * (4 * (T * cfg.n_embd + 1) + 40 * H + 12 * V)
    records = math.ceil(cfg.steps / cfg.ratio_every) * S * 12 * 4
    return {
        "batch_size": chunk + step,
        "steps": cfg.steps * S * 4 + records,
        "n_hidden": examples * H * 16,
    }


def train_group(seeds, variant, cfg, X, Y, vocab_size, on_chunk=None):
    """Draw and train the weights of `seeds`; (Weights, TrainResult)."""
    weights, generators = init_weights(
        seeds, variant, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden
    )
    return weights, train(weights, generators, X, Y, cfg, variant, on_chunk)
