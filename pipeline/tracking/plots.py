"""Figures of a study, saved as PNG under runs/<study>/ and logged to the sweep's parent run.

Every figure is drawn from what the study stores (Optuna's trials, their ``metrics`` and
``trace`` user attributes, the base config), so ``make report`` can redraw them any time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402

from pipeline import theory  # noqa: E402
from pipeline.config import TrialSpec  # noqa: E402
from pipeline.search.study import trial_spec  # noqa: E402

NEVER = "never reached"


class Row(NamedTuple):
    """One finished trial: its stored spec, its metrics, its stored curves."""

    config: TrialSpec
    metrics: dict
    trace: dict


def study_rows(study: optuna.Study) -> list[Row]:
    return [
        Row(trial_spec(study, t), t.user_attrs["metrics"], t.user_attrs.get("trace", {}))
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "metrics" in t.user_attrs
    ]


def _save(fig, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _colors(names) -> dict:
    names = sorted(set(names))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _grid(n: int, width: float = 4.2, height: float = 3.2, sharey: bool = False):
    if n == 1:  # a lone panel gets room for the figure's title
        width, height = width * 1.5, height * 1.4
    cols = min(n, 3)
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


def loss_curves(rows: list[Row], title: str, path: Path) -> Path | None:
    """Training-loss curves, one panel per initializer, median curve in black."""
    rows = [r for r in rows if "loss" in r.trace]
    inits = sorted({r.config["init.weights"] for r in rows})
    if not inits:
        return None
    fig, axes = _grid(len(inits), sharey=True)
    start = np.nanmedian([r.trace["loss"][0] for r in rows])
    values = np.concatenate([np.asarray(r.trace["loss"], float) for r in rows])
    values = values[np.isfinite(values) & (values > 0)]
    low = 0.8 * values.min() if values.size else None
    for ax, name in zip(axes, inits):
        curves = [r.trace for r in rows if r.config["init.weights"] == name]
        for c in curves:
            ax.plot(c["loss_steps"], c["loss"], color="tab:blue", alpha=0.25, lw=0.8)
        if len(curves) > 1 and len({len(c["loss"]) for c in curves}) == 1:
            median = np.nanmedian(np.asarray([c["loss"] for c in curves], float), axis=0)
            ax.plot(curves[0]["loss_steps"], median, color="k", lw=1.5, label="median")
            ax.legend(fontsize=7)
        ax.set_title(f"{name} ({len(curves)} trials)", fontsize=9)
        ax.set_yscale("log")
        if np.isfinite(start) and low is not None and low < 4 * start:
            ax.set_ylim(low, 4 * start)  # a few exploding curves must not flatten the others
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (log)")
    fig.suptitle(f"{title}: training loss by initializer (exploding runs leave the top)")
    return _save(fig, path)


def depth_gain_heatmaps(rows: list[Row], title: str, path: Path) -> Path | None:
    """steps_to_target over hidden depth x sigma_w^2, one panel per activation (a square per
    trial; a grid preset fills it in as a heatmap), with the mean-field limit 6 xi_c over it
    (Schoenholz et al. 2017: networks deeper than about 6 xi_c do not train)."""
    points = []
    for r in rows:
        variances = theory.trial_variances(r.config)
        if variances is not None and variances[0] > 0:
            points.append((r, *variances))
    acts = sorted({r.config["model.activation"] for r, _, _ in points})
    if not acts:
        return None
    steps = max(r.config.train.steps for r in rows)
    fig, axes = _grid(len(acts), 4.6, 3.6)
    for ax, act in zip(axes, acts):
        mine = [(r, sw2, sb2) for r, sw2, sb2 in points if r.config["model.activation"] == act]
        sw2 = np.asarray([p[1] for p in mine])
        depth = np.asarray([int(p[0].config["model.depth"]) for p in mine])
        speed = np.asarray([p[0].metrics["steps_to_target"] for p in mine])
        order = np.argsort(-speed)  # fast trials drawn last, on top
        cells = ax.scatter(
            sw2[order],
            depth[order],
            c=speed[order],
            cmap="viridis_r",
            vmin=0,
            vmax=steps + 1,
            marker="s",
            s=220 if len(set(zip(sw2, depth))) <= 60 else 70,  # a grid preset: cells touch
            edgecolors="none",
        )
        sb2 = float(np.median([p[2] for p in mine]))
        slope = float(mine[0][0].config.get("model.negative_slope", 0.01))
        xs = np.geomspace(sw2.min() / 1.2, sw2.max() * 1.2, 80)
        limit = np.asarray(
            [6 * theory.cached_propagation(act, float(f"{x:.4g}"), sb2, slope)["xi_c"] for x in xs]
        )
        top = depth.max() * 2
        ax.plot(xs, np.minimum(limit, top), "r--", lw=1.5, label=r"6 $\xi_c$ (theory)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
        ax.set_yscale("log", base=2)
        ax.set_yticks(sorted(set(depth)), [str(d) for d in sorted(set(depth))])
        ax.set_ylim(depth.min() / 1.5, top)
        ax.set_title(f"{act} ($\\sigma_b^2$ = {sb2:.3g})", fontsize=9)
        ax.set_xlabel(r"$\sigma_w^2$ = fan_in x Var(W) (log)")
        ax.set_ylabel("hidden depth (log)")
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(cells, ax=ax, label=f"steps_to_target ({steps + 1} = {NEVER})")
    fig.suptitle(f"{title}: trainability over depth and weight variance")
    return _save(fig, path)


def _panels(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows grouped by initializer, and by activation too when that still fits nine panels."""
    pairs = sorted({(r.config["init.weights"], r.config["model.activation"]) for r in rows})
    by_pair = len(pairs) <= 9 and len({a for _, a in pairs}) > 1
    groups: dict[str, list[Row]] = {}
    for r in rows:
        name = r.config["init.weights"]
        key = f"{name} · {r.config['model.activation']}" if by_pair else name
        groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items()))


