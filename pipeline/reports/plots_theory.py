"""Does theory match the measurement? Theory's prediction before training against what the
trial measured at initialization (chi1 for plain networks; the stream variance and the attention
logit std for residual ones), and a transformer study by attention logit scale."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core.model import RESIDUAL_KINDS  # noqa: E402
from pipeline.reports.drawing import NEVER, palette, save_figure  # noqa: E402
from pipeline.reports.trial_rows import Row, prediction  # noqa: E402


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
    colors = palette(r.config["model.activation"] for _, _, r in pts)
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
    colors = palette(label for *_, label in pts)
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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def _scale(row: Row) -> str:
    return row.config["model.attention_scale"]
