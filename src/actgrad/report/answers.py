"""The report's answers to the lecture's and d2l's questions, in words, from the stages' metrics.

Each function takes metrics dicts as the stages write them and returns markdown; every claim it
makes is read off those numbers, so the words change when the numbers do.
"""

import math
import statistics

from ..stats import mean_sd
from .tables import (
    diverged_steps,
    hidden_weights,
    layer_values,
    optimizer_words,
    seed_ratios,
    seed_saturation,
    seed_values,
    span,
    trained_seeds,
    welch_verdict,
)

GUIDE = -3  # the lecture's rule of thumb for a log10 update:data ratio
SAME_STD = 0.05  # activations' stds this close, layer by layer, are "the same" scale


def listing(names):
    """ "a", "a and b", "a, b and c"."""
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def seeds_range(m, key, fmt=".4f"):
    """A per-seed value's range over the seeds, "2.1 to 2.2", or the one value they share."""
    return span([s[key] for s in m["seeds"].values()], fmt)


def zero_init(name, m, variant):
    """E01: which tensors train from an all-zero init, and what that part amounts to."""
    first = m["first_nonzero_grad_step"]
    units = seeds_range(m, "distinct_units_final", ".0f")
    trained = [t for t, step in first.items() if step is not None]
    still = [t for t, changed in m["changed_from_init"].items() if not changed]
    zeros = [t for t in variant.tensors if variant.init_of(t).name == "zeros"]
    drawn = [t for t in variant.tensors if t not in zeros]
    at_random = f" ({listing(drawn)} drawn at random)" if drawn else ""
    text = (
        f"With {listing(zeros)} of `{name}` zero{at_random}, only {listing(trained)} ever "
        f"{'gets' if len(trained) == 1 else 'get'} a non-zero gradient (from step "
        f"{min(first[t] for t in trained)}), and {listing(still)} end exactly where they "
        f"started (lecture seed; the gradients' norms are read every train.ratio_every steps, "
        f"the weights compared at the end). The seeds end with {units} distinct hidden "
        "unit(s)."
    )
    if trained == ["b2"]:
        gap = m["train_loss"] - m["unigram_train_loss"]
        text += (
            " The hidden layer outputs tanh(0) = 0 for every context, so W2's gradient hᵀ·dlogits "
            "is zero, and with W2 zero no gradient flows back to h, W1, b1 or C. What trains is "
            "the output bias alone: a model that predicts the same distribution softmax(b2) "
            "whatever the context, a unigram model. Its train loss is "
            f"{m['train_loss']:.4f} (lecture seed; val {seeds_range(m, 'val_loss')} over the "
            f"seeds), {gap:+.4f} from {m['unigram_train_loss']:.4f}, the entropy of the next "
            "characters of the training split: the lowest loss any model that uses b2 alone "
            "can reach there."
        )
    return text


def one_or_many(n, one, many):
    return one if n == 1 else many


def symmetry(constant, cm, broken, bm, differs):
    """d2l 5.4: constant init keeps the hidden units identical; one random tensor breaks it.
    `differs`: the parts of the recipe in which `broken` differs from `constant`."""
    units = seed_values(cm, "distinct_units_final")
    text = (
        f"`{constant}` starts every hidden unit with the same incoming weights, bias and "
        "outgoing weights, so every unit computes the same value and receives the same "
        "gradient at every step"
    )
    if max(units) == 1:
        gap = max(abs(s["val_loss"] - s["one_unit_val_loss"]) for s in cm["seeds"].values())
        text += (
            ": after training, W1 has 1 distinct column, every seed. The network is one hidden "
            "unit copied: cut down to its first unit, with the outgoing weights of all units "
            "summed, its val loss differs from the full network's "
            f"({seeds_range(cm, 'val_loss')}) by {gap:.1g} at most."
        )
    else:
        text += (
            f", yet after training W1 has {span(units, '.0f')} distinct columns over the "
            "seeds: something broke the symmetry."
        )
    return text + (
        f" `{broken}` differs in {differs}: the units start identical but receive different "
        "gradients through their different outgoing weights, and end with "
        f"{seeds_range(bm, 'distinct_units_final', '.0f')} distinct units and a val loss of "
        f"{seeds_range(bm, 'val_loss')}."
    )


