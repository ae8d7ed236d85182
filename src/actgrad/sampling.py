"""Names drawn from a trained model, and names scored by it: what the train stage writes, what
`actgrad sample` and `actgrad score` print, and what the MLflow model answers.

A model here is any function from contexts (N, block_size) to logits (N, vocab): one seed of the
MLP (model.logits) or the deep network in evaluation mode.
"""

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def sample_names(logits_of, vocab, block_size, count, seed, temperature=1.0, top_k=None):
    """`count` names drawn with a generator seeded `seed`, one character at a time as the
    lecture's loop draws them; `temperature` divides the logits and `top_k` keeps only the k
    likeliest characters (the defaults change nothing)."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        context, out = [0] * block_size, []
        while True:
            logits = logits_of(torch.tensor([context]))
            if temperature != 1.0:
                logits = logits / temperature
            if top_k is not None and top_k < logits.shape[1]:
                kth = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = torch.softmax(logits, dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            if ix == 0:
                break
            out.append(vocab.chars[ix])
            context = context[1:] + [ix]
        names.append("".join(out))
    return names


def encode(name, vocab, block_size):
    """(contexts, targets) of one name, its end token included, as the split builds them.

    ValueError names the first character outside the vocabulary."""
    stoi = vocab.stoi
    bad = [c for c in name if c not in stoi or c == vocab.chars[0]]
    if bad:
        raise ValueError(
            f"{name!r} has {bad[0]!r}, which is not in the vocabulary ({vocab.chars[1:]})"
        )
    contexts, targets, context = [], [], [0] * block_size
    for ch in name + vocab.chars[0]:
        contexts.append(context)
        targets.append(stoi[ch])
        context = context[1:] + [stoi[ch]]
    return torch.tensor(contexts), torch.tensor(targets)


@torch.no_grad()
def score(logits_of, names, vocab, block_size):
    """[(mean negative log-likelihood per character, perplexity)] of each name, the end of the
    name counted as one more character."""
    scores = []
    for name in names:
        X, Y = encode(name, vocab, block_size)
        nll = F.cross_entropy(logits_of(X), Y).item()
        scores.append((nll, math.exp(nll)))
    return scores
