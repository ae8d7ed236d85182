"""The report's answers to the lecture's and d2l's questions, in words, from the stages' metrics.

Each function takes metrics dicts as the stages write them and returns markdown; every claim it
makes is read off those numbers, so the words change when the numbers do.
"""


def listing(names):
    """ "a", "a and b", "a, b and c"."""
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def seeds_range(m, key, fmt=".4f"):
    """A per-seed value's range over the seeds, "2.1 to 2.2", or the one value they share."""
    values = [s[key] for s in m["seeds"].values()]
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if low == high else f"{low:{fmt}} to {high:{fmt}}"


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


def symmetry(constant, cm, broken, bm):
    """d2l 5.4: constant init keeps the hidden units identical; one random tensor breaks it."""
    units = seeds_range(cm, "distinct_units_final", ".0f")
    gap = max(abs(s["val_loss"] - s["one_unit_val_loss"]) for s in cm["seeds"].values())
    return (
        f"`{constant}` starts every hidden unit with the same incoming weights, bias and "
        "outgoing weights, so every unit computes the same value and receives the same "
        f"gradient at every step: after training, W1 has {units} distinct column(s), every "
        f"seed. The network is one hidden unit copied: cut down to its first unit, with the "
        f"outgoing weights of all units summed, its val loss differs from the full network's "
        f"({seeds_range(cm, 'val_loss')}) by {gap:.1g} at most. `{broken}` draws W2 at "
        "random instead: "
        "the units start identical but receive different gradients through their different "
        f"outgoing weights, and end with {seeds_range(bm, 'distinct_units_final', '.0f')} "
        f"distinct units and a val loss of {seeds_range(bm, 'val_loss')}."
    )


def fold(variant, m, n_hidden):
    """E02: BatchNorm folded into W1 and b1."""
    return (
        f"The calibrated BatchNorm of `{variant}` folds into W1 and a new b1 for every seed: "
        f"over the whole val split the largest logit difference is "
        f"{m['largest_abs_logit_diff']:.2g}, and the folded val loss "
        f"({seeds_range(m, 'folded_val_loss')}) differs from BatchNorm's by "
        f"{max(s['loss_diff'] for s in m['seeds'].values()):.1g} at most. At inference the "
        "folded model skips "
        f"BatchNorm's work on each example's {n_hidden} pre-activations (a subtraction, a "
        "division, a multiplication and an addition each). The stage times a pass over the val "
        "split both ways and logs the speed-up to its MLflow run (`inference_speedup`); "
        "timings change from run to run, so they stay out of this file."
    )


def lars(pairs):
    """d2l 5.4, exercise 4: LARS where SGD diverges or spreads the layers' steps."""
    lines, spreads = [], []
    for (name, m), (other, om) in pairs:
        ratios = [v for v in m["update_ratio_log10"].values() if v is not None]
        lines.append(
            f"`{other}` with SGD {outcome(om)}; `{name}` with LARS {outcome(m)}, every weight's "
            f"last log10 update:data between {min(ratios):.2f} and {max(ratios):.2f}."
        )
        if not om["diverged_at_step"]:
            sgd = [v for v in om["update_ratio_log10"].values() if v is not None]
            spreads.append(f"{min(sgd):.2f} to {max(sgd):.2f} for `{other}`")
    sgd_note = f", where SGD's spread from {'; '.join(spreads)}" if spreads else ""
    return " ".join(lines) + (
        " LARS scales each matrix's step by trust · ‖w‖ / ‖g‖, so every layer moves by the same "
        "fraction of its own size, set by lr, trust and momentum whatever its gradient: one "
        f"update:data ratio for the whole stack{sgd_note}."
    )


def outcome(m):
    if m["diverged_at_step"]:
        return f"diverges at step {m['diverged_at_step']}"
    return f"reaches val {m['val_loss']:.4f}"


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
        f"{listing(worst)} ({worst_ratio:.3g}). The layer statistics follow: as the tanh "
        f"stacks' gain goes {gains}, the last hidden layer's output std at init goes {stds} "
        f"and its saturation {saturation}: a gain below tanh's "
        "5/3 shrinks the signal layer by layer (vanishing), one above it saturates the units "
        "and spreads the spectrum."
    )
