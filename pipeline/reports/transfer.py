"""Does what was tuned on a small proxy stay best on a bigger network? (``python -m pipeline
transfer``, docs/mup.md.)

Two questions, read from a finished study (no training here):

- **Learning-rate transfer** (Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466, Fig. 1 and
  §5): for a study that varies ``train.learning_rate`` and the size (``model.width`` and/or
  ``model.depth``), per parametrization and size, the learning rate with the lowest final loss,
  and whether that optimum stays within one step of the study's learning-rate grid from the
  smallest size to the largest. The figure is the paper's: final loss against learning rate, one
  curve per size, one panel per parametrization.
- **Initialization transfer**: for a study that varies the initialization (``init.*`` keys such
  as ``init.weights`` and ``init.gain``) and the size, per parametrization, Spearman's rank
  correlation between the proxy's ranking of the initialization configs (the smallest width and
  depth) and each larger size's, and whether the proxy's winner is still the winner.

The loss is a trial's ``final_train_loss`` (its smoothed training loss at the last step, already
the median over the trial's seeds): the quantity the paper plots. A trial that diverged (NaN or
inf) counts as worse than any finite loss.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optuna
from scipy import stats

from pipeline.search.study import trial_metrics, trial_spec

METRIC = "final_train_loss"
LR_KEY = "train.learning_rate"
SIZE_KEYS = ("model.width", "model.depth")
PARAM_KEY = "init.parametrization"
# Varying keys that are neither a config being ranked nor the size: the proxy's bookkeeping.
NOT_CONFIG = (*SIZE_KEYS, PARAM_KEY, LR_KEY, "model.base_width", "model.base_depth")


class Point(NamedTuple):
    """One finished trial, reduced to what transfer reads."""

    parametrization: str
    size: tuple[int, int]  # (width, depth)
    learning_rate: float
    config: tuple  # the values of the other varying keys, in ``config_keys`` order
    loss: float  # final_train_loss; +inf when the trial diverged


def study_points(study: optuna.Study, metric: str = METRIC) -> tuple[list[Point], tuple[str, ...]]:
    """Every completed trial as a ``Point``, and the names of the keys in ``Point.config``: the
    keys (besides size, learning rate and parametrization) whose value differs between trials."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    specs = [trial_spec(study, t).flat() for t in done]
    varying = sorted(
        k
        for k in (specs[0] if specs else {})
        if k not in NOT_CONFIG and len({repr(s.get(k)) for s in specs}) > 1
    )
    points = []
    for trial, spec in zip(done, specs, strict=True):
        loss = float(trial_metrics(trial).get(metric, math.inf))
        points.append(
            Point(
                parametrization=str(spec[PARAM_KEY]),
                size=(int(spec["model.width"]), int(spec["model.depth"])),
                learning_rate=float(spec[LR_KEY]),
                config=tuple(spec[k] for k in varying),
                loss=loss if math.isfinite(loss) else math.inf,
            )
        )
    return points, tuple(varying)


def _median_loss(points: Sequence[Point], key) -> dict:
    """Median loss per ``key(point)`` (several trials can share one, e.g. a key not grouped on)."""
    groups = defaultdict(list)
    for p in points:
        groups[key(p)].append(p.loss)
    return {k: float(np.median(v)) for k, v in groups.items()}


def _size_label(size: tuple[int, int]) -> str:
    return f"w{size[0]}·d{size[1]}"


def lr_transfer(points: Sequence[Point]) -> dict:
    """Per parametrization: the learning rate of lowest loss at each size, and how many steps of
    the learning-rate grid (the sorted distinct rates of the study) it moves from the smallest
    size to the largest. ``transfers``: it moves by at most one step."""
    grid = sorted({p.learning_rate for p in points})
    out = {}
    for param in sorted({p.parametrization for p in points}):
        losses = _median_loss(
            [p for p in points if p.parametrization == param], lambda p: (p.size, p.learning_rate)
        )
        sizes = sorted({s for s, _ in losses})
        optimum, curve = {}, {}
        for size in sizes:
            rates = sorted(lr for s, lr in losses if s == size)
            curve[_size_label(size)] = {lr: losses[(size, lr)] for lr in rates}
            # min keeps the first (smallest) rate on a tie: deterministic, and ties are rare
            optimum[size] = min(rates, key=lambda lr: losses[(size, lr)])
        steps = {s: grid.index(optimum[s]) - grid.index(optimum[sizes[0]]) for s in sizes}
        out[param] = {
            "optimal_lr": {_size_label(s): optimum[s] for s in sizes},
            "optimal_loss": {_size_label(s): losses[(s, optimum[s])] for s in sizes},
            "shift_steps": steps[sizes[-1]],  # signed: negative = smaller rate at the largest
            "max_shift_steps": max(abs(v) for v in steps.values()),
            "transfers": abs(steps[sizes[-1]]) <= 1,
            "loss": curve,
        }
    return {"grid": grid, "sizes": [_size_label(s) for s in _sizes(points)], "by": out}


