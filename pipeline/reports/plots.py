"""Figures of a study, saved as PNG under runs/<study>/ and logged to the sweep's parent run.

Every figure is drawn from what the study stores (Optuna's trials, their ``metrics``, ``trace``
and ``theory`` user attributes, the base config), so ``make report`` can redraw them any time.
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

from pipeline.config import TrialSpec  # noqa: E402
from pipeline.core import predict, theory  # noqa: E402
from pipeline.core.model import RESIDUAL_KINDS  # noqa: E402
from pipeline.reports import cells, heatmap  # noqa: E402
from pipeline.reports.cells import group_name, network_label  # noqa: E402
from pipeline.search.study import trial_spec, trial_theory  # noqa: E402

NEVER = "never reached"
# Panels per figure when a figure draws one panel per network; beyond it, the networks with the
# most trials (the HTML report's filters reach every network).
MAX_PANELS = 9


class Row(NamedTuple):
    """One finished trial: its stored spec, its metrics, its stored curves, theory's stored
    prediction (None where the study has none: read it through ``prediction``)."""

    config: TrialSpec
    metrics: dict
    trace: dict
    theory: dict | None = None


def trial_row(study: optuna.Study, t: optuna.trial.FrozenTrial) -> Row:
    """A trial as the figures and the report's tables read it, from its user attributes."""
    return Row(
        trial_spec(study, t),
        t.user_attrs.get("metrics", {}),
        t.user_attrs.get("trace", {}),
        trial_theory(t),
    )


def study_rows(study: optuna.Study) -> list[Row]:
    return [
        trial_row(study, t)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "metrics" in t.user_attrs
    ]


def prediction(r: Row) -> dict[str, float]:
    """Theory's prediction for a row's trial: as the sweep stored it, else computed from the
    spec (a trial without diagnostics, a study written before it was stored): the same numbers."""
    return predict.trial_prediction(r.config) if r.theory is None else r.theory


def network_keys(specs) -> tuple[str, ...]:
    """The keys that name a network in the figures (``cells.network_keys``): kind, activation
    and depth, plus width, norm, heads and attention scale where the trials differ in them."""
    return cells.network_keys(specs)


def networks(rows: list[Row], keys: tuple[str, ...] | None = None) -> dict[str, list[Row]]:
    """Rows per network, labelled like a recommendation row (``mlp·relu·d16``), in key order;
    ``keys`` defaults to ``network_keys`` of the rows."""
    keys = keys or network_keys([r.config for r in rows])
    groups: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: [r.config[k] for k in keys]):
        groups.setdefault(network_label({k: r.config[k] for k in keys}), []).append(r)
    return groups


def _network_panels(rows: list[Row]) -> tuple[dict[str, list[Row]], str]:
    """At most ``MAX_PANELS`` networks (those with the most trials) and a title suffix saying
    how many were left out."""
    nets = networks(rows)
    if len(nets) <= MAX_PANELS:
        return nets, ""
    kept = set(sorted(nets, key=lambda n: -len(nets[n]))[:MAX_PANELS])
    shown = {n: members for n, members in nets.items() if n in kept}
    return shown, f" ({MAX_PANELS} of {len(nets)} networks; the HTML report filters show all)"


class Profile(NamedTuple):
    """A per-layer trace of one initializer's trials on one network."""

    median: np.ndarray  # per layer, over the trials (each trial's trace is its seeds' median)
    low: np.ndarray  # 25th percentile
    high: np.ndarray  # 75th percentile
    trials: int
    zero: bool  # every value exactly zero: nothing a log axis can draw


