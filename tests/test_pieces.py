"""Every piece, and every variant of the default study, against torch.autograd in float64.

The pieces' hand-written backward passes are checked against autograd through torch's own
functions (torch.tanh, F.gelu, F.layer_norm, ...), the optimizers against torch.optim (LARS
against a transcription of the paper's rule), and one whole engine step of every variant in
params.yaml against a plain autograd model: gradients and the update agree to 1e-9 relative.
Run with -s to see the worst relative error of each.
"""

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT

from actgrad.mlp.engine import Engine
from actgrad.mlp.network import init_weights
from actgrad.params import Section, validate
from actgrad.pieces import Activation, Norm, Optimizer, activations, choices, norms, optimizers
from actgrad.recipes import load_params

TOLERANCE = 1e-9
PARAMS = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
ACTIVATIONS, NORMS = choices(activations.Activation), choices(norms.Norm)
OPTIMIZERS = choices(optimizers.Optimizer)


class Pieces(Section):
    activation: Activation | None = None
    norm: Norm | None = None
    optimizer: Optimizer | None = None


def default(kind, name, **options):
    """The piece of `kind` called `name`, read as params.yaml would write it, its params the
    defaults but `options`."""
    return getattr(validate(Pieces, {kind: {"name": name, **options}}, "test"), kind)


def rel_err(ours, reference, floor=1e-6):
    """max |ours - reference| / max |reference|, the scale floored at `floor`: a gradient that is
    zero in exact arithmetic (constant_init's dW1, where W2's equal rows meet a softmax
    gradient that sums to 0) holds only rounding, which no relative measure can compare."""
    return ((ours - reference).abs().max() / reference.abs().max().clamp_min(floor)).item()


def check(name, errors):
    worst = max(errors.values())
    print(f"{name:<28} worst relative error {worst:.1e}  ({', '.join(errors)})")
    assert worst <= TOLERANCE, errors


# --- activations ------------------------------------------------------------------------------

REFERENCES = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "leaky_relu": lambda a: F.leaky_relu(a, default("activation", "leaky_relu").slope),
    "elu": lambda a: F.elu(a, default("activation", "elu").alpha),
    "gelu": F.gelu,
    "linear": lambda a: a,
}


def test_every_activation_has_a_reference():
    assert set(REFERENCES) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_forward_and_backward_match_torch(name):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 32, 200, generator=g, dtype=torch.float64) * 3
    dh = torch.randn(a.shape, generator=g, dtype=torch.float64)
    piece = default("activation", name)
    h = piece.forward(a.clone())
    a_ref = a.clone().requires_grad_()
    h_ref = REFERENCES[name](a_ref)
    h_ref.backward(dh)
    check(
        name,
        {"forward": rel_err(h, h_ref), "backward": rel_err(piece.backward(dh, a, h), a_ref.grad)},
    )


# --- norms ------------------------------------------------------------------------------------


def lecture_batchnorm(a, gain, bias):
    """The lecture's: bngain * (hpreact - mean) / std + bnbias, the std unbiased."""
    return gain * (a - a.mean(-2, keepdim=True)) / a.std(-2, keepdim=True) + bias


def torch_layernorm(a, gain, bias):
    return F.layer_norm(a, a.shape[-1:], eps=default("norm", "layernorm").eps) * gain + bias


NORM_REFERENCES = {
    "none": lambda a, gain, bias: a,
    "batchnorm": lecture_batchnorm,
    "layernorm": torch_layernorm,
}