def embedding_symmetry(constant, cm, broken, bm, n_embd, block_size, steps):
    """d2l 5.4, exercise 1: another symmetry, the embedding's dimensions, kept by a constant C
    and W1 and broken by a random C. `steps`: {variant: its steps}."""
    dims, other = seed_values(cm, "distinct_dims_final"), seed_values(bm, "distinct_dims_final")
    rows = seed_values(cm, "distinct_w1_rows_final")
    kept = max(dims) == 1
    text = (
        f"Another symmetry is the embedding's dimensions. `{constant}` starts C and W1 at "
        "constants, so every dimension of every character's embedding holds the same number and "
        "every W1 row that reads a position's dimensions holds the same weights: each "
        "dimension then gets the same gradient, and so does each of those rows. After its "
        f"{steps[constant]:,} steps C has {span(dims, '.0f')} distinct "
        f"{one_or_many(max(dims), 'column', 'columns')} of {n_embd}, over the seeds, and W1 "
        f"{span(rows, '.0f')} distinct {one_or_many(max(rows), 'row', 'rows')} of "
        f"{n_embd * block_size} ({block_size} positions × {n_embd} dimensions)"
    )
    if kept:
        units = seed_values(cm, "distinct_units_final")
        hidden = (
            f"its hidden units split apart, {span(units, '.0f')} distinct, but nothing tells one "
            "dimension from another"
            if min(units) > 1
            else "its hidden units stay copies too"
        )
        text += (
            f" ({hidden}): a {n_embd}-dimensional embedding that works as a 1-dimensional one, "
            f"at val {seeds_range(cm, 'val_loss')}."
        )
    else:
        text += ": the symmetry did not hold."
    return text + (
        f" With C drawn at random, `{broken}` keeps {span(other, '.0f')} distinct dimensions "
        f"after its {steps[broken]:,} steps."
    )


def softmax_regression(d, vocab, cfg):
    """d2l 5.4, exercise 2: softmax regression trains from every weight equal as from random.
    `d`: demos.json's softmax_regression; `cfg`: its params."""
    equal, random = d["equal"], d["random"]
    gap = max(abs(equal[k] - random[k]) for k in ("train_loss", "val_loss"))
    same = gap < 1e-3
    split = equal["distinct_columns_after_one_step"]
    return (
        "Exercise 2 asks whether linear or softmax regression may start with every weight "
        "equal. Linear regression with one output has no units to be alike: each weight's "
        "gradient is its own input times the error. Softmax regression on the one-hot "
        f"contexts (no hidden layer; {cfg.steps:,} steps of SGD, lr {cfg.lr:g}, batches of "
        f"{cfg.batch_size}) from every weight equal reaches train {equal['train_loss']:.4f} and "
        f"val {equal['val_loss']:.4f}, from a random start {random['train_loss']:.4f} and "
        f"{random['val_loss']:.4f}: "
        + (f"the same loss, to {gap:.1g}. " if same else f"they differ by up to {gap:.4f}. ")
        + "Each class's column gets the gradient xᵀ(p − y): with equal weights p is the same "
        "for every class, so the columns' gradients differ by their targets y alone, and "
        f"after one step {split} of the {vocab} columns differ"
        + (
            " (two columns stay equal only while neither class has been a target). "
            if split < vocab
            else ". "
        )
        + "The MLP differs: its hidden units have no targets of their own. A unit's gradient "
        "comes back through its outgoing weights, and when those are equal too, so is every "
        "unit's gradient."
    )


def fold(variant, m, n_hidden):
    """E02: BatchNorm folded into W1 and b1."""
    diff = max(s["loss_diff"] for s in m["seeds"].values())
    if diff == 0:
        agree = "equals BatchNorm's on every seed, to the last bit"
    elif diff < 5e-5:
        agree = (
            f"is the same as BatchNorm's to the printed digits on every seed (they differ by "
            f"{diff:.1g} at most)"
        )
    else:
        agree = f"differs from BatchNorm's by up to {diff:.4f}"
    return (
        f"The calibrated BatchNorm of `{variant}` folds into W1 and a new b1 for every seed: "
        f"over the whole val split the largest logit difference is "
        f"{m['largest_abs_logit_diff']:.2g}, and the folded val loss "
        f"({seeds_range(m, 'folded_val_loss')}) {agree}. At inference the folded model skips "
        f"BatchNorm's work on each example's {n_hidden} pre-activations (a subtraction, a "
        "division, a multiplication and an addition each). The stage times a pass over the val "
        "split both ways and logs the speed-up to its MLflow run (`inference_speedup`); "
        "timings change from run to run, so they stay out of this file."
    )


def seeds_outcome(m):
    """A deep config's result over its seeds, in words."""
    steps, done = diverged_steps(m), [s["val_loss"] for s in trained_seeds(m)]
    n = len(m["seeds"])
    if not steps:
        return f"reaches val {mean_sd(done)}"
    where = f"step {span(steps, 'd')}"
    if not done:
        return f"diverges on {one_or_many(n, 'its seed', 'every seed')} ({where})"
    return f"diverges on {len(steps)} of {n} seeds ({where}); the others reach val {mean_sd(done)}"


