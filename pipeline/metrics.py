"""Trial metrics from the training core's outputs: definitions, sentinels and the objective.

Definitions (all medians over seeds unless said otherwise):

- ``steps_to_target``: the first step (1-based) at which the smoothed training loss (EMA with
  factor ``metrics.smoothing``) is at or below ``train.target_loss``; ``train.steps + 1`` when it
  never gets there (the sentinel reads "beyond the budget").
- ``explosion_count``: steps whose gradient global norm is NaN/Inf or above
  ``metrics.explode_threshold``.
- ``vanishing_count``: steps whose first-layer kernel-gradient norm is below
  ``metrics.vanish_threshold``.
- ``diverged``: 1 if any seed's loss became NaN or Inf.
- The objective Optuna minimizes (``objective`` below): ``steps_to_target`` when the target was
  reached; otherwise ``steps + 1 + steps * min(1, final_loss / initial_loss)``, so runs that made
  more progress rank higher; ``2 * steps + 2`` (the worst value) for a diverged run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUMMARY_KEYS = (
    "steps_to_target",
    "reached_target",
    "explosion_count",
    "vanishing_count",
    "diverged",
    "initial_train_loss",
    "final_train_loss",
    "final_val_loss",
    "final_val_accuracy",
    "objective",
)


@dataclass
class TrialResult:
    """Everything measured for one trial: summaries (medians over seeds), per seed, curves."""

    metrics: dict[str, float]
    seeds: list[dict[str, float]]
    curves: dict[str, np.ndarray]  # name -> (steps, values), medians over seeds
    layer_grad_norm_init: np.ndarray  # [depth + 1] kernel-gradient norms at step 0
    pruned: bool = False

    @property
    def objective(self) -> float:
        return self.metrics["objective"]


def snapshot(state) -> dict:
    """The per-row scalars of a training state that metrics need (small to copy to the host)."""
    return {
        "step": state.step,
        "hit_step": state.hit_step,
        "explosions": state.explosions,
        "vanishings": state.vanishings,
        "diverged": state.diverged,
        "ema_loss": state.ema_loss,
        "initial_loss": state.initial_loss,
    }


def objective(snap: dict, steps: int) -> np.ndarray:
    """Per-row objective (lower is better); also the intermediate value reported for pruning."""
    hit = np.asarray(snap["hit_step"])
    progress = np.asarray(snap["ema_loss"]) / np.asarray(snap["initial_loss"])
    progress = np.where(np.isfinite(progress), np.minimum(progress, 1.0), 1.0)
    value = np.where(hit >= 0, hit + 1.0, steps + 1.0 + steps * progress)
    return np.where(np.asarray(snap["diverged"]), 2.0 * steps + 2.0, value)


def _median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def summarize(
    final: dict, chunks: list, rows: slice, steps: int, depth: int, pruned: bool
) -> TrialResult:
    """One trial's ``TrialResult`` from its rows of the final state and of each chunk's output."""
    hit = np.asarray(final["hit_step"][rows])
    last = chunks[-1]
    per_seed = {
        "steps_to_target": np.where(hit >= 0, hit + 1, steps + 1),
        "reached_target": (hit >= 0).astype(float),
        "explosion_count": final["explosions"][rows],
        "vanishing_count": final["vanishings"][rows],
        "diverged": final["diverged"][rows].astype(float),
        "initial_train_loss": final["initial_loss"][rows],
        "final_train_loss": final["ema_loss"][rows],
        "final_val_loss": last.val_loss[rows],
        "final_val_accuracy": last.val_accuracy[rows],
        "objective": objective({k: v[rows] for k, v in final.items()}, steps),
    }
    seeds = [{k: float(v[s]) for k, v in per_seed.items()} for s in range(len(hit))]
    summary = {k: _median(v) for k, v in per_seed.items()}
    summary["diverged"] = float(per_seed["diverged"].max())

    chunk_steps = chunks[0].loss.shape[1]
    loss = np.concatenate([c.loss[rows] for c in chunks], axis=1)
    grad_norm = np.concatenate([c.grad_norm[rows] for c in chunks], axis=1)
    chunk_ends = np.arange(1, len(chunks) + 1) * chunk_steps
    curves = {
        "loss": (np.arange(loss.shape[1]), np.median(loss, axis=0)),
        "grad_norm": (np.arange(loss.shape[1]), np.median(grad_norm, axis=0)),
        "val_loss": (
            chunk_ends,
            np.median(np.stack([c.val_loss[rows] for c in chunks], 1), axis=0),
        ),
        "val_accuracy": (
            chunk_ends,
            np.median(np.stack([c.val_accuracy[rows] for c in chunks], 1), axis=0),
        ),
    }
    norms = np.median(chunks[0].layer_grad_norm[rows], axis=0)
    layer_norms = np.concatenate([norms[:depth], norms[-1:]])  # real layers, then the output
    return TrialResult(summary, seeds, curves, layer_norms, pruned)