def _sizes(points: Sequence[Point]) -> list[tuple[int, int]]:
    return sorted({p.size for p in points})


def _ranked_losses(losses: dict, configs: list) -> np.ndarray:
    """Losses in ``configs`` order, a diverged (inf) one replaced by a value above every finite
    one so that it ranks last (scipy's spearmanr would return NaN on inf)."""
    values = np.array([losses.get(c, math.inf) for c in configs], dtype=float)
    finite = values[np.isfinite(values)]
    ceiling = (finite.max() + 1.0) if finite.size else 0.0
    return np.where(np.isfinite(values), values, ceiling)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN for fewer than 3 configs."""
    return float(stats.spearmanr(a, b).statistic) if len(a) > 2 else math.nan


def init_transfer(points: Sequence[Point]) -> dict:
    """Per parametrization and target size: Spearman's ρ between the proxy's losses of the
    configs and the target's (all, and the proxy's better half), whether the proxy's best config
    is the target's best, and the rank (0 = best) the proxy's winner takes at the target. The
    proxy is the smallest width at the smallest depth; configs missing at either size are left
    out. When the study also varies the learning rate, it is part of a config (its last value)."""
    if len({p.learning_rate for p in points}) > 1:
        points = [p._replace(config=(*p.config, p.learning_rate)) for p in points]
    sizes = _sizes(points)
    proxy = (min(s[0] for s in sizes), min(s[1] for s in sizes))
    out = {}
    for param in sorted({p.parametrization for p in points}):
        mine = [p for p in points if p.parametrization == param]
        by_size = {
            size: _median_loss([p for p in mine if p.size == size], lambda p: p.config)
            for size in sizes
        }
        if not by_size.get(proxy):
            continue
        targets = {}
        for size in sizes:
            if size == proxy or not by_size[size]:
                continue
            configs = sorted(set(by_size[proxy]) & set(by_size[size]), key=repr)
            a = _ranked_losses(by_size[proxy], configs)
            b = _ranked_losses(by_size[size], configs)
            # Also over the proxy's better half alone: configs that diverge everywhere rank last
            # at every size and would lift ρ over all configs without saying which good one wins.
            top = np.argsort(a, kind="stable")[: math.ceil(len(configs) / 2)]
            winner = configs[int(np.argmin(a))]
            target_order = [configs[i] for i in np.argsort(b, kind="stable")]
            targets[_size_label(size)] = {
                "spearman": _spearman(a, b),
                "spearman_top": _spearman(a[top], b[top]),
                "top_configs": len(top),
                "configs": len(configs),
                "proxy_winner": list(winner),
                "target_winner": list(target_order[0]),
                "winner_stays": winner == target_order[0],
                "proxy_winner_rank": target_order.index(winner),
            }
        out[param] = targets
    return {"proxy": _size_label(proxy), "by": out}


def analyse(study: optuna.Study) -> dict:
    """Both analyses the study allows: learning-rate transfer if it varies the learning rate
    and the size, initialization transfer if it varies other keys and the size."""
    points, config_keys = study_points(study)
    if not points:
        raise LookupError(f"study {study.study_name!r} has no completed trial yet")
    if len(_sizes(points)) < 2:
        raise LookupError(
            f"study {study.study_name!r} does not vary model.width or model.depth: "
            "transfer compares sizes"
        )
    out: dict = {"study": study.study_name, "metric": METRIC, "config_keys": list(config_keys)}
    if len({p.learning_rate for p in points}) > 1:
        out["lr_transfer"] = lr_transfer(points)
    if config_keys:
        out["init_transfer"] = init_transfer(points)
    if "lr_transfer" not in out and "init_transfer" not in out:
        raise LookupError(
            f"study {study.study_name!r} varies only the size: transfer needs a learning-rate "
            "grid or initialization configs to rank"
        )
    return out


def plot_lr(result: dict, title: str, path: Path) -> Path:
    """The Tensor Programs V Fig. 1 layout: loss against learning rate (log), one curve per
    size (light to dark as it grows), one panel per parametrization, the optimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = result["by"]
    fig, axes = plt.subplots(1, len(by), figsize=(4.6 * len(by), 3.6), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    sizes = result["sizes"]
    for ax, (param, r) in zip(axes[0], by.items(), strict=True):
        for i, label in enumerate(sizes):
            curve = r["loss"].get(label)
            if not curve:
                continue
            color = cmap(i / max(1, len(sizes) - 1))
            rates = list(curve)
            ax.plot(rates, [curve[lr] for lr in rates], "o-", ms=3, color=color, label=label)
            best = r["optimal_lr"][label]
            ax.plot([best], [curve[best]], "*", ms=11, color=color, mec="k", mew=0.5)
        verdict = "within one step" if r["transfers"] else f"moves {r['shift_steps']:+d} steps"
        ax.set_title(f"{param}: optimum {verdict}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel(f"{METRIC} (median over seeds)")
    axes[0][0].legend(title="size", fontsize=8, loc="lower left")
    return _save(fig, title, path)


def _save(fig, title: str, path: Path) -> Path:
    """Title, lay out, write and close a figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_init(points: Sequence[Point], result: dict, title: str, path: Path) -> Path:
    """One panel per parametrization: each config's target loss against its proxy loss, one
    colour per target size; points near a monotone curve are a ranking that transfers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = result["by"]
    fig, axes = plt.subplots(1, len(by), figsize=(4.4 * len(by), 3.8), squeeze=False)
    sizes = _sizes(points)
    proxy = next(s for s in sizes if _size_label(s) == result["proxy"])
    for ax, (param, targets) in zip(axes[0], by.items(), strict=True):
        mine = [p for p in points if p.parametrization == param]
        base = _median_loss([p for p in mine if p.size == proxy], lambda p: p.config)
        for label, r in targets.items():
            size = next(s for s in sizes if _size_label(s) == label)
            there = _median_loss([p for p in mine if p.size == size], lambda p: p.config)
            configs = sorted(set(base) & set(there), key=repr)
            x, y = [base[c] for c in configs], [there[c] for c in configs]
            ax.scatter(x, y, s=14, label=f"{label}: ρ={r['spearman']:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(param)
        ax.set_xlabel(f"proxy {result['proxy']} {METRIC}")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"target {METRIC}")
    return _save(fig, title, path)


def write_figures(study: optuna.Study, result: dict, out_dir: Path) -> list[Path]:
    """``transfer.png`` (learning rate) and/or ``init_transfer.png`` under ``out_dir``."""
    paths = []
    if "lr_transfer" in result:
        paths.append(plot_lr(result["lr_transfer"], study.study_name, out_dir / "transfer.png"))
    if "init_transfer" in result:
        points, _ = study_points(study)
        if len({p.learning_rate for p in points}) > 1:  # as init_transfer ranks them
            points = [p._replace(config=(*p.config, p.learning_rate)) for p in points]
        path = out_dir / "init_transfer.png"
        paths.append(plot_init(points, result["init_transfer"], study.study_name, path))
    return paths


def summary_lines(result: dict) -> list[str]:
    """The tables as plain lines for the terminal."""
    lines = []
    if "lr_transfer" in result:
        r = result["lr_transfer"]
        lines.append(f"optimal learning rate per size ({METRIC}; grid of {len(r['grid'])} rates)")
        for param, v in r["by"].items():
            rates = ", ".join(f"{s} {lr:.3g}" for s, lr in v["optimal_lr"].items())
            verdict = "within one grid step" if v["transfers"] else "moves"
            lines.append(
                f"  {param}: {rates}; smallest to largest {v['shift_steps']:+d} steps ({verdict})"
            )
    if "init_transfer" in result:
        r = result["init_transfer"]
        keys = ", ".join(result["config_keys"])
        lines.append(f"rank correlation of ({keys}) configs, proxy {r['proxy']} against larger")
        for param, targets in r["by"].items():
            for size, v in targets.items():
                stays = "stays best" if v["winner_stays"] else f"ranks {v['proxy_winner_rank']}"
                lines.append(
                    f"  {param} {size}: Spearman {v['spearman']:+.2f} over {v['configs']} configs,"
                    f" {v['spearman_top']:+.2f} over the proxy's best {v['top_configs']};"
                    f" proxy winner {tuple(v['proxy_winner'])} {stays}"
                )
    return lines
