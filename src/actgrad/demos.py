"""The lecture's small demonstrations, which train nothing or almost nothing: what the loss at
init should be and how W2 gets there, why a weight is scaled by 1/√fan_in, and (d2l 5.4,
exercise 2) softmax regression, which trains from every weight equal as from a random start.

Each returns plain numbers and tensors; the demos stage writes and draws them.
"""

import torch
import torch.nn.functional as F

from .mlp.network import draw
from .pieces.inits import Randn, Zeros


def four_class_losses(confident):
    """The lecture's 4-class toy: the cross-entropy of uniform logits (ln 4), of logits
    `confident` in the right class, and of logits as confident in a wrong one."""
    target = torch.tensor([0])

    def loss(logits):
        return F.cross_entropy(torch.tensor([logits]), target).item()

    return {
        "uniform": loss([0.0, 0.0, 0.0, 0.0]),
        "confident_right": loss([confident, 0.0, 0.0, 0.0]),
        "confident_wrong": loss([0.0, 0.0, 0.0, confident]),
    }


def first_batch_losses(variant, seed, X, Y, batch_size, scales, sizes):
    """{W2's scale: the loss of the first minibatch at init}: `variant`'s init with W2 randn ×
    scale and b2 zero, drawn from `seed` as training draws it, then that minibatch. `sizes`:
    (vocab, block, n_embd, n_hidden)."""
    losses = {}
    for scale in scales:
        init = variant.init | {"W2": Randn(scale=scale), "b2": Zeros()}
        w, g = draw(seed, variant.model_copy(update={"init": init}), *sizes)
        ix = torch.randint(0, X.shape[0], (batch_size,), generator=g)
        h = variant.activation.forward(w["C"][X[ix]].view(batch_size, -1) @ w["W1"] + w["b1"])
        losses[scale] = F.cross_entropy(h @ w["W2"] + w["b2"], Y[ix]).item()
    return losses


def scaled_products(seed, examples, fan_in, fan_out, scales):
    """The lecture's `x @ w`: x (examples, fan_in) and w (fan_in, fan_out) drawn from randn,
    w multiplied by each of `scales` ({label: factor}): {label: y = x @ (w × factor)}, x first."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, fan_in, generator=g)
    w = torch.randn(fan_in, fan_out, generator=g)
    return {"x": x} | {label: x @ (w * factor) for label, factor in scales.items()}


def softmax_regression(X, Y, vocab_size, start, cfg, seed):
    """Softmax regression on one-hot contexts, logits = onehot(X) W + b, trained by minibatch
    SGD (cfg: steps, lr, batch_size) from `start`: "equal", every weight and bias 0.1, or
    "random", W randn × 0.01 and b zero; the batches are drawn from `seed`'s generator, the
    same for both starts. (its minibatch loss at every step, (W, b), the distinct columns of W
    after the first step)."""
    g = torch.Generator().manual_seed(seed)
    inputs, B = X.shape[1] * vocab_size, cfg.batch_size
    W = torch.randn(inputs, vocab_size, generator=g) * 0.01
    b = torch.zeros(vocab_size)
    if start == "equal":
        W, b = W.fill_(0.1), b.fill_(0.1)
    offsets = torch.arange(X.shape[1]) * vocab_size
    losses, distinct = [], None
    for step in range(cfg.steps):
        ix = torch.randint(0, X.shape[0], (B,), generator=g)
        rows = X[ix] + offsets  # the one-hot input's nonzero entries
        logits = W[rows].sum(1) + b
        losses.append(F.cross_entropy(logits, Y[ix]).item())
        dlogits = (logits.softmax(1) - F.one_hot(Y[ix], vocab_size)) / B
        W.index_add_(0, rows.flatten(), dlogits.repeat_interleave(X.shape[1], 0), alpha=-cfg.lr)
        b -= cfg.lr * dlogits.sum(0)
        if step == 0:
            distinct = len(torch.unique(W, dim=1).T)
    return losses, (W, b), distinct


def regression_loss(weights, X, Y, vocab_size):
    """The mean cross-entropy of softmax regression (W, b) over a whole split."""
    W, b = weights
    rows = X + torch.arange(X.shape[1]) * vocab_size
    return F.cross_entropy(W[rows].sum(1) + b, Y).item()
