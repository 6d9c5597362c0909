"""The learning rate x arm heatmap of a study (``lr_heatmap.png``): the evidence behind the answer.

One panel per network: a row per arm (in the answer's order, ★ the recommended ones), a column per
learning rate tried, and in each cell the median over the seeds of the steps to target at that
point (one colour scale per network, fewer steps = better). A cell whose median seed never
reached the target is grey ("never"), one where at least half the seeds diverged is hatched
("div", the rule of the answer's ``divergence_lr``), a point the arm was not tried at is blank.
Each arm's ``basin`` (the answer's: the learning rates where every seed reached the target) is
outlined in black, its ``best_lr`` in red.

``heatmap_panels`` computes what is drawn (pure: networks and the answer in, panels out);
``draw_heatmap`` draws it; ``lr_heatmap`` does both for a study (``plots.sweep_plots``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from pipeline.core.estimate import Point, best_index  # noqa: E402
from pipeline.search.arms import Network, study_networks  # noqa: E402

NEVER, DIVERGED = "never", "div"
STAR = "★"
# More distinct learning rates than this in a network (a search's random rates, not a grid):
# its columns are quarter-decade bins, each cell the bin's best point.
MAX_COLUMNS = 30
BINS_PER_DECADE = 4
# The answer's learning rates are rounded to 4 significant digits: a column is the one within
# this relative distance (grid points are at least an eighth of a decade, 33%, apart).
MATCH_RTOL = 1e-3
CMAP = "viridis_r"  # fewer steps: brighter
NEVER_COLOR, DIVERGED_COLOR = "#c8c8c8", "#f4d6d2"
BASIN_COLOR, BEST_COLOR = "black", "#d62728"


@dataclass(frozen=True)
class Cell:
    """One arm at one learning rate (a bin's best point when the columns are bins)."""

    lr: float  # the point's own learning rate
    median: float  # median steps to target over the seeds (inf: never)
    mark: str  # "" (a number), NEVER or DIVERGED
    reached: float  # share of seeds that reached the target
    seeds: int


@dataclass
class Panel:
    """One network: ``cells[row][column]`` (None: not tried there), per row its basin's
    columns (first, last) and its best LR's column, both from the answer."""

    network: str
    budget: int
    seeds: int
    arms: list[str]  # rows, the answer's order
    recommended: list[str]
    lrs: list[float]  # columns: the learning rates tried (a bin's centre when binned)
    binned: bool
    cells: list[list[Cell | None]]
    basins: list[tuple[int, int] | None]
    best: list[int | None]
    fails: list[bool]

    def finite_medians(self) -> list[float]:
        return [
            c.median for row in self.cells for c in row if c and not c.mark
        ]  # what the colour scale spans


def _distinct(values: list[float]) -> list[float]:
    """Sorted values, near-equal ones (relative 1e-9) once."""
    out: list[float] = []
    for v in sorted(values):
        if not out or not math.isclose(v, out[-1], rel_tol=1e-9):
            out.append(v)
    return out


def _columns(lrs: list[float]) -> tuple[list[float], bool]:
    """The columns of a network's learning rates: each one, or quarter-decade bins beyond
    ``MAX_COLUMNS`` (the bin's centre)."""
    distinct = _distinct(lrs)
    if len(distinct) <= MAX_COLUMNS:
        return distinct, False
    bins = sorted({round(math.log10(v) * BINS_PER_DECADE) for v in distinct})
    return [10 ** (k / BINS_PER_DECADE) for k in bins], True


def _column(lr: float | None, columns: list[float], binned: bool) -> int | None:
    """The column of a learning rate (None when there is none)."""
    if lr is None or lr <= 0 or not columns:
        return None
    distance = [abs(math.log10(lr) - math.log10(c)) for c in columns]
    j = int(np.argmin(distance))
    if binned:
        return j if distance[j] <= 0.5 / BINS_PER_DECADE + 1e-9 else None
    return j if math.isclose(lr, columns[j], rel_tol=MATCH_RTOL) else None


def _cell(point: Point) -> Cell:
    median = point.median
    if point.diverged_share >= 0.5:
        mark = DIVERGED
    elif not math.isfinite(median):
        mark = NEVER
    else:
        mark = ""
    return Cell(point.lr, median, mark, point.reached, len(point.steps))


def network_panel(network: Network, answer: dict) -> Panel | None:
    """One network's panel, or None when it has fewer than two learning rates to show."""
    points = [p for ps in network.arms.values() for p in ps]
    columns, binned = _columns([p.lr for p in points])
    if len(columns) < 2:
        return None
    entries = {a["arm"]: a for a in answer["arms"]}
    arms = [a["arm"] for a in answer["arms"] if a["arm"] in network.arms]
    arms += sorted(set(network.arms) - set(arms))
    cells, basins, best, fails = [], [], [], []
    for arm in arms:
        at: dict[int, list[Point]] = {}
        for p in network.arms[arm]:
            j = _column(p.lr, columns, binned)
            if j is not None:
                at.setdefault(j, []).append(p)
        # Several points in one column (a bin, or other tuned values at one rate): the one the
        # answer's rule would pick among them.
        row = [None] * len(columns)
        for j, ps in at.items():
            row[j] = _cell(ps[best_index(ps)])
        cells.append(row)
        entry = entries.get(arm, {})
        span = entry.get("basin")
        ends = (
            (_column(span[0], columns, binned), _column(span[1], columns, binned)) if span else ()
        )
        basins.append(ends if ends and None not in ends else None)
        best.append(_column(entry.get("best_lr"), columns, binned))
        fails.append(bool(entry.get("fails", False)))
    return Panel(
        network.label,
        network.budget,
        int(answer.get("seeds") or 0),
        arms,
        list(answer.get("recommended", [])),
        columns,
        binned,
        cells,
        basins,
        best,
        fails,
    )


def heatmap_panels(networks: list[Network], document: dict) -> list[Panel]:
    """Per network of the answer (``recommend.recommendations``), in its order, what the
    heatmap draws; networks with fewer than two learning rates are left out."""
    by_label = {n.label: n for n in networks}
    panels = []
    for answer in document["networks"]:
        network = by_label.get(answer["network"])
        panel = network_panel(network, answer) if network else None
        if panel is not None:
            panels.append(panel)
    return panels


# --- drawing -------------------------------------------------------------------------------------

WIDTH_IN = 11.0  # the report's column is about 1200 px at 110 dpi
LABELS_IN = 2.3  # row labels, colour bar and margins
CHAR_IN = 0.058  # one digit at 7 pt, with a little air


def _lr_label(lr: float, binned: bool) -> str:
    return ("~" if binned else "") + f"{lr:.3g}"


def _text_color(cmap, norm, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _draw_panel(fig, ax, panel: Panel) -> None:
    n_rows, n_cols = len(panel.arms), len(panel.lrs)
    cmap = plt.get_cmap(CMAP).with_extremes(bad=(0, 0, 0, 0))  # a masked cell: not drawn
    finite = panel.finite_medians()
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 10.0)
    if hi <= lo * 1.05:
        lo, hi = lo / 1.1, hi * 1.1
    norm = LogNorm(lo, hi)
    grid = np.full((n_rows, n_cols), np.nan)
    for i, row in enumerate(panel.cells):
        for j, c in enumerate(row):
            if c and not c.mark:
                grid[i, j] = c.median
    image = ax.imshow(
        np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest"
    )
    cell_in = (WIDTH_IN - LABELS_IN) / max(n_cols, 1)
    numbers = cell_in >= 4 * CHAR_IN
    words = cell_in >= 5 * CHAR_IN
    for i, row in enumerate(panel.cells):
        for j, c in enumerate(row):
            if c is None:
                continue
            bold = "bold" if panel.best[i] == j else "normal"
            if c.mark == NEVER:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=NEVER_COLOR, lw=0))
                text, color = (NEVER if words else ""), "#555"
            elif c.mark == DIVERGED:
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        fc=DIVERGED_COLOR,
                        ec="#b0413e",
                        hatch="///",
                        lw=0,
                    )
                )
                text, color = (DIVERGED if numbers else ""), "#7a1f1c"
            else:
                text = f"{c.median:.0f}" if numbers else ""
                color = _text_color(cmap, norm, c.median)
            if text:
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color=color, fontweight=bold
                )
    for i in range(n_rows):
        if panel.basins[i] is not None:
            a, b = panel.basins[i]
            ax.add_patch(
                Rectangle((a - 0.5, i - 0.46), b - a + 1, 0.92, fill=False, ec=BASIN_COLOR, lw=2)
            )
        if panel.best[i] is not None:
            j = panel.best[i]
            ax.add_patch(
                Rectangle((j - 0.36, i - 0.32), 0.72, 0.64, fill=False, ec=BEST_COLOR, lw=1.6)
            )
    rec = set(panel.recommended)
    ax.set_yticks(range(n_rows), [f"{STAR} {a}" if a in rec else a for a in panel.arms], fontsize=8)
    for label, arm in zip(ax.get_yticklabels(), panel.arms):
        if arm in rec:
            label.set_fontweight("bold")
    ax.set_xticks(
        range(n_cols),
        [_lr_label(v, panel.binned) for v in panel.lrs],
        fontsize=7,
        rotation=45 if n_cols > 10 else 0,
        ha="right" if n_cols > 10 else "center",
        rotation_mode="anchor",
    )
    ax.set_xticks(np.arange(-0.5, n_cols), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2)
    for side in ax.spines.values():
        side.set_visible(False)
    what = "learning rate, quarter-decade bins" if panel.binned else "learning rate (log-spaced)"
    ax.set_xlabel(what, fontsize=8)
    picks = ", ".join(panel.recommended) if panel.recommended else "nothing to recommend"
    ax.set_title(
        f"{panel.network}  ({panel.seeds} seeds, {panel.budget} steps): {STAR} {picks}",
        fontsize=9,
        loc="left",
    )
    if finite:
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, aspect=12)
        bar.ax.minorticks_off()
        ticks = _nice_ticks(lo, hi)
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.ax.tick_params(labelsize=6)
        bar.set_label("median steps", fontsize=7)


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 values between lo and hi (its ends when fewer than two fall inside)."""
    ticks = [
        m * 10**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10**e <= hi
    ]
    return ticks if len(ticks) >= 2 else sorted({lo, *ticks, hi})


def draw_heatmap(panels: list[Panel], title: str, path: Path) -> Path | None:
    """One figure, one panel per network (stacked, each as tall as its arms need)."""
    if not panels:
        return None
    heights = [0.34 * len(p.arms) + 1.25 for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(WIDTH_IN, sum(heights) + 0.9),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
    )
    for ax, panel in zip(axes[:, 0], panels):
        _draw_panel(fig, ax, panel)
    budget = max(p.budget for p in panels)
    handles = [
        Patch(fc="white", ec=BASIN_COLOR, lw=2, label="basin: every seed reached the target"),
        Patch(fc="white", ec=BEST_COLOR, lw=1.6, label="best LR (bold number)"),
        Patch(fc=NEVER_COLOR, label=f"never: the median seed missed it in {budget} steps"),
        Patch(
            fc=DIVERGED_COLOR, ec="#b0413e", hatch="///", lw=0, label="div: half or more diverged"
        ),
        Patch(fc="white", ec="#ccc", label="blank: not tried"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=7, frameon=False)
    fig.suptitle(
        f"{title}: median steps to target per arm and learning rate ({STAR} recommended)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lr_heatmap(study: optuna.Study, path: Path, document: dict | None = None) -> Path | None:
    """Draw ``path`` for a study (``document``: its ``recommend.recommendations``, computed
    when not given); None when no network has two learning rates to show."""
    networks = study_networks(study)
    if not networks:
        return None
    if document is None:
        from pipeline.reports.recommend import recommendations

        document = recommendations(study)
    return draw_heatmap(heatmap_panels(networks, document), study.study_name, path)
