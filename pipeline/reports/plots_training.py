"""How did training go? Loss curves per network, steps to target against depth, exploding steps
against gain, and trainability over depth and weight variance beside the mean-field limit."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from pipeline.core import predict, theory
from pipeline.reports.cells import group_name
from pipeline.reports.drawing import NEVER, network_panels, palette, panel_grid, save_figure
from pipeline.reports.trial_rows import Row


def loss_curves(rows: list[Row], title: str, path: Path) -> Path | None:
    """Training-loss curves, one panel per network, one colour per initializer: each trial
    faint, the median curve of each initializer's trials bold."""
    rows = [r for r in rows if "loss" in r.trace]
    if not rows:
        return None
    panels, note = network_panels(rows)
    colors = palette(group_name(r.config.init.weights) for r in rows)
    fig, axes = panel_grid(len(panels), sharey=True)
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
    return save_figure(fig, path)


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
    fig, axes = panel_grid(len(acts), 4.6, 3.6)
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
    return save_figure(fig, path)


def depth_curves(rows: list[Row], title: str, path: Path) -> Path | None:
    """Median steps_to_target against depth, one line per initializer, panels per activation."""
    depths = {int(r.config["model.depth"]) for r in rows}
    if len(depths) < 2:
        return None
    acts = sorted({r.config["model.activation"] for r in rows})
    colors = palette(r.config["init.weights"] for r in rows)
    steps = max(r.config.train.steps for r in rows)
    fig, axes = panel_grid(len(acts), sharey=True)
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
    return save_figure(fig, path)


def explosions_vs_gain(rows: list[Row], title: str, path: Path) -> Path | None:
    """Exploding steps against init.gain, one panel per network, one colour per initializer."""
    rows = [r for r in rows if isinstance(r.config["init.gain"], int | float)]
    if not rows:
        return None
    panels, note = network_panels(rows)
    colors = palette(group_name(r.config.init.weights) for r in rows)
    steps = max(r.config.train.steps for r in rows)
    fig, axes = panel_grid(len(panels), sharey=True)
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
    return save_figure(fig, path)
