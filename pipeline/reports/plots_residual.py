"""Which residual rule trains deep? A residual MLP study against depth (issue 13; the presets
residual_without_norm, residual_branch_scale and preln_vs_postln, docs/residual.md): the stream
variance at init beside theory, steps to target, the share of runs that reached the target, and
the weight gradient per layer."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np

from pipeline.reports.drawing import NEVER, palette, panel_grid, save_figure
from pipeline.reports.trial_rows import Row, prediction

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
    colors = palette(at_init)
    styles = {}  # the colour of its residual variant, a line style per other setting
    for name in sorted(trained):
        color = colors[_label(trained[name][0], residual_keys)]
        taken = sum(1 for c, _ in styles.values() if c == color)
        styles[name] = (color, ("-", "--", ":", "-.")[taken % 4])
    steps = max(r.config.train.steps for r in rows)
    depths = sorted({int(r.config["model.depth"]) for r in rows})
    fig, (stream, speed, reach, grads) = panel_grid(4, 5.2, 3.7)
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
    return save_figure(fig, path)