def layer_profiles(rows: list[Row], key: str) -> dict[str, Profile]:
    """Per initializer (``cells.group_name``): median and interquartile band of the trace
    ``key`` (e.g. ``init_backprop_norm``) over the rows' trials, layer by layer. A value that is
    not positive is NaN in the result: a log axis has no place for it."""
    traces: dict[str, list[np.ndarray]] = {}
    for r in rows:
        if key in r.trace:
            traces.setdefault(group_name(r.config.init.weights), []).append(
                np.asarray(r.trace[key], float)
            )
    profiles = {}
    for name, arrays in sorted(traces.items()):
        table = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
        for i, a in enumerate(arrays):
            table[i, : len(a)] = np.where(np.isfinite(a), a, np.nan)
        finite = table[np.isfinite(table)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a layer no trial has
            low, median, high = np.nanpercentile(table, [25, 50, 75], axis=0)
        profiles[name] = Profile(
            *(np.where(v > 0, v, np.nan) for v in (median, low, high)),
            len(arrays),
            bool(finite.size) and not finite.any(),
        )
    return profiles


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


def loss_curves(rows: list[Row], title: str, path: Path) -> Path | None:
    """Training-loss curves, one panel per network, one colour per initializer: each trial
    faint, the median curve of each initializer's trials bold."""
    rows = [r for r in rows if "loss" in r.trace]
    if not rows:
        return None
    panels, note = _network_panels(rows)
    colors = _colors(group_name(r.config.init.weights) for r in rows)
    fig, axes = _grid(len(panels), sharey=True)
    start = np.nanmedian([r.trace["loss"][0] for r in rows])
    values = np.concatenate([np.asarray(r.trace["loss"], float) for r in rows])
    values = values[np.isfinite(values) & (values > 0)]
    low = 0.8 * values.min() if values.size else None
    for ax, (label, members) in zip(axes, panels.items()):
        for name, color in colors.items():
            curves = [r.trace for r in members if group_name(r.config.init.weights) == name]
            for c in curves:
                ax.plot(c["loss_steps"], c["loss"], color=color, alpha=0.15, lw=0.7)
            if curves and len({len(c["loss"]) for c in curves}) == 1:
                median = np.nanmedian(np.asarray([c["loss"] for c in curves], float), axis=0)
                ax.plot(curves[0]["loss_steps"], median, color=color, lw=1.8, label=name)
        ax.set_title(f"{label} ({len(members)} trials)", fontsize=9)
        ax.set_yscale("log")
        if np.isfinite(start) and low is not None and low < 4 * start:
            ax.set_ylim(low, 4 * start)  # a few exploding curves must not flatten the others
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (log)")
        ax.legend(fontsize=7, title="median of", title_fontsize=7)
    fig.suptitle(
        f"{title}: training loss per network, by initializer (exploding runs leave the top)" + note
    )
    return _save(fig, path)


def depth_gain_heatmaps(rows: list[Row], title: str, path: Path) -> Path | None:
    """steps_to_target over hidden depth x sigma_w^2, one panel per activation (a square per
    trial; a grid preset fills it in as a heatmap), with the mean-field limit 6 xi_c over it
    (Schoenholz et al. 2017: networks deeper than about 6 xi_c do not train)."""
    points = []
    for r in rows:
        variances = predict.trial_variances(r.config)
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


def _per_layer(rows, title, path, key: str, ylabel: str, what: str):
    """The trace ``key`` against layer, one panel per network, log scale. With one initializer
    in the study, one line per trial coloured by gain; with several, one line per initializer
    (the median over its trials) with its interquartile band. What is exactly zero has no place
    on a log axis: the panel says so in words instead."""
    rows = [r for r in rows if key in r.trace]
    if not rows:
        return None
    panels, note = _network_panels(rows)
    colors = _colors(group_name(r.config.init.weights) for r in rows)
    by_gain = len(colors) == 1
    gains = [g for r in rows if isinstance(g := r.config["init.gain"], int | float) and g > 0]
    low, high = min(gains, default=1.0), max(gains, default=1.0)
    by_gain &= high > low  # colour by gain only when the gain varies
    norm = matplotlib.colors.LogNorm(low, high if by_gain else low * 1.01)
    cmap = plt.get_cmap("coolwarm")
    fig, axes = _grid(len(panels))
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
    return _save(fig, path)


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
    """Exploding steps against init.gain, one panel per network, one colour per initializer."""
    rows = [r for r in rows if isinstance(r.config["init.gain"], int | float)]
    if not rows:
        return None
    panels, note = _network_panels(rows)
    colors = _colors(group_name(r.config.init.weights) for r in rows)
    steps = max(r.config.train.steps for r in rows)
    fig, axes = _grid(len(panels), sharey=True)
    for ax, (label, members) in zip(axes, panels.items()):
        for name, color in colors.items():
            mine = [r for r in members if group_name(r.config.init.weights) == name]
            g = [r.config["init.gain"] for r in mine]
            e = [r.metrics["explosion_count"] for r in mine]
            if mine:
                ax.scatter(g, e, s=16, color=color, label=name, alpha=0.8)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.6, not 6 x 10^-1
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(-0.5, steps * 1.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("init.gain (log)")
        ax.set_ylabel(f"explosion_count (steps of {steps}; symlog)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: exploding gradients against gain{note}")
    return _save(fig, path)


def _chi1_points(rows: list[Row]) -> list[tuple[float, float, Row]]:
    """(predicted chi1, measured ||dL/dh|| ratio per layer step) of the plain networks: chi1 is
    the per-layer gradient gain of a stack of layers (Schoenholz et al. 2017), not of a residual
    stack, whose identity path carries the gradient past every block."""
    pts = []
    for r in rows:
        if r.config["model.kind"] in RESIDUAL_KINDS:
            continue
        pred = prediction(r)
        ratio = r.metrics.get("diag.init.backprop_ratio", math.nan)
        chi1 = pred.get("theory.chi1", math.nan)
        if 0 < chi1 < math.inf and 0 < ratio < math.inf:
            depth = int(r.config["model.depth"])
            # chi1^(L-1) is what a gradient should gain or lose over L - 1 layer steps.
            pts.append((chi1, ratio ** (1.0 / max(depth - 1, 1)), r))
    return pts


def _chi1_panel(ax, pts: list[tuple[float, float, Row]]) -> None:
    colors = _colors(r.config["model.activation"] for _, _, r in pts)
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
    ax.set_title("plain networks: chi1 against the gradient ratio", fontsize=9)
    ax.legend(fontsize=7, ncol=2)


# The residual networks' theory beside its measurement: (metric, its theory, marker, label).
RESIDUAL_PAIRS = (
    ("diag.init.stream_var_ratio", "theory.stream_var_ratio", "o", "stream variance ratio"),
    ("diag.init.logit_std", "theory.logit_std", "^", "attention logit std"),
)


def _residual_points(rows: list[Row]) -> list[tuple[float, float, str, str]]:
    """(predicted, measured, marker, colour key) of each residual trial and each quantity that
    theory gives for it (``theory.residual_stream``, ``theory.transformer_stream``,
    ``theory.attention_logit_std``)."""
    pts = []
    for r in rows:
        if r.config["model.kind"] not in RESIDUAL_KINDS:
            continue
        pred = prediction(r)
        for metric, key, marker, label in RESIDUAL_PAIRS:
            p, m = pred.get(key, math.nan), r.metrics.get(metric, math.nan)
            if 0 < p < math.inf and 0 < m < math.inf:
                pts.append((p, m, marker, f"{r.config['model.kind']} {label}"))
    return pts


def _residual_panel(ax, pts: list[tuple[float, float, str, str]]) -> None:
    colors = _colors(label for *_, label in pts)
    for label, color in colors.items():
        mine = [(p, m, marker) for p, m, marker, name in pts if name == label]
        ax.scatter([p for p, _, _ in mine], [m for _, m, _ in mine], s=16, color=color,
                   marker=mine[0][2], label=label, alpha=0.8)  # fmt: skip
    lo = min(min(p[0] for p in pts), min(p[1] for p in pts)) / 1.5
    hi = max(max(p[0] for p in pts), max(p[1] for p in pts)) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = theory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels would overlap
    ax.set_xlabel("theory at init (log)")
    ax.set_ylabel("measured at init on the probe batch (log)")
    ax.set_title("residual networks: stream variance and logit std", fontsize=9)
    ax.legend(fontsize=7)


def theory_vs_measurement(rows: list[Row], title: str, path: Path) -> Path | None:
    """Theory before training against the measurement at init: for plain networks predicted
    chi1 against the measured first/last back-propagated signal; for residual networks (resmlp,
    transformer, where chi1 of one layer says nothing about the stack) the predicted stream
    variance ratio and attention logit std against the measured ones. One panel per kind of
    network the study has."""
    plain, residual = _chi1_points(rows), _residual_points(rows)
    panels = [p for p in (plain, residual) if p]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    axes = list(axes[0])
    if plain:
        _chi1_panel(axes.pop(0), plain)
    if residual:
        _residual_panel(axes.pop(0), residual)
    fig.suptitle(f"{title}: theory before training vs measurement at init", fontsize=10)
    return _save(fig, path)


def attention_scales(rows: list[Row], title: str, path: Path) -> Path | None:
    """A transformer study by ``model.attention_scale``: the attention logits' std and the
    attention entropy at initialization (each trial a point, theory's std a bar), steps to
    target against the learning rate, and the median loss curve at each scale's best rate."""
    rows = [r for r in rows if r.config["model.kind"] == "transformer"]
    rows = [r for r in rows if "diag.init.logit_std" in r.metrics]
    if not rows:
        return None
    scales = [s for s in ("none", "1/sqrt(d)", "1/d") if any(_scale(r) == s for r in rows)]
    colors = dict(zip(scales, ("tab:red", "tab:blue", "tab:green")))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), layout="constrained")
    steps = max(int(r.config["train.steps"]) for r in rows)
    for i, scale in enumerate(scales):
        mine = [r for r in rows if _scale(r) == scale]
        jitter = np.linspace(-0.15, 0.15, len(mine)) if len(mine) > 1 else [0.0]
        for ax, key in zip(axes[:2], ("diag.init.logit_std", "diag.init.attention_entropy")):
            ax.scatter(i + np.asarray(jitter), [r.metrics[key] for r in mine], s=16,
                       color=colors[scale], alpha=0.8)  # fmt: skip
        predicted = [prediction(r).get("theory.logit_std") for r in mine]
        predicted = [p for p in predicted if p is not None]
        if predicted:
            axes[0].hlines(np.median(predicted), i - 0.3, i + 0.3, color="k", lw=1.5,
                           label="theory" if i == 0 else None)  # fmt: skip
        rates = sorted({r.config["train.learning_rate"] for r in mine})
        medians = [
            np.median([r.metrics["steps_to_target"] for r in mine
                       if r.config["train.learning_rate"] == lr])
            for lr in rates
        ]  # fmt: skip
        axes[2].plot(rates, medians, "o-", color=colors[scale], label=scale)
        objective = [  # steps to target, or how far the loss got: ranks rates that never reach it
            np.median([r.metrics["objective"] for r in mine
                       if r.config["train.learning_rate"] == lr])
            for lr in rates
        ]  # fmt: skip
        best = rates[int(np.argmin(objective))]
        curves = [r.trace for r in mine if r.config["train.learning_rate"] == best]
        curves = [c for c in curves if "loss" in c]
        if curves and len({len(c["loss"]) for c in curves}) == 1:
            median = np.nanmedian(np.asarray([c["loss"] for c in curves], float), axis=0)
            axes[3].plot(curves[0]["loss_steps"], median, color=colors[scale],
                         label=f"{scale} (lr {best:g})")  # fmt: skip
    for ax, label in zip(axes[:2], ("logit std at init (log)", "attention entropy / ln T")):
        ax.set_xticks(range(len(scales)), scales)
        ax.set_xlabel("model.attention_scale")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")
    if axes[0].get_legend_handles_labels()[0]:  # theory is not given for every norm
        axes[0].legend(fontsize=7)
    axes[1].set_ylim(0, 1.05)
    axes[2].set_xscale("log")
    rates = sorted({r.config["train.learning_rate"] for r in rows})
    axes[2].set_xticks(rates, [f"{lr:g}" for lr in rates])
    axes[2].minorticks_off()
    axes[2].axhline(steps + 1, color="gray", lw=0.8, ls=":")
    axes[2].set_xlabel("train.learning_rate (log)")
    axes[2].set_ylabel(f"median steps_to_target ({steps + 1}: {NEVER})")
    axes[2].legend(fontsize=7)
    axes[3].set_yscale("log")
    axes[3].set_xlabel("step")
    axes[3].set_ylabel("median training loss (log), best rate")
    axes[3].legend(fontsize=7)
    fig.suptitle(f"{title}: attention logit scale at initialization and in training")
    return _save(fig, path)


