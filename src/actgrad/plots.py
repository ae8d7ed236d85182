"""Figures: written to PNG files with matplotlib's Agg backend (no display needed)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve_figure(curves, steps, title, path, ylabel="log10 loss"):
    """Overlay several curves ({label: values}) against `steps`."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, values in curves.items():
        ax.plot(steps, values, label=label, linewidth=1.2)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
