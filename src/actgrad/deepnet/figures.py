"""The figures of a deep run, as PNG bytes by kind: the histograms of layer outputs, their
gradients and the weights' gradients at init and after the last step, the update:data ratios,
and the singular values."""

from ..plots import density_panels_figure, depth_color, spectrum_figure, update_ratio_figure

DEEP_FIGURES = ("activations", "gradients", "weight_grads", "update_ratio", "spectrum")


def describe(cfg, train):
    """A deep config in words: its layers, gain and optimizer."""
    layers = "Linear" + " → BatchNorm1d" * cfg.batchnorm + f" → {cfg.activation.name}"
    return f"{train.n_layers} × ({layers}), gain {cfg.gain:.3g}, {cfg.optimizer.name}"


def _legends(readout, kind):
    """{legend label: histogram} of one read-out, with each curve's numbers in its label."""
    hists = readout.histograms[kind]
    if kind == "weight_grads":
        return {
            f"{w['label']}: grad std {w['grad_std']:.1e}, grad:data {w['grad_data_ratio']:.1e}": h
            for w, h in zip(readout.weights.values(), hists.values())
        }
    labels = []
    for layer in readout.layers.values():
        if kind == "gradients":
            labels.append(
                f"{layer['label']}: mean {layer['grad_mean']:+.1e}, std {layer['grad_std']:.1e}"
            )
        else:
            sat = layer["saturated_pct"]
            label = f"{layer['label']}: mean {layer['act_mean']:+.2f}, std {layer['act_std']:.2f}"
            if sat is not None:
                label += f", saturated {sat:.1f}%, tanh input std {layer['preact_std']:.2f}"
            labels.append(label)
    return dict(zip(labels, hists.values()))


def deep_figures(name, cfg, train, result):
    """{kind: PNG} for every kind of DEEP_FIGURES."""
    n = train.n_layers
    layer_colors = [depth_color(d) for d in range(1, n + 1)]
    weight_colors = ["black"] + [depth_color(d) for d in range(1, n + 2)]  # C, W1 ... output
    title = f"{name}: {{}}\n{describe(cfg, train)}"
    if result.diverged_at:
        title += f", diverged at step {result.diverged_at}"
    histograms = {  # kind: (what, x label, colours, log-scale density)
        "activations": ("hidden layer outputs", "activation value", layer_colors, False),
        "gradients": ("gradients of the hidden layer outputs", "gradient", layer_colors, False),
        "weight_grads": ("gradients of the weight matrices", "gradient", weight_colors, True),
    }
    figures = {}
    for kind, (what, xlabel, colors, logy) in histograms.items():
        panels = {
            "at init (step 1)": _legends(result.init, kind),
            f"after step {train.steps}": _legends(result.final, kind)
            if result.final
            else f"training diverged at step {result.diverged_at} (loss not finite):\n"
            "nothing to read out",
        }
        figures[kind] = density_panels_figure(panels, colors, title.format(what), xlabel, logy)
    ratios = {
        w["label"]: r for w, r in zip(result.init.weights.values(), result.update_ratios.values())
    }
    figures["update_ratio"] = update_ratio_figure(
        range(1, len(result.losses) + 1),
        ratios,
        title.format("update:data ratio per step, std(θ after - θ before) / std(θ after)"),
        colors=dict(zip(ratios, weight_colors)),
        legend_below=True,
    )
    figures["spectrum"] = spectrum_figure(
        _spectrum_panels(result, train), title.format("singular values")
    )
    return figures


def _spectrum_panels(result, train):
    spectra = {"init": result.spectra["init"]["values"]}
    if result.spectra["final"]:
        spectra[f"after step {train.steps}"] = result.spectra["final"]["values"]
    n = train.n_layers
    return {
        "the hidden stack's Jacobian, each example": {
            moment: values["jacobian"] for moment, values in spectra.items()
        },
        f"hidden weights W2 ... W{n}": {
            moment: [
                x for k, v in values.items() if k not in ("jacobian", "W1", f"W{n + 1}") for x in v
            ]
            for moment, values in spectra.items()
        },
    }