def compared(name, m, other, om):
    """ "lower than `other`'s (Welch's t-test p=0.001)": a deep config's val losses against
    another's, where both trained on two seeds or more."""
    a, b = [s["val_loss"] for s in trained_seeds(om)], [s["val_loss"] for s in trained_seeds(m)]
    if len(a) < 2 or len(b) < 2:
        return None
    word, p = welch_verdict(a, b)
    if word == "no difference":
        return f"no different from `{other}`'s beyond the seeds' noise (p={p:.3f})"
    return f"{word} than `{other}`'s (p={p:.3f})"


def lars(triples):
    """d2l 5.4, exercise 4: LARS where SGD diverges or spreads the layers' steps, against SGD
    and SGD with LARS's momentum, over the seeds: a paragraph per LARS config. `triples`:
    ((name, metrics, config), ...) of LARS, then its controls."""
    paragraphs = [lars_against(lars_row, controls) for lars_row, *controls in triples]
    spread = [r for (_, m, _), *_ in triples if (r := all_ratios(m))]
    control = [
        f"{max(r) - min(r):.2f} for `{c}`"
        for _, *controls in triples
        for c, cm, _ in controls
        if (r := all_ratios(cm))
    ]
    if spread and control:
        paragraphs.append(
            "LARS scales each matrix's step by trust · ‖w‖ / ‖g‖, so every layer moves by the "
            "same fraction of its own size whatever its gradient: its update:data ratios span "
            f"{max(max(r) - min(r) for r in spread):.2f} in log10 at most, against "
            f"{', '.join(control)}."
        )
    return "\n\n".join(paragraphs)


def all_ratios(m):
    """Every weight's last log10 update:data, over the seeds that trained."""
    return seed_ratios(m, list(m["update_ratio_log10"]))


def lars_against(lars_row, controls):
    """One LARS config against its controls: outcomes, update:data, val, saturation."""
    name, m, cfg = lars_row
    words = [
        f"`{c}` ({optimizer_words(c_cfg.optimizer)}) {seeds_outcome(cm)}"
        for c, cm, c_cfg in controls
    ]
    ratios = all_ratios(m)
    text = f"{'; '.join(words)}; `{name}` ({optimizer_words(cfg.optimizer)}) {seeds_outcome(m)}"
    if ratios:
        text += (
            f", every weight's last log10 update:data between {min(ratios):.2f} and "
            f"{max(ratios):.2f} on every seed that trained"
        )
    judged = [j for c, cm, _ in controls if (j := compared(name, m, c, cm))]
    if judged:
        text += f". LARS's val is {' and '.join(judged)}"
    text += "."
    saturation = {n: seed_saturation(x) for n, x, _ in (lars_row, *controls)}
    if all(saturation.values()):
        mean = {n: statistics.fmean(v) for n, v in saturation.items()}
        others = [c for c, _, _ in controls]
        verdict = " and ".join(
            f"{'above' if mean[name] > mean[c] else 'below'} `{c}`'s" for c in others
        )
        text += (
            f" After the last step LARS leaves {span(saturation[name], '.1f')}% of the tanh "
            f"units of `{name}` saturated (every layer and seed; {mean[name]:.1f}% on average), "
            "against "
            + ", ".join(
                f"{span(saturation[c], '.1f')}% ({mean[c]:.1f}%) with `{c}`" for c in others
            )
            + f", and {span(layer_values(m, 'init', 'saturated_pct'), '.1f')}% at init (first "
            f"seed): LARS's saturation is {verdict}."
        )
    return text


def ranked(values, rel=1e-3):
    """[(names, value)] of {name: value} from the smallest value up, names whose values are
    within `rel` of each other together, in their given order, with the first one's value: a
    tie stays a tie whatever the last bits of the values."""
    groups = []
    for name, value in sorted(values.items(), key=lambda kv: kv[1]):
        if groups and abs(value - groups[-1][1]) <= rel * abs(groups[-1][1]):
            groups[-1][0].append(name)
        else:
            groups.append(([name], value))
    order = list(values)
    named = [sorted(names, key=order.index) for names, _ in groups]
    return [(names, values[names[0]]) for names in named]


