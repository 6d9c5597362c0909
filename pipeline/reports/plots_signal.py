"""What did the signal do at initialization, layer by layer? The back-propagated signal and the
forward variance against layer, per network and initializer (vanishing and exploding gradients
show here before any training step)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.reports.cells import group_name  # noqa: E402
from pipeline.reports.drawing import network_panels, palette, panel_grid, save_figure  # noqa: E402
from pipeline.reports.trial_rows import Row, layer_profiles  # noqa: E402


def _per_layer(rows, title, path, key: str, ylabel: str, what: str):
    """The trace ``key`` against layer, one panel per network, log scale. With one initializer
    in the study, one line per trial coloured by gain; with several, one line per initializer
    (the median over its trials) with its interquartile band. What is exactly zero has no place
    on a log axis: the panel says so in words instead."""
    rows = [r for r in rows if key in r.trace]
    if not rows:
        return None
    panels, note = network_panels(rows)
    colors = palette(group_name(r.config.init.weights) for r in rows)
    by_gain = len(colors) == 1
    gains = [g for r in rows if isinstance(g := r.config["init.gain"], int | float) and g > 0]
    low, high = min(gains, default=1.0), max(gains, default=1.0)
    by_gain &= high > low  # colour by gain only when the gain varies
    norm = matplotlib.colors.LogNorm(low, high if by_gain else low * 1.01)
    cmap = plt.get_cmap("coolwarm")
    fig, axes = panel_grid(len(panels))
    for ax, (label, members) in zip(axes, panels.items()):
        profiles = layer_profiles(members, key)
        zero = [f"{name} ({p.trials})" for name, p in profiles.items() if p.zero]
        drawn = False
        for name, p in profiles.items():
            if p.zero:
                continue
            layers = np.arange(1, len(p.median) + 1)
            drawn |= bool(np.isfinite(p.median).any())
            if by_gain:
                for r in members:
                    y = np.asarray(r.trace[key], float)
                    color = cmap(norm(r.config["init.gain"]))
                    ax.plot(layers[: len(y)], np.where(y > 0, y, np.nan), color=color, lw=0.9)
                continue
            ax.fill_between(layers, p.low, p.high, color=colors[name], alpha=0.2, lw=0)
            ax.plot(layers, p.median, color=colors[name], lw=1.5, label=f"{name} ({p.trials})")
        if drawn:
            ax.set_yscale("log")
            if not by_gain:
                ax.legend(fontsize=7, title="initializer (trials)", title_fontsize=7)
        else:
            ax.set_yticks([])  # nothing to scale: no axis to read
        if zero:
            ax.text(
                0.5,
                0.06 if drawn else 0.5,
                "exactly zero at every layer:\n" + ", ".join(zero),
                ha="center",
                va="bottom" if drawn else "center",
                transform=ax.transAxes,
                fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "#999", "alpha": 0.9},
            )
        ax.set_title(f"{label} ({len(members)} trials)", fontsize=9)
        ax.set_xlabel("layer (1 = input layer)")
        ax.set_ylabel(ylabel)
    if by_gain:
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=axes, label="init.gain (log)")
    fig.suptitle(f"{title}: {what}{note}", fontsize=10)
    return save_figure(fig, path)


def layer_gradients(rows: list[Row], title: str, path: Path) -> Path | None:
    """||dL/dh_l||, the back-propagated signal, at initialization against layer."""
    return _per_layer(
        rows,
        title,
        path,
        "init_backprop_norm",
        "||dL/dh|| at init (log)",
        "back-propagated signal ||dL/dh|| per layer at initialization (median over trials, "
        "band: 25-75%)",
    )


def layer_variances(rows: list[Row], title: str, path: Path) -> Path | None:
    """The forward signal: activation variance of each layer at initialization."""
    return _per_layer(
        rows,
        title,
        path,
        "init_act_var",
        "activation variance at init (log)",
        "forward signal, variance of each layer's activations at initialization",
    )
