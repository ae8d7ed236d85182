"""Each seed's initial weights, drawn in the lecture's order: C, W1, b1, W2, b2.

Every tensor a variant has is drawn with randn from the seed's generator, whatever its scheme
(zeros and constants are drawn, then replaced), so all variants of a seed see the same
minibatches afterwards. A BatchNorm variant has no b1 and draws none, as in the notebook.
"""

import torch


def shapes(vocab_size, block_size, n_embd, n_hidden):
    """{tensor: (shape, fan_in, fan_out)}: a bias has its layer's fans, C those of a one-hot
    lookup."""
    fan_in = n_embd * block_size
    return {
        "C": ((vocab_size, n_embd), vocab_size, n_embd),
        "W1": ((fan_in, n_hidden), fan_in, n_hidden),
        "b1": ((n_hidden,), fan_in, n_hidden),
        "W2": ((n_hidden, vocab_size), n_hidden, vocab_size),
        "b2": ((vocab_size,), n_hidden, vocab_size),
    }


def scheme_tensor(drawn, spec, fan_in, fan_out, activation_gain):
    """The tensor that `spec` (a config.Init) makes of a randn draw."""
    if spec.scheme == "randn":
        return drawn * spec.value
    if spec.scheme == "kaiming":
        gain = activation_gain if spec.value is None else spec.value
        return drawn * gain / fan_in**0.5
    if spec.scheme == "xavier":
        gain = 1.0 if spec.value is None else spec.value
        return drawn * (gain * (2 / (fan_in + fan_out)) ** 0.5)
    if spec.scheme == "zeros":
        return torch.zeros_like(drawn)
    return torch.full_like(drawn, spec.value)  # constant


def draw(seed, variant, vocab_size, block_size, n_embd, n_hidden):
    """One seed's weights {name: tensor} for `variant`, and its generator, which goes on to draw
    the minibatches. A norm's gain starts at 1 and its bias at 0, drawing nothing."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, (shape, fan_in, fan_out) in shapes(vocab_size, block_size, n_embd, n_hidden).items():
        if name in variant.tensors:
            drawn = torch.randn(shape, generator=g)
            spec = variant.init_of(name)
            weights[name] = scheme_tensor(drawn, spec, fan_in, fan_out, variant.gain_of(name))
    if variant.normed:
        weights["norm_gain"] = torch.ones(n_hidden)
        weights["norm_bias"] = torch.zeros(n_hidden)
    return weights, g