def conditioning(rows, tanh_gains):
    """d2l 5.4, exercise 3: which gains keep the stack's Jacobian well conditioned.

    `rows`: (config, metrics) of the configs to compare; `tanh_gains`: {config: gain} of the
    plain tanh stacks among them, whose layer statistics are set beside the spectra.
    """
    at_init = {name: m["spectra"]["init"]["jacobian"] for name, m in rows}
    squares = ranked({n: j["mean_square"] for n, j in at_init.items()})
    spread = ", ".join(f"{listing(names)} {value:.3g}" for names, value in squares)
    ratios = ranked({n: j["ratio"] for n, j in at_init.items()})
    (best, best_ratio), (worst, worst_ratio) = ratios[0], ratios[-1]
    metrics = dict(rows)
    tanh = sorted(tanh_gains, key=tanh_gains.get)
    last = {n: list(metrics[n]["init"]["layers"].values())[-1] for n in tanh}
    gains = " → ".join(f"{tanh_gains[n]:.3g}" for n in tanh)
    stds = " → ".join(f"{last[n]['act_std']:.2f}" for n in tanh)
    saturation = " → ".join(f"{last[n]['saturated_pct']:.1f}%" for n in tanh)
    return (
        "The Jacobian of the hidden stack is a product, one factor per layer: W, then "
        "BatchNorm's gain / std, then the activation's derivative. Singular values multiply "
        "under products, within σ_min(A) σ_min(B) ≤ σ(AB) ≤ σ_max(A) σ_max(B), so a gain that "
        "scales every factor up or down scales the product by its power, and saturated units "
        "put near-zero entries on the activation factors, which sends the smallest singular "
        f"values to zero. At init the mean squared singular value runs {spread}. The best "
        f"conditioned is {listing(best)} (σ max / σ min {best_ratio:.3g}), the worst "
        f"{listing(worst)} ({worst_ratio:.3g}). {by_scale(best, metrics, at_init)} The layer "
        "statistics follow: as the tanh "
        f"stacks' gain goes {gains}, the last hidden layer's output std at init goes {stds} "
        f"and its saturation {saturation}: a gain below tanh's "
        "5/3 shrinks the signal layer by layer (vanishing), one above it saturates the units "
        "and spreads the spectrum."
    )


def by_scale(best, metrics, at_init):
    """σ max / σ min is blind to scale: which of the best conditioned diverge all the same."""
    diverged = [n for n in best if diverged_steps(metrics[n])]
    if not diverged:
        return f"{one_or_many(len(best), 'It trains', 'None of them diverges')}."
    trained = [n for n in best if n not in diverged]
    steps = span([s for n in diverged for s in diverged_steps(metrics[n])], "d")
    text = (
        "But σ max / σ min is blind to scale, which a gain multiplies into every singular "
        f"value: {listing(diverged)} {one_or_many(len(diverged), 'diverges', 'diverge')} (step "
        f"{steps}), with a mean squared singular value of "
        f"{at_init[diverged[0]]['mean_square']:.3g} at init"
    )
    if trained:
        text += (
            f", while {listing(trained)} ({at_init[trained[0]]['mean_square']:.3g}) "
            f"{one_or_many(len(trained), 'trains', 'train')}"
        )
    return text + "."


# --- the lecture's lessons ----------------------------------------------------------------------


def hockey_stick(first, fixed, curves, every):
    """The lecture's first fix, on the loss curves: {variant: (steps, log10 losses)}, the loss
    at step 0 first, then each block's mean."""
    (_, a), (_, b) = curves[first], curves[fixed]
    drop_a, drop_b = a[0] - a[1], b[0] - b[1]
    text = (
        f"Each curve starts at its loss at step 0, then the mean log10 loss of each block of "
        f"{every:,} steps. `{first}` starts at log10 {a[0]:.2f} (loss {10 ** a[0]:.2f}) and its "
        f"first block averages {a[1]:.2f}, a drop of {drop_a:.2f}; `{fixed}` starts at "
        f"{b[0]:.2f} (loss {10 ** b[0]:.2f}) and drops {drop_b:.2f}"
    )
    if drop_a > 2 * max(drop_b, 0):
        return text + (
            f": `{first}`'s curve is the lecture's hockey stick, the excess loss of its too "
            "confident init paid off first."
        )
    return text + f": `{first}` drops no faster than `{fixed}` here, no hockey stick."


def init_loss(d, variant, seed, confident):
    """What the loss at init should be: the 4-class toy, and W2's scale on the first
    minibatch. `d`: demos.json."""
    toy, sweep, ideal = d["four_class"], d["first_batch_loss_by_w2_scale"], d["ideal_init_loss"]
    vocab = round(math.exp(ideal))
    scales = list(sweep)
    # the first scale from which on every loss is within 1% of the uniform one
    near = [abs(sweep[s] - ideal) <= 0.01 * ideal for s in scales]
    first = next((s for k, s in enumerate(scales) if all(near[k:])), None)
    text = (
        f"Four classes, every logit equal: the loss is ln 4 = {toy['uniform']:.4f}. Give one "
        f"class the logit {confident:g} and the others 0: the loss is {toy['confident_right']:.4f} "
        f"where that class is the right one and {toy['confident_wrong']:.4f} where it is wrong, "
        f"{toy['confident_wrong'] - toy['confident_right']:.4g} more, the logit itself. A "
        "network that starts confident pays that wherever it is wrong, so a good init predicts "
        f"the uniform distribution, -ln(1/{vocab}) = {ideal:.4f} here. On the first minibatch "
        f"at seed {seed}, `{variant}` with b2 zero and W2 × "
        + ", ".join(scales)
        + " starts at "
        + ", ".join(f"{sweep[s]:.4f}" for s in scales)
    )
    if "0.1" in sweep and "0.01" in sweep:
        text += " (the lecture prints 4.2 and 3.32 for × 0.1 and × 0.01)"
    if first is not None:
        text += f": from W2 × {first} on, the loss is within 1% of the uniform one"
    if "0" in sweep and abs(sweep["0"] - ideal) <= 1e-5 * ideal:
        text += "; W2 × 0 makes every logit b2 = 0, the uniform prediction itself"
    return text + "."


