"""Figures of a study, saved as PNG under runs/<study>/ and logged to the sweep's parent run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402

from pipeline.study import trial_metrics  # noqa: E402


def _rows(study: optuna.Study) -> list[tuple[dict, dict]]:
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "metrics" in t.user_attrs
    ]
    return [(t.params, trial_metrics(t)) for t in done]


def steps_vs_gain(study: optuna.Study, path: Path) -> Path | None:
    rows = [(p, m) for p, m in _rows(study) if isinstance(p.get("init.gain"), float)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    inits = sorted({p.get("init.weights", "?") for p, _ in rows})
    cmap = plt.get_cmap("tab20", max(len(inits), 1))
    for i, name in enumerate(inits):
        pts = [
            (p["init.gain"], m["steps_to_target"], m.get("diverged", 0))
            for p, m in rows
            if p.get("init.weights", "?") == name
        ]
        g, s, d = map(np.asarray, zip(*pts))
        ax.scatter(g[d == 0], s[d == 0], color=cmap(i), label=name, s=18)
        ax.scatter(g[d > 0], s[d > 0], color=cmap(i), marker="x", s=30)
    ax.set_xscale("log")
    ax.set_xlabel("init.gain (log scale)")
    ax.set_ylabel("steps_to_target (lower is faster; top row = never reached)")
    ax.set_title(f"{study.study_name}: convergence speed against gain (x = diverged)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reached_heatmap(study: optuna.Study, path: Path) -> Path | None:
    rows = _rows(study)
    acts = sorted({p.get("model.activation") for p, _ in rows if "model.activation" in p})
    inits = sorted({p.get("init.weights") for p, _ in rows if "init.weights" in p})
    if not acts or not inits:
        return None
    grid = np.full((len(inits), len(acts)), np.nan)
    for i, w in enumerate(inits):
        for j, a in enumerate(acts):
            vals = [
                m["steps_to_target"]
                for p, m in rows
                if p.get("init.weights") == w and p.get("model.activation") == a
            ]
            if vals:
                grid[i, j] = np.median(vals)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(acts), 1.0 + 0.4 * len(inits)))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(acts)), acts, rotation=45, ha="right")
    ax.set_yticks(range(len(inits)), inits)
    for i in range(len(inits)):
        for j in range(len(acts)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label="median steps_to_target (lower is faster)")
    ax.set_title(f"{study.study_name}: initializer x activation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_plots(study: optuna.Study, out: Path) -> list[Path]:
    made = [
        steps_vs_gain(study, out / "steps_vs_gain.png"),
        reached_heatmap(study, out / "init_x_activation.png"),
    ]
    return [p for p in made if p is not None]