@pytest.mark.parametrize("name", list(NORMS))
def test_norm_forward_and_backward_match_autograd(name):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 32, 200, generator=g, dtype=torch.float64) * 2 + 0.5
    gain = 1 + torch.randn(3, 1, 200, generator=g, dtype=torch.float64) / 10
    bias = torch.randn(3, 1, 200, generator=g, dtype=torch.float64) / 10
    dout = torch.randn(a.shape, generator=g, dtype=torch.float64)
    piece = default("norm", name)
    running = {
        "mean": torch.zeros(3, 1, 200, dtype=a.dtype),
        "std": torch.ones(3, 1, 200, dtype=a.dtype),
    }
    out, cache = piece.forward(a, gain, bias, running)
    da, dgain, dbias = piece.backward(dout, cache, gain)

    leaves = [t.clone().requires_grad_() for t in (a, gain, bias)]
    reference = NORM_REFERENCES[name](*leaves)
    reference.backward(dout)
    errors = {"forward": rel_err(out, reference), "d input": rel_err(da, leaves[0].grad)}
    if dgain is not None:
        errors.update(
            {"d gain": rel_err(dgain, leaves[1].grad), "d bias": rel_err(dbias, leaves[2].grad)}
        )
    check(name, errors)


def test_batchnorm_running_statistics_follow_the_lecture():
    """bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani, and the same for the std."""
    g = torch.Generator().manual_seed(2)
    piece = default("norm", "batchnorm")  # momentum 0.001
    running = {
        "mean": torch.zeros(1, 1, 5, dtype=torch.float64),
        "std": torch.ones(1, 1, 5, dtype=torch.float64),
    }
    mean_ref, std_ref = (
        torch.zeros(1, 5, dtype=torch.float64),
        torch.ones(1, 5, dtype=torch.float64),
    )
    for _ in range(3):
        a = torch.randn(1, 32, 5, generator=g, dtype=torch.float64) * 3 + 1
        piece.forward(
            a, torch.ones(1, 1, 5, dtype=a.dtype), torch.zeros(1, 1, 5, dtype=a.dtype), running
        )
        mean_ref = 0.999 * mean_ref + 0.001 * a[0].mean(0, keepdim=True)
        std_ref = 0.999 * std_ref + 0.001 * a[0].std(0, keepdim=True)
    assert rel_err(running["mean"][0], mean_ref) <= TOLERANCE
    assert rel_err(running["std"][0], std_ref) <= TOLERANCE


# --- optimizers -------------------------------------------------------------------------------


def lars_reference(params, grads, velocity, opt):
    """You et al. 2017, Algorithm 1, per matrix: local lr = trust ‖w‖ / (‖g‖ + β ‖w‖)."""
    for p, grad, v in zip(params, grads, velocity):
        local = 1.0
        if p.shape[0] > 1 and p.norm() > 0 and grad.norm() > 0:
            local = opt.trust * p.norm() / (grad.norm() + opt.weight_decay * p.norm())
        v.mul_(opt.momentum).add_(opt.lr * local * (grad + opt.weight_decay * p))
        p.sub_(v)


TORCH_OPTIMIZERS = {
    "sgd": lambda ps, o: torch.optim.SGD(ps, lr=o.lr),
    "momentum": lambda ps, o: torch.optim.SGD(ps, lr=o.lr, momentum=o.momentum),
    "adam": lambda ps, o: torch.optim.Adam(ps, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps),
}
OPTIMIZER_CASES = {
    "sgd": default("optimizer", "sgd", lr=0.1),
    "momentum": default("optimizer", "momentum", lr=0.1, momentum=0.9),
    "adam": default("optimizer", "adam", lr=0.01),
    "lars": default("optimizer", "lars", lr=0.5, trust=0.01, momentum=0.9, weight_decay=1e-4),
}


