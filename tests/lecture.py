"""The lecture notebook's training loop, transcribed plainly: the reference the engine is held to
(tests/test_train.py) and timed against (bench/engine.py)."""

import torch
import torch.nn.functional as F

LECTURE_SEED = 2147483647
KAIMING_W1 = (5 / 3) / (30**0.5)
# the notebook's multipliers of each randn draw, per recipe; b1 None: BatchNorm, no b1
RECIPES = {
    "baseline": {"W1": 1.0, "b1": 1.0, "W2": 1.0, "b2": 1.0},
    "softmax_fix": {"W1": 1.0, "b1": 1.0, "W2": 0.01, "b2": 0.0},
    "tanh_fix": {"W1": 0.2, "b1": 0.01, "W2": 0.01, "b2": 0.0},
    "kaiming": {"W1": KAIMING_W1, "b1": 0.01, "W2": 0.01, "b2": 0.0},
    "batchnorm": {"W1": KAIMING_W1, "b1": None, "W2": 0.01, "b2": 0.0},
}


def lecture_loop(Xtr, Ytr, recipe, steps, lr_decay_step, seed=LECTURE_SEED):
    """The lecture notebook's training loop, transcribed with autograd.

    Returns lossi, the parameters and, for BatchNorm, the running (mean, std)."""
    n_embd, n_hidden, block_size, vocab_size = 10, 200, 3, 27
    batchnorm = recipe["b1"] is None
    g = torch.Generator().manual_seed(seed)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * recipe["W1"]
    b1 = None if batchnorm else torch.randn(n_hidden, generator=g) * recipe["b1"]
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * recipe["W2"]
    b2 = torch.randn(vocab_size, generator=g) * recipe["b2"]
    bngain, bnbias = torch.ones((1, n_hidden)), torch.zeros((1, n_hidden))
    bnmean_running, bnstd_running = torch.zeros((1, n_hidden)), torch.ones((1, n_hidden))
    parameters = [C, W1, W2, b2] + ([bngain, bnbias] if batchnorm else [b1])
    for p in parameters:
        p.requires_grad = True
    lossi = []
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        hpreact = emb.view(emb.shape[0], -1) @ W1
        if batchnorm:
            bnmeani = hpreact.mean(0, keepdim=True)
            bnstdi = hpreact.std(0, keepdim=True)
            hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
            with torch.no_grad():
                bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
                bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
        else:
            hpreact = hpreact + b1
        h = torch.tanh(hpreact)
        loss = F.cross_entropy(h @ W2 + b2, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < lr_decay_step else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())
    return torch.tensor(lossi), parameters, (bnmean_running, bnstd_running)
