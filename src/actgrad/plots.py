"""Figures drawn with matplotlib's Agg backend (no display needed), each returned as the bytes of
a PNG file: the stages write them with their other outputs."""

import io
import math
import statistics
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors
WEIGHT_COLORS = {"C": "tab:purple", "W1": "tab:blue", "W2": "tab:orange"}


def depth_color(depth):
    """A fixed colour for the hidden layer at `depth` (from 1) and the weight feeding it."""
    return PALETTE[(depth - 1) % len(PALETTE)]


def variant_color(name):
    """A fixed colour for a variant in every figure, from its name alone (so that adding or
    editing another variant never changes it)."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def _png(fig, description=None):
    """The figure as PNG bytes; `description` goes into its Description text chunk."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None, "Description": description})
    plt.close(fig)
    return buffer.getvalue()


def loss_curve_figure(curves, steps, title, colors=None, ylabel="log10 loss"):
    """Overlay several curves ({label: values}) against `steps`."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, values in curves.items():
        ax.plot(steps, values, label=label, linewidth=1.2, color=(colors or {}).get(label))
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


LINE_STYLES = ("-", "--", ":")


def line_style(index):
    """A colour and a dash pattern of their own for the index-th line of a figure: the ten
    colours of tab10, then again dashed, then dotted."""
    return {"color": PALETTE[index % len(PALETTE)], "linestyle": LINE_STYLES[index // 10 % 3]}


def overlay_figure(panels, title):
    """One panel a row, {panel title: {name: (steps, values)}}; every name keeps its own colour
    and dash pattern across the panels, its legend beside its panel."""
    names = [name for curves in panels.values() for name in curves]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.3 * len(panels)), dpi=100)
    for ax, (panel_title, curves) in zip(fig.axes, panels.items()):
        for name, (steps, values) in curves.items():
            ax.plot(steps, values, label=name, linewidth=1.2, **line_style(names.index(name)))
        ax.set(title=panel_title, xlabel="step", ylabel="log10 loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle(title)
    return _png(fig, f"{title}: {', '.join(names)}")


def init_figure(z, h, inactive, activation, title, color):
    """Histograms of the activation's input and output, and the map of inactive units (by the
    activation's rule; none for an activation that always passes a gradient), at init."""
    fig = plt.figure(figsize=(10, 6.5), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    ax1, ax2, ax3 = (
        fig.add_subplot(grid[0, 0]),
        fig.add_subplot(grid[0, 1]),
        fig.add_subplot(grid[1, :]),
    )
    ax1.hist(z.flatten().tolist(), bins=50, color=color)
    ax1.set(title=f"{activation.name} input", xlabel="value", ylabel="count")
    ax2.hist(h.flatten().tolist(), bins=50, color=color)
    ax2.set(title=f"h = {activation.name}(input)", xlabel="value", ylabel="count")
    if inactive is None:
        ax3.text(
            0.5,
            0.5,
            f"{activation.name} passes a gradient everywhere: no inactive units",
            ha="center",
            va="center",
            transform=ax3.transAxes,
        )
        ax3.set(xticks=[], yticks=[])
    else:
        ax3.imshow(inactive.float().numpy(), cmap="gray", interpolation="nearest", aspect="auto")
        ax3.set(
            title=f"inactive ({activation.inactive_rule}, white): "
            f"{inactive.float().mean().item():.1%} of the batch",
            xlabel="hidden unit",
            ylabel="example in the batch",
        )
    fig.suptitle(title)
    return _png(fig)


def update_ratio_figure(steps, ratios, title, colors=None, legend_below=False):
    """log10 update:data ratio of each weight ({name: values}) over training, with the -3 guide.

    legend_below puts the legend under the axes, clear of the curves when there are many.
    """
    fig, ax = plt.subplots(figsize=(8, 5.2 if legend_below else 4.5), dpi=100)
    for name, values in ratios.items():
        color = (colors or WEIGHT_COLORS).get(name)
        ax.plot(steps, values, label=name, linewidth=1, color=color)
    ax.axhline(-3, color="black", linestyle="--", linewidth=1, label="-3 (guide)")
    ax.set(title=title, xlabel="step", ylabel="log10 update:data")
    ax.grid(alpha=0.3)
    if legend_below:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, frameon=False
        )
    else:
        ax.legend()
    return _png(fig)


