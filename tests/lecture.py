"""The lecture notebook's training loop, transcribed plainly: the reference the engine is held to
(tests/test_train.py) and timed against (bench/engine.py)."""

import torch
import torch.nn.functional as F

LECTURE_SEED = 2147483647


def lecture_loop(Xtr, Ytr, variant, steps, lr_decay_step, seed=LECTURE_SEED):
    """The lecture notebook's training loop, transcribed with autograd; returns lossi."""
    n_embd, n_hidden, block_size, vocab_size = 10, 200, 3, 27
    g = torch.Generator().manual_seed(seed)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * variant.w1_scale
    if variant.w1_fan_in:
        W1 = W1 / (n_embd * block_size) ** 0.5
    b1 = None if variant.batchnorm else torch.randn(n_hidden, generator=g) * variant.b1_scale
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * variant.w2_scale
    b2 = torch.randn(vocab_size, generator=g) * variant.b2_scale
    bngain, bnbias = torch.ones((1, n_hidden)), torch.zeros((1, n_hidden))
    parameters = [C, W1, W2, b2] + ([bngain, bnbias] if variant.batchnorm else [b1])
    for p in parameters:
        p.requires_grad = True
    lossi = []
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        hpreact = emb.view(emb.shape[0], -1) @ W1
        if variant.batchnorm:
            bnmeani = hpreact.mean(0, keepdim=True)
            bnstdi = hpreact.std(0, keepdim=True)
            hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
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
    return torch.tensor(lossi), parameters