def _scale(row: Row) -> str:
    return row.config["model.attention_scale"]


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


# --- Residual rules (issue 13; the presets residual_without_norm, residual_branch_scale and
# preln_vs_postln, docs/residual.md) --------------------------------------------------------------
RESIDUAL_KEYS = ("init.residual", "model.norm")  # what the initial state depends on: the colour
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a measured stream beyond it is inf: overflow


def _residual_variants(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The residual keys and the other keys the trials differ in (the line style, e.g.
    ``train.warmup_steps``), leaving out depth (the x axis), the learning rate (each variant
    at its best) and the rules (generated from init.residual)."""
    flat = [r.config.flat() for r in rows]
    skip = {*RESIDUAL_KEYS, "model.depth", "train.learning_rate", "init.rules"}
    others = [k for k in flat[0] if k not in skip and len({repr(f[k]) for f in flat}) > 1]
    return list(RESIDUAL_KEYS), others


NORM_NAMES = {"none": "no norm", "pre": "pre-norm", "post": "post-norm", "rmsnorm": "RMSNorm"}


def _label(r: Row, keys: list[str]) -> str:
    """``gpt2 · pre-norm · warmup_steps 100``: the residual rule, the norm, other values."""
    names = {"init.residual": str, "model.norm": lambda v: NORM_NAMES.get(v, v)}
    return " · ".join(
        names[k](r.config[k]) if k in names else f"{k.split('.')[-1]} {r.config[k]}" for k in keys
    )


def _by_depth(members: list[Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = {}
    for r in sorted(members, key=lambda r: r.config["model.depth"]):
        out.setdefault(int(r.config["model.depth"]), []).append(r)
    return out


def _init_stream(r: Row) -> float:
    return r.metrics.get("diag.init.stream_var_ratio", np.nan)


def _predicted_stream(r: Row) -> float:
    return prediction(r).get("theory.stream_var_ratio", np.nan)


def _stream_panel(ax, groups: dict[str, list[Row]], colors: dict) -> None:
    """Measured stream variance ratio at init (dots; x at the top edge: float32 overflow)
    beside ``theory.residual_stream`` (dashed)."""
    top, overflow = 1.0, False
    for name, members in groups.items():
        per_depth = _by_depth(members)
        ds = list(per_depth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every seed overflowed: NaN
            measured = np.asarray(
                [np.nanmedian([_init_stream(r) for r in m]) for m in per_depth.values()]
            )
        predicted = np.asarray([_predicted_stream(m[0]) for m in per_depth.values()])
        top = max(top, np.nanmax(np.concatenate([measured, predicted, [1.0]])))
        ax.plot(ds, predicted, "--", color=colors[name], lw=1)
        ax.plot(ds, measured, "o", color=colors[name], label=name)
        pairs = zip(ds, measured, predicted)
        over = [d for d, m, p in pairs if not np.isfinite(m) and p >= FLOAT32_MAX]
        ax.plot(over, [FLOAT32_MAX] * len(over), "x", color=colors[name], ms=9)
        overflow |= bool(over)
    ax.set_yscale("log")
    ax.set_ylim(top=FLOAT32_MAX * 1e3 if overflow else top * 10)
    ax.set_title("stream variance at init: measured (dots), theory (dashed)", fontsize=9)
    ax.set_ylabel("last block / stream input (log; x: float32 overflow)")


def _gradient_panel(ax, groups: dict[str, list[Row]], colors: dict) -> None:
    """||dL/dW|| per layer at init, median over the deepest trials of each variant."""
    for name, members in groups.items():
        depth, deepest = max(_by_depth(members).items())
        traces = [r.trace["init_grad_norm"] for r in deepest if "init_grad_norm" in r.trace]
        if not traces or len({len(t) for t in traces}) > 1:
            continue
        table = np.asarray(traces, float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            norm = np.nanmedian(np.where(np.isfinite(table), table, np.nan), axis=0)
        norm = np.where(norm > 0, norm, np.nan)  # a zero gradient has no place on a log axis
        if np.isfinite(norm).any():
            x = np.arange(len(norm))
            ax.plot(x, norm, ".-", color=colors[name], lw=0.9, label=f"{name} (depth {depth})")
    if ax.lines:
        ax.set_yscale("log")
    ax.set_title("||dL/dW|| per layer at init (zero or non-finite: not drawn)", fontsize=9)
    ax.set_xlabel("layer (0 = input layer, 1..L = blocks, L+1 = read-out)")
    ax.set_ylabel("weight-gradient norm (log)")


def _median_steps(rows: list[Row], learning_rate: float) -> float:
    mine = [r for r in rows if r.config["train.learning_rate"] == learning_rate]
    return float(np.median([r.metrics["steps_to_target"] for r in mine]))


def residual_rules(rows: list[Row], title: str, path: Path) -> Path | None:
    """A residual MLP study against depth, one colour per ``init.residual`` x ``model.norm``
    and one line style per value of any other key the trials differ in (``train.warmup_steps``):
    (a) the stream variance ratio at init on the probe batch beside ``theory.residual_stream``
    (Hanin & Rolnick 2018: a branch uncorrelated with the stream adds its variance); (b) the
    median steps to target at each variant's best learning rate; (c) the share of runs (trials
    x seeds, every learning rate) that reached the target; (d) ||dL/dW|| per layer at init at
    the deepest depth (Xiong et al. 2020, Fig. 3: rising toward the output for post-norm)."""
    rows = [r for r in rows if r.config["model.kind"] == "resmlp"]
    if not rows:
        return None
    residual_keys, other_keys = _residual_variants(rows)
    at_init: dict[str, list[Row]] = {}
    trained: dict[str, list[Row]] = {}
    for r in rows:
        at_init.setdefault(_label(r, residual_keys), []).append(r)
        trained.setdefault(_label(r, residual_keys + other_keys), []).append(r)
    colors = _colors(at_init)
    styles = {}  # the colour of its residual variant, a line style per other setting
    for name in sorted(trained):
        color = colors[_label(trained[name][0], residual_keys)]
        taken = sum(1 for c, _ in styles.values() if c == color)
        styles[name] = (color, ("-", "--", ":", "-.")[taken % 4])
    steps = max(r.config.train.steps for r in rows)
    depths = sorted({int(r.config["model.depth"]) for r in rows})
    fig, (stream, speed, reach, grads) = _grid(4, 5.2, 3.7)
    _stream_panel(stream, at_init, colors)
    _gradient_panel(grads, at_init, colors)
    for name, members in trained.items():
        color, style = styles[name]
        per_depth = _by_depth(members)
        best = []
        for m in per_depth.values():
            rates = {r.config["train.learning_rate"] for r in m}
            best.append(min(_median_steps(m, lr) for lr in rates))
        shares = [np.mean([r.metrics["reached_target"] for r in m]) for m in per_depth.values()]
        speed.plot(list(per_depth), best, "o", ls=style, color=color, label=name)
        reach.plot(list(per_depth), shares, "o", ls=style, color=color, label=name)
    speed.axhline(steps + 1, color="gray", lw=0.8, ls=":")
    speed.set_title("steps to target at the best learning rate (median over seeds)", fontsize=9)
    speed.set_ylabel(f"steps to target ({steps + 1} = {NEVER})")
    reach.set_ylim(-0.05, 1.05)
    reach.set_title("share of runs that reached the target (every learning rate)", fontsize=9)
    reach.set_ylabel("reached (trials x seeds)")
    for ax in (stream, speed, reach):
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("residual blocks (log)")
    for ax in (stream, speed, reach, grads):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: residual rules against depth", fontsize=10)
    return _save(fig, path)


FIGURES: dict[str, Callable[[list[Row], str, Path], Path | None]] = {
    "loss_curves_by_init.png": loss_curves,
    "depth_x_sigma_w2.png": depth_gain_heatmaps,
    "layer_gradients_at_init.png": layer_gradients,
    "layer_variance_at_init.png": layer_variances,
    "steps_vs_depth.png": depth_curves,
    "explosions_vs_gain.png": explosions_vs_gain,
    "theory_vs_measurement.png": theory_vs_measurement,
    "attention_scales.png": attention_scales,
    "residual_rules.png": residual_rules,
}


def sweep_plots(study: optuna.Study, out: Path, answer: dict | None = None) -> list[Path]:
    """Every figure of a study; those without the data they need are skipped, and a figure
    that fails is reported and skipped: a picture is never worth losing a finished study.
    ``answer``: the study's ``recommend.recommendations`` where the caller has it (the LR x arm
    heatmap draws its basins and picks)."""
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(study)
    made = []
    try:
        made.append(heatmap.lr_heatmap(study, out / "lr_heatmap.png", answer) if rows else None)
    except Exception as e:
        warnings.warn(f"figure lr_heatmap.png skipped: {type(e).__name__}: {e}", stacklevel=2)
        plt.close("all")
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