def test_every_optimizer_is_checked():
    assert set(OPTIMIZER_CASES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_updates_match_torch_optim_over_three_steps(name):
    opt = OPTIMIZER_CASES[name]
    g = torch.Generator().manual_seed(3)
    shapes = [(30, 200), (1, 200), (200, 27)]
    ours = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ours[1].zero_()  # a zero bias, as zeros init makes
    reference = [t.clone() for t in ours]
    stacked = [t[None] for t in ours]  # one seed in front, as the engine passes them
    state = opt.init_state(stacked)
    velocity = [torch.zeros_like(t) for t in reference]
    leaves = [t.clone().requires_grad_() for t in reference]
    torch_opt = TORCH_OPTIMIZERS[name](leaves, opt) if name in TORCH_OPTIMIZERS else None
    for _ in range(3):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        opt.update(stacked, [t[None] for t in grads], opt.lr, state)
        if torch_opt:
            for leaf, grad in zip(leaves, grads):
                leaf.grad = grad.clone()
            torch_opt.step()
        else:
            with torch.no_grad():
                lars_reference(leaves, grads, velocity, opt)
    check(
        name, {f"tensor {i}": rel_err(o, r.detach()) for i, (o, r) in enumerate(zip(ours, leaves))}
    )


def test_lars_keeps_each_matrix_update_at_lr_times_trust():
    opt = default("optimizer", "lars", lr=0.1, trust=0.01, momentum=0.0)
    g = torch.Generator().manual_seed(4)
    w = torch.randn(2, 50, 40, generator=g, dtype=torch.float64) * torch.tensor([1.0, 100.0]).view(
        2, 1, 1
    )
    before = w.clone()
    opt.update(
        [w],
        [torch.randn(w.shape, generator=g, dtype=torch.float64) * 7],
        opt.lr,
        opt.init_state([w]),
    )
    ratio = (w - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)
    torch.testing.assert_close(
        ratio, torch.full((2,), 1e-3, dtype=torch.float64), rtol=1e-12, atol=0
    )


# --- one whole step of every variant ----------------------------------------------------------


def reference_step(weights, variant, X, Y):
    """The variant's model in plain autograd, then its optimizer: (grads, params after)."""
    leaves = {n: t[0].clone().requires_grad_() for n, t in weights.params.items()}
    a = leaves["C"][X].view(len(X), -1) @ leaves["W1"]
    if "b1" in leaves:
        a = a + leaves["b1"]
    if variant.norm.name != "none":
        a = NORM_REFERENCES[variant.norm.name](a, leaves["norm_gain"], leaves["norm_bias"])
    reference = REFERENCES[variant.activation.name]
    if variant.activation.name == "leaky_relu":
        reference = lambda t: F.leaky_relu(t, variant.activation.slope)  # noqa: E731
    logits = reference(a) @ leaves["W2"] + leaves["b2"]
    F.cross_entropy(logits, Y).backward()
    grads = {n: t.grad.clone() for n, t in leaves.items()}
    opt = variant.optimizer
    if opt.name in TORCH_OPTIMIZERS:
        TORCH_OPTIMIZERS[opt.name](list(leaves.values()), opt).step()
    else:
        with torch.no_grad():
            values = list(leaves.values())
            lars_reference(
                values, [t.grad for t in values], [torch.zeros_like(t) for t in values], opt
            )
    return grads, {n: t.detach() for n, t in leaves.items()}


@pytest.mark.parametrize("name", list(PARAMS.variants))
def test_one_engine_step_of_every_variant_matches_autograd(splits, name):
    variant = PARAMS.variant(name)
    X, Y = splits[1]["train"]
    weights, generators = init_weights((1,), variant, 27, 3, 10, 200)
    weights.params = {n: t.double() for n, t in weights.params.items()}
    weights.running = {n: t.double() for n, t in weights.running.items()}
    ix = torch.randint(0, len(X), (32,), generator=generators[0])
    grads, after = reference_step(weights, variant, X[ix], Y[ix])

    engine = Engine(weights, variant)
    dnll = torch.zeros(1, 27, 32, dtype=torch.float64).scatter_(1, Y[ix].view(1, 1, 32), -1 / 32)
    picked = torch.empty(1, 1, 32, dtype=torch.float64)
    engine.step(
        X[ix].view(-1),
        Y[ix].view(1, 1, 32),
        dnll,
        variant.optimizer.lr_at(0),
        picked,
    )
    errors = {f"d{n}": rel_err(engine.grads[n][0], grads[n]) for n in grads}
    errors.update({f"{n} after": rel_err(engine.params[n][0], after[n]) for n in after})
    check(f"step of {name}", errors)