def _per_layer(rows, title, path, lines: dict[str, str], ylabel: str, what: str):
    """One line per trial and trace key (``lines``: key -> line style) against layer, one
    panel per initializer (and activation), coloured by gain, log scale."""
    rows = [r for r in rows if all(k in r.trace for k in lines)]
    if not rows:
        return None
    panels = _panels(rows)
    gains = [g for r in rows if isinstance(g := r.config["init.gain"], int | float) and g > 0]
    low, high = min(gains, default=1.0), max(gains, default=1.0)
    varied = high > low  # colour by gain only when the gain varies
    norm = matplotlib.colors.LogNorm(low, high if varied else low * 1.01)
    cmap = plt.get_cmap("coolwarm")
    fig, axes = _grid(len(panels))
    for ax, (name, members) in zip(axes, panels.items()):
        drawn = False
        for r in members:
            g = r.config["init.gain"]
            color = cmap(norm(g)) if varied and isinstance(g, (int, float)) else "tab:blue"
            for key, style in lines.items():
                y = np.asarray(r.trace[key], float)
                y = np.where(y > 0, y, np.nan)  # a zero has no place on a log axis
                drawn |= bool(np.isfinite(y).any())
                ax.plot(np.arange(1, len(y) + 1), y, color=color, lw=0.9, ls=style, alpha=0.75)
        if drawn:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "all zero: no signal", ha="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer (1 = input layer)")
        ax.set_ylabel(ylabel)
    if varied:
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=axes, label="init.gain (log)")
    fig.suptitle(f"{title}: {what}", fontsize=10)
    return _save(fig, path)


def layer_gradients(rows: list[Row], title: str, path: Path) -> Path | None:
    """||dL/dh_l|| (solid) and ||dL/dW_l|| (dotted) at initialization against layer."""
    return _per_layer(
        rows,
        title,
        path,
        {"init_backprop_norm": "-", "init_grad_norm": ":"},
        "norm at init (log)",
        "back-propagated signal ||dL/dh|| (solid) and weight gradient ||dL/dW|| (dotted) at "
        "initialization",
    )


def layer_variances(rows: list[Row], title: str, path: Path) -> Path | None:
    """The forward signal: activation variance of each layer at initialization."""
    return _per_layer(
        rows,
        title,
        path,
        {"init_act_var": "-"},
        "activation variance at init (log)",
        "forward signal, variance of each layer's activations at initialization",
    )


def depth_curves(rows: list[Row], title: str, path: Path) -> Path | None:
    """Median steps_to_target against depth, one line per initializer, panels per activation."""
    depths = {int(r.config["model.depth"]) for r in rows}
    if len(depths) < 2:
        return None
    acts = sorted({r.config["model.activation"] for r in rows})
    colors = _colors(r.config["init.weights"] for r in rows)
    steps = max(r.config.train.steps for r in rows)
    fig, axes = _grid(len(acts), sharey=True)
    for ax, act in zip(axes, acts):
        for name, color in colors.items():
            mine = [r for r in rows if r.config["model.activation"] == act]
            mine = [r for r in mine if r.config["init.weights"] == name]
            ds = sorted({int(r.config["model.depth"]) for r in mine})
            med = [
                np.median(
                    [r.metrics["steps_to_target"] for r in mine if r.config["model.depth"] == d]
                )
                for d in ds
            ]
            if ds:
                ax.plot(ds, med, "o-", color=color, label=name)
        ax.axhline(steps + 1, color="gray", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(depths), [str(d) for d in sorted(depths)])
        ax.set_title(act, fontsize=9)
        ax.set_xlabel("hidden depth (log)")
        ax.set_ylabel(f"median steps_to_target ({steps + 1} = {NEVER})")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: convergence speed against depth")
    return _save(fig, path)