def bn_calibration_figure(running, calibrated, title):
    """Running vs calibrated BatchNorm mean and std, one point per neuron."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=100)
    for ax, stat in zip(axes, ("mean", "std")):
        x, y = running[stat].flatten().tolist(), calibrated[stat].flatten().tolist()
        ax.scatter(x, y, s=8, alpha=0.7)
        lo, hi = min(x + y), max(x + y)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="equal")
        ax.set(
            title=f"BatchNorm {stat} per neuron",
            xlabel=f"running {stat}",
            ylabel=f"calibrated {stat} (whole training set)",
        )
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _png(fig)


def density_panels_figure(panels, colors, title, xlabel, logy=False):
    """Histogram densities as lines, one panel a row.

    `panels` maps a panel title to {legend label: (bin centres, density)}, or to a note (str)
    when there is nothing to show; `colors` gives each curve's colour by its position.
    Each panel's legend goes below it, clear of the curves.
    """
    height = 3.4 + 0.16 * len(colors)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height * len(panels)), dpi=100)
    for ax, (panel_title, curves) in zip(fig.axes, panels.items()):
        ylabel = "density (log scale)" if logy else "density"
        ax.set(title=panel_title, xlabel=xlabel, ylabel=ylabel)
        if isinstance(curves, str):
            ax.text(0.5, 0.5, curves, ha="center", va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[], xlabel="", ylabel="")
            continue
        if logy:
            ax.set_yscale("log")
        for color, (label, (x, density)) in zip(colors, curves.items()):
            ax.plot(x, density, color=color, label=label, linewidth=1.2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.suptitle(title)
    return _png(fig)


def series_figure(panels, title, symlog=(), counts=()):
    """One panel a row: {panel title: (steps, {label: values})}; NaN values leave gaps. The
    panels named in `symlog` get a y axis that is logarithmic but shows zeros too, those in
    `counts` one from 0 with whole-number ticks. Each line has its own colour and dash pattern,
    and a line that never moves says its value in the legend ("(0 throughout)"), so that a line
    hidden under an equal one is still read; a panel of one curve has no legend, and a note
    where every value is 0 says so."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), dpi=100)
    for ax, (panel_title, (steps, curves)) in zip(fig.axes, panels.items()):
        for index, (label, values) in enumerate(curves.items()):
            dashes = {"linestyle": LINE_STYLES[index % len(LINE_STYLES)]}
            if len(set(values)) == 1:
                label += f" ({values[0]:g} throughout)"
            ax.plot(steps, values, label=label, linewidth=1.6 - 0.2 * index, **dashes)
        if all(v == 0 for values in curves.values() for v in values):
            ax.text(0.5, 0.5, "0 at every count", ha="center", va="center", transform=ax.transAxes)
        if panel_title in symlog:
            ax.set_yscale("symlog", linthresh=1e-6)
        if panel_title in counts:
            top = max((v for values in curves.values() for v in values if v == v), default=0)
            ax.set_ylim(0, max(top, 1) * 1.1)
            ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set(title=panel_title, xlabel="step")
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8, ncol=4)
    fig.suptitle(title)
    return _png(fig)


def spectrum_figure(values, title):
    """Histograms of log10 singular values: {panel title: {label: values}}."""
    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 4), dpi=100, squeeze=False)
    for ax, (panel_title, curves) in zip(axes[0], values.items()):
        for color, (label, v) in zip(PALETTE, curves.items()):
            logs = [math.log10(x) for x in v if x > 0]
            ax.hist(logs, bins=40, histtype="step", linewidth=1.5, label=label, color=color)
        ax.axvline(0, color="black", linewidth=1, linestyle="--")
        ax.set(title=panel_title, xlabel="log10 singular value", ylabel="count")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _png(fig)


def bars_figure(panels, title, guides=None):
    """One bar chart a panel, side by side: {panel title: {label: value}}, each bar's value
    written on it; `guides` ({panel title: (label, y)}) draws a dashed line across a panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), dpi=100, squeeze=False)
    for ax, (panel_title, bars) in zip(axes[0], panels.items()):
        drawn = ax.bar(range(len(bars)), list(bars.values()), color=PALETTE[: len(bars)])
        ax.bar_label(drawn, fmt="%.3g", fontsize=8)
        ax.set_xticks(range(len(bars)), list(bars), fontsize=8)
        if guides and panel_title in guides:
            label, y = guides[panel_title]
            ax.axhline(y, color="black", linestyle="--", linewidth=1, label=label)
            ax.legend(fontsize=8)
        ax.set(title=panel_title, ylabel="loss")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    return _png(fig)


def histograms_figure(samples, title, columns=3):
    """A histogram a panel: {panel title: values}, all over the same range, four times the
    widest spread each way, so that their widths compare at a glance."""
    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), dpi=100, sharex=True)
    spread = max(statistics.pstdev(values) for values in samples.values())
    for ax, (panel_title, values) in zip(fig.axes, samples.items()):
        ax.hist(values, bins=80, range=(-4 * spread, 4 * spread), color=PALETTE[0])
        ax.set(title=panel_title)
        ax.grid(alpha=0.3)
    for ax in fig.axes[len(samples) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _png(fig)
