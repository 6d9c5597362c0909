"""What every figure of a study shares: the word for a run that never reached the target, which
networks get a panel, one colour per name, a grid of panels, and how a figure is saved."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.reports.trial_rows import Row, networks  # noqa: E402

NEVER = "never reached"
# Panels per figure when a figure draws one panel per network; beyond it, the networks with the
# most trials (the HTML report's filters reach every network).
MAX_PANELS = 9


def network_panels(rows: list[Row]) -> tuple[dict[str, list[Row]], str]:
    """At most ``MAX_PANELS`` networks (those with the most trials) and a title suffix saying
    how many were left out."""
    nets = networks(rows)
    if len(nets) <= MAX_PANELS:
        return nets, ""
    kept = set(sorted(nets, key=lambda n: -len(nets[n]))[:MAX_PANELS])
    shown = {n: members for n, members in nets.items() if n in kept}
    return shown, f" ({MAX_PANELS} of {len(nets)} networks; the HTML report filters show all)"


def save_figure(fig, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def palette(names) -> dict:
    names = sorted(set(names))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def panel_grid(n: int, width: float = 4.2, height: float = 3.2, sharey: bool = False):
    if n == 1:  # a lone panel gets room for the figure's title
        width, height = width * 1.5, height * 1.4
    cols = 2 if n == 4 else min(n, 3)  # four panels read best as a square
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width * cols, height * rows),
        squeeze=False,
        sharey=sharey,
        layout="constrained",
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])