def explosions_vs_gain(rows: list[Row], title: str, path: Path) -> Path | None:
    rows = [r for r in rows if isinstance(r.config["init.gain"], int | float)]
    if not rows:
        return None
    colors = _colors(r.config["model.activation"] for r in rows)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = max(r.config.train.steps for r in rows)
    for act, color in colors.items():
        mine = [r for r in rows if r.config["model.activation"] == act]
        g = [r.config["init.gain"] for r in mine]
        e = [r.metrics["explosion_count"] for r in mine]
        ax.scatter(g, e, s=16, color=color, label=act, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(-0.5, steps * 1.5)
    ax.set_xlabel("init.gain (log)")
    ax.set_ylabel(f"explosion_count (steps of {steps}; symlog)")
    ax.set_title(f"{title}: exploding gradients against gain")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def theory_vs_measurement(rows: list[Row], title: str, path: Path) -> Path | None:
    """Predicted chi1 before training against the measured first/last back-propagated signal."""
    pts = []
    for r in rows:
        pred = theory.trial_prediction(r.config)
        ratio = r.metrics.get("diag.init.backprop_ratio", math.nan)
        chi1 = pred.get("theory.chi1", math.nan)
        if 0 < chi1 < math.inf and 0 < ratio < math.inf:
            depth = int(r.config["model.depth"])
            # chi1^(L-1) is what a gradient should gain or lose over L - 1 layer steps.
            pts.append((chi1, ratio ** (1.0 / max(depth - 1, 1)), r))
    if not pts:
        return None
    colors = _colors(r.config["model.activation"] for _, _, r in pts)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for act, color in colors.items():
        mine = [(c, m) for c, m, r in pts if r.config["model.activation"] == act]
        ax.scatter(*zip(*mine), s=14, color=color, label=act, alpha=0.8)
    lo = min(min(p[0] for p in pts), min(p[1] ** 2 for p in pts), 0.1)
    hi = max(max(p[0] for p in pts), max(p[1] ** 2 for p in pts), 10)
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, np.sqrt(xs), "k--", lw=1, label=r"$\sqrt{\chi_1}$ (mean field)")
    ax.axvline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"predicted $\chi_1$ (log; < 1 ordered, > 1 chaotic)")
    ax.set_ylabel("measured ||dL/dh|| ratio per layer, first/last (log)")
    ax.set_title(f"{title}: theory before training vs measurement at init", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _optuna_figure(draw: Callable, study: optuna.Study, path: Path, **kw) -> Path | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2 or len(study.directions) > 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib backend is marked experimental
        try:
            ax = draw(study, **kw)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return None  # e.g. importances need at least two distinct values per parameter
    fig = np.ravel(ax)[0].figure
    fig.set_size_inches(9, 5)
    return _save(fig, path)


FIGURES: dict[str, Callable[[list[Row], str, Path], Path | None]] = {
    "loss_curves_by_init.png": loss_curves,
    "depth_x_sigma_w2.png": depth_gain_heatmaps,
    "layer_gradients_at_init.png": layer_gradients,
    "layer_variance_at_init.png": layer_variances,
    "steps_vs_depth.png": depth_curves,
    "explosions_vs_gain.png": explosions_vs_gain,
    "theory_vs_measurement.png": theory_vs_measurement,
}


def sweep_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Every figure of a study; those without the data they need are skipped, and a figure
    that fails is reported and skipped: a picture is never worth losing a finished study."""
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(study)
    made = []
    for filename, draw in FIGURES.items():
        try:
            made.append(draw(rows, study.study_name, out / filename) if rows else None)
        except Exception as e:
            warnings.warn(f"figure {filename} skipped: {type(e).__name__}: {e}", stacklevel=2)
            plt.close("all")
    made.append(_optuna_figure(ovm.plot_param_importances, study, out / "param_importances.png"))
    made.append(
        _optuna_figure(ovm.plot_parallel_coordinate, study, out / "parallel_coordinates.png")
    )
    return [p for p in made if p is not None]