def weight_scale(stds, cfg):
    """The lecture's `x @ w`: the output's std is w's scale × √fan_in × x's std. `stds`:
    demos.json's x_w_std; `cfg`: demos.x_w."""
    root = math.sqrt(cfg.fan_in)
    factors = {f"w_times_{s:g}": s for s in cfg.scales}
    factors["w_over_sqrt_fan_in"] = 1 / root
    factors["w_times_gain_over_sqrt_fan_in"] = cfg.gain / root
    off = max(abs(stds[k] / (f * root * stds["x"]) - 1) for k, f in factors.items())
    scaled = ", ".join(f"{stds[f'w_times_{s:g}']:.2f} for w × {s:g}" for s in cfg.scales)
    over, gained = stds["w_over_sqrt_fan_in"], stds["w_times_gain_over_sqrt_fan_in"]
    return (
        f"x ({cfg.examples:,} × {cfg.fan_in}) and w ({cfg.fan_in} × {cfg.fan_out}) from randn: "
        f"x's std is {stds['x']:.2f}. Each output of x @ w sums {cfg.fan_in} products of two "
        f"numbers of std about 1, so its std is w's scale × √{cfg.fan_in} = {root:.2f} times "
        f"x's: {scaled}. Divided by √fan_in, w gives {over:.2f}, x's own scale, and with "
        f"tanh's gain {cfg.gain:.3g} on top {gained:.2f}, the extra that tanh's squashing takes "
        f"back. Every std here is within {off:.1%} of w's scale × √fan_in × x's std."
    )


ACTIVATION_BELOW_ZERO = {  # what each activation passes back where its input is below zero
    "relu": "ReLU passes no gradient below zero",
    "leaky_relu": "Leaky ReLU passes {slope:g} of the gradient below zero",
    "elu": "ELU passes the gradient times e^a below zero",
}


def dead_relus(rows, others, n_hidden):
    """ReLUs that die, and activations that keep a gradient below zero, on a b1 that pushes
    the units' inputs below zero: a paragraph per variant of the lesson, then one for the other
    ReLU variants. `rows`: (name, metrics, variant, steps) of the lesson's variants; `others`:
    (name, metrics, variant) of the other ReLU variants."""
    paragraphs = []
    for name, m, variant, steps in rows:
        start, end = seed_values(m, "negative_units_init"), seed_values(m, "negative_units_final")
        back = [a - b for a, b in zip(start, end)]
        act = variant.activation
        how = ACTIVATION_BELOW_ZERO.get(act.name, "").format(**act.model_dump())
        if max(back) <= 0:
            fate = "none comes back" if max(start) else "there are none"
            if min(back) < 0:
                fate += f", and {span([-b for b in back], '.0f')} more go under"
        elif min(end) == 0:
            fate = "every one comes back"
        else:
            fate = f"{span(back, '.0f')} come back"
        text = (
            f"`{name}` ({act.name}, b1 {variant.init_of('b1')}) starts with "
            f"{span(start, '.0f')} of its {n_hidden} units whose input is ≤ 0 on every context "
            f"of the training split, and ends its {steps:,} steps with {span(end, '.0f')}. "
            + (f"{how}: {fate}" if how else fate[0].upper() + fate[1:])
        )
        dead = seed_values(m, "dead_units_final")
        if all(v is not None for v in dead):
            text += f"; dead by its rule ({m['inactive_rule']}) at the end: {span(dead, '.0f')}"
        paragraphs.append(text + f". Its val loss: {mean_sd(seed_values(m, 'val_loss'))}.")
    texts = []
    for name, m, variant in others:
        most = seed_values(m, "dead_units_max")
        opt = variant.optimizer
        lr = f"lr {opt.lr:g}" + (f", then {opt.decayed_lr:g}" if opt.decay_step else "")
        if max(most) == 0:
            texts.append(
                f"`{name}` ({lr}) kills none of its {n_hidden} units, at any count of any seed."
            )
        else:
            killing = [x for x in most if x]
            texts.append(
                f"`{name}` ({lr}) kills up to {max(most):.0f} of its {n_hidden} units at some "
                f"count, on {len(killing)} of its {len(most)} seeds, and ends with "
                f"{seeds_range(m, 'dead_units_final', '.0f')} dead."
            )
    return "\n\n".join([*paragraphs, " ".join(texts)] if texts else paragraphs)


def init_std(scheme, fan_in, fan_out, gain):
    """The std a tensor starts with under an init scheme: randn × its factor, or uniform."""
    name = scheme.name
    if name == "randn":
        return scheme.scale
    if name == "kaiming":
        g = gain if scheme.gain is None else scheme.gain
        return g / math.sqrt(fan_in if scheme.mode == "fan_in" else fan_out)
    if name == "xavier":
        return (1.0 if scheme.gain is None else scheme.gain) * math.sqrt(2 / (fan_in + fan_out))
    if name == "torch_linear":
        return 1 / math.sqrt(3 * fan_in)  # uniform on ±1/√fan_in
    return 0.0  # zeros, a constant


def kaiming_modes(rows, fans):
    """Kaiming's fan_out mode and torch's nn.Linear default against fan_in mode. `rows`:
    (name, metrics, variant), the fan_in one first; `fans`: {tensor: (fan_in, fan_out)}."""
    (base, bm, bv), *others = rows
    base_val = seed_values(bm, "val_loss")

    def stds(v):
        return {t: init_std(v.init_of(t), *fans[t], v.gain_of(t)) for t in ("W1", "W2")}

    texts = []
    for name, m, v in rows:
        w = stds(v)
        inactive = m["init_inactive_fraction"]
        text = (
            f"`{name}` (W1: {v.init_of('W1')}) starts W1 at std {w['W1']:.3g} and W2 at "
            f"{w['W2']:.3g}: init loss {m['init_loss']:.4f}, "
            + (
                ""
                if inactive is None
                else f"{inactive:.1%} of its units inactive ({m['inactive_rule']}) on the "
                "first minibatch, "
            )
            + "W1's log10 update:data over the first 1,000 steps "
            f"{m['log10_update_ratio_first_1000_steps']['W1']:.2f}, val "
            f"{mean_sd(seed_values(m, 'val_loss'))}"
        )
        if name != base:
            word, p = welch_verdict(base_val, seed_values(m, "val_loss"))
            text += (
                f" ({'no different from' if word == 'no difference' else word + ' than'} "
                f"`{base}`'s, p={p:.3f})"
            )
        texts.append(text + ".")
    fan_in, fan_out = fans["W1"]
    return (
        f"W1 is {fan_in} × {fan_out}. Kaiming's fan_in mode divides by √{fan_in}, which keeps "
        "the activations' scale going forward; fan_out mode divides by "
        f"√{fan_out}, which keeps the gradients' scale going backward; PyTorch's nn.Linear "
        "draws every weight and bias uniform on ±1/√fan_in. " + " ".join(texts)
    )


def calibration(m, seeds):
    """BatchNorm's running statistics against the calibrated ones: the largest gap of any
    neuron, the largest over the seeds. `m`: calibrate.json."""
    gaps = m["seeds"]
    worst = max(gaps, key=lambda s: gaps[s]["mean_max_abs_diff"])
    worst_std = max(gaps, key=lambda s: gaps[s]["std_max_rel_diff"])
    return (
        f"The largest gap of any neuron, over the {len(gaps)} seeds: "
        f"{gaps[worst]['mean_max_abs_diff']:.4f} in the mean (absolute, seed {worst}) and "
        f"{gaps[worst_std]['std_max_rel_diff']:.2%} in the std (relative, seed {worst_std}). "
        f"Val loss with the running statistics {m['running_val_loss']:.4f}, calibrated "
        f"{m['val_loss']:.4f} (seed {seeds[0]})."
    )


def running_momentum(rows, batch_size):
    """BatchNorm's running statistics at two momenta against the calibrated ones. `rows`:
    (name, metrics, momentum), the smaller momentum first."""
    parts, gaps = [], {}
    for name, m, momentum in rows:
        mean_gap = max(seed_values(m, "calibrated_mean_max_abs_diff"))
        std_gap = max(seed_values(m, "calibrated_std_max_rel_diff"))
        loss_gap = [s["val_loss"] - s["calibrated_val_loss"] for s in m["seeds"].values()]
        gaps[name] = (mean_gap, std_gap)
        parts.append(
            f"`{name}` (momentum {momentum:g}) {mean_gap:.4f} in the mean and {std_gap:.2%} in "
            f"the std, val loss with its running statistics {span(loss_gap, '+.4f')} from the "
            "calibrated one"
        )
    (low, lm), (high, hm) = [(n, gaps[n]) for n, _, _ in rows]
    if hm[0] < lm[0] and hm[1] < lm[1]:
        verdict = f"`{high}`'s running statistics end closer to the calibrated ones"
    elif hm[0] > lm[0] and hm[1] > lm[1]:
        verdict = (
            f"`{high}`'s running statistics end further from the calibrated ones: at batch "
            f"{batch_size} each update moves them by a large share of one batch's noise"
        )
    else:
        verdict = "Neither ends closer to the calibrated statistics in both the mean and the std"
    return (
        "The largest gap of any neuron over the seeds, with the running statistics updated at "
        f"two momenta (batch {batch_size}): {'; '.join(parts)}. {verdict}."
    )


def bias_before_batchnorm(rows, grad_norms):
    """A bias before BatchNorm gets no gradient. `rows`: (name, metrics) of BatchNorm without
    b1, then with; `grad_norms`: {tensor: every recorded gradient norm} of the one with b1."""
    (bn, bm), (b1, b1m) = rows
    b1_norm, w1_norm = max(grad_norms["b1"]), min(grad_norms["W1"])
    zero = b1_norm <= 1e-6 * w1_norm
    word, p = welch_verdict(seed_values(bm, "val_loss"), seed_values(b1m, "val_loss"))
    return (
        f"`{b1}` keeps a b1 before its BatchNorm. BatchNorm subtracts each unit's batch mean, "
        "and b1 with it, so the loss does not depend on b1: "
        + (
            f"its recorded gradient norm (the series' block means, every seed) is at most "
            f"{b1_norm:.1g}, rounding, against at least {w1_norm:.3g} for W1."
            if zero
            else f"yet b1's gradient norm reaches {b1_norm:.3g} (W1's: at least {w1_norm:.3g})."
        )
        + f" Drawing b1 moves the seed's generator, so `{b1}` sees other minibatches than "
        f"`{bn}` and the two are not equal to the bit: val {mean_sd(seed_values(b1m, 'val_loss'))} "
        f"against {mean_sd(seed_values(bm, 'val_loss'))}, "
        + (
            f"no difference beyond the seeds' noise (Welch's t-test p={p:.3f})."
            if word == "no difference"
            else f"{word} (Welch's t-test p={p:.3f})."
        )
    )


def train_val_gap(rows):
    """BatchNorm's regularising side effect: val − train over the seeds, without it and with
    it. `rows`: (name, metrics)."""
    (plain, pm), (normed, nm) = rows

    def gaps(m):
        return [s["val_loss"] - s["train_loss"] for s in m["seeds"].values()]

    word, p = welch_verdict(gaps(pm), gaps(nm))
    verdict = "no different beyond the seeds' noise" if word == "no difference" else word
    return (
        f"Val − train loss over the seeds: `{plain}` {mean_sd(gaps(pm))}, `{normed}` "
        f"{mean_sd(gaps(nm))}. With BatchNorm the gap is {verdict} (Welch's t-test p={p:.3f})"
        + (
            ": each example's output depends on the others of its batch, a noise that "
            "regularises, as the lecture says."
            if word == "lower"
            else "."
        )
    )


def deep_gains(rows, n_layers):
    """Deep BatchNorm stacks at several gains: the activations barely move, the update:data
    ratios do. `rows`: (name, metrics, config), gains in any order."""
    rows = sorted(rows, key=lambda r: r[2].gain)
    init = [layer_values(m, "init", "act_std") for _, m, _ in rows]
    final = [layer_values(m, "final", "act_std") for _, m, _ in rows]
    moved = {
        when: max(max(a) - min(a) for a in zip(*stds)) if all(stds) else None
        for when, stds in (("init", init), ("final", final))
    }
    trained = [mean_ratio(m, n_layers) for _, m, _ in rows]
    ratios = [r for r in trained if r is not None]
    falls = len(ratios) == len(rows) and all(b < a for a, b in zip(ratios, ratios[1:]))
    rises = len(ratios) == len(rows) and all(b > a for a, b in zip(ratios, ratios[1:]))
    gains = " → ".join(f"{cfg.gain:.3g}" for _, _, cfg in rows)
    text = (
        f"With a BatchNorm after every Linear, as the gain goes {gains} the hidden layers' "
        f"output std (first seed) differs between the gains by at most {moved['init']:.3f} "
        "in any layer at init"
        + (f" and {moved['final']:.3f} after the last step" if moved["final"] is not None else "")
        + (
            ": BatchNorm divides each unit by its batch std and so undoes the weights' scale "
            "going forward. Not in the update"
            if moved["init"] < SAME_STD
            else ": the gain shows in the activations even through BatchNorm. And in the update"
        )
        + ": the hidden weights' last log10 update:data, averaged over the layers and seeds, "
        "goes " + " → ".join(ratio_words(r) for r in trained)
    )
    if falls:
        return text + (
            ", falling as the gain grows. Through BatchNorm the gradient of a weight scales as "
            "1 / gain and the weight as gain, so the same lr moves a larger weight by a smaller "
            "share of itself."
        )
    return text + (", rising as the gain grows." if rises else ", not steadily with the gain.")


def deep_lr(rows, n_layers, fan_ins):
    """BatchNorm without the 1/√fan_in wants a larger learning rate. `rows`: (name, metrics,
    config): the scaled stack, the unscaled one, the unscaled one at a larger lr."""
    (scaled, sm, scfg), (bare, bm, bcfg), (fast, fm, fcfg) = rows
    mean = {n: mean_ratio(m, n_layers) for n, m, _ in rows}
    init = {n: layer_values(m, "init", "act_std") for n, m in ((scaled, sm), (bare, bm))}
    undone = max(abs(a - b) for a, b in zip(init[bare], init[scaled])) < SAME_STD
    slower = None not in (mean[bare], mean[scaled]) and mean[bare] < mean[scaled] - 0.5
    text = (
        f"`{bare}` draws its weights without the 1/√fan_in, √{fan_ins[0]} = "
        f"{math.sqrt(fan_ins[0]):.3g} times larger in the first layer and √{fan_ins[1]} = "
        f"{math.sqrt(fan_ins[1]):.3g} in the others. "
        + ("BatchNorm undoes that going forward" if undone else "BatchNorm does not undo that")
        + f": the hidden layers' output std at init is {span(init[bare], '.3f')}, against "
        f"{span(init[scaled], '.3f')} for `{scaled}` (first seed). "
        + ("Not in the update" if slower else "The update")
        + ": the hidden weights' last log10 update:data (mean over layers and seeds) is "
        f"{ratio_words(mean[bare])} against {ratio_words(mean[scaled])}, and `{bare}` "
        f"{seeds_outcome(bm)}, `{scaled}` {seeds_outcome(sm)}. With lr {fcfg.optimizer.lr:g} "
        f"instead of {bcfg.optimizer.lr:g} ({fcfg.optimizer.lr / bcfg.optimizer.lr:g}×), "
        f"`{fast}`'s update:data is {ratio_words(mean[fast])}"
    )
    if None not in (mean[fast], mean[bare]):
        text += f" ({mean[fast] - mean[bare]:+.2f})"
    text += f" and it {seeds_outcome(fm)}"
    judged = [compared(fast, fm, other, om) for other, om in ((bare, bm), (scaled, sm))]
    judged = [j for j in judged if j]
    return text + (f": {' and '.join(judged)}." if judged else ".")


def mean_ratio(m, n_layers):
    """The hidden weights' last log10 update:data, averaged over the layers and the seeds that
    trained; None where none did."""
    ratios = seed_ratios(m, hidden_weights(m, n_layers))
    return statistics.fmean(ratios) if ratios else None


def ratio_words(value):
    return "none (diverged)" if value is None else f"{value:.2f}"


def deep_miscalibrated(rows, n_layers):
    """The lecture's two miscalibrated stacks against the calibrated one: the learning rate
    far too low, the fan-in scaling forgotten. `rows`: (name, metrics, config), the calibrated
    one first."""
    (good, gm, gcfg), *bad = rows

    def hidden(m):
        return seed_ratios(m, hidden_weights(m, n_layers))

    sat = {n: layer_values(m, "init", "saturated_pct") for n, m, _ in rows}
    texts = [
        f"The lecture's guide: a log10 update:data near {GUIDE}. `{good}` "
        f"({gcfg.optimizer.name} lr {gcfg.optimizer.lr:g}) ends with its hidden weights' last "
        "update:data at "
        f"{span(hidden(gm), '.2f')} (every layer and seed), its tanh layers "
        f"{span(sat[good], '.1f')}% saturated at init (first seed), and {seeds_outcome(gm)}."
    ]
    for name, m, cfg in bad:
        r = hidden(m)
        below = GUIDE - max(r) if r else None
        text = f"`{name}` ({cfg.optimizer.name} lr {cfg.optimizer.lr:g}"
        text += ", no 1/√fan_in)" if not cfg.fan_in_scaling else ")"
        if r:
            text += f": update:data {span(r, '.2f')}"
            if below > 0:
                text += f", {below:.1f} or more below {GUIDE}"
            elif min(r) > GUIDE:
                text += f", {min(r) - GUIDE:.1f} or more above {GUIDE}"
            layers = [statistics.fmean(seed_ratios(m, [k])) for k in hidden_weights(m, n_layers)]
            if max(layers) - min(layers) >= 1:
                fastest = layers.index(max(layers)) + 1
                text += (
                    f", spread over {max(layers) - min(layers):.1f} decades from layer to "
                    f"layer (fastest: layer {fastest})"
                )
        if sat[name] and sat[good] and sat[name] != sat[good]:
            more = min(sat[name]) > max(sat[good])
            text += f"; {span(sat[name], '.1f')}% of its tanh units saturated at init" + (
                ", more than any layer of `" + good + "`" if more else ""
            )
        text += f"; it {seeds_outcome(m)}"
        start = m["init_loss"]
        done = [s["val_loss"] for s in trained_seeds(m)]
        if done:
            drop = start - statistics.fmean(done)
            text += f", {drop:.2f} below its first batch's loss ({start:.4f}, first seed)"
        texts.append(text + ".")
    return " ".join(texts)
