"""Trial metrics from the training core's outputs: definitions, sentinels and the objective.

Definitions (all medians over seeds unless said otherwise):

- ``steps_to_target``: the first step (1-based) at which the smoothed training loss (EMA with
  factor ``metrics.smoothing``, over the steps whose gradient did not explode: a loss computed
  from exploded logits is not a result) is at or below ``train.target_loss``;
  ``train.steps + 1`` when it never gets there (the sentinel reads "beyond the budget").
- ``explosion_count``: steps whose gradient global norm is NaN/Inf or above
  ``metrics.explode_threshold``.
- ``vanishing_count``: steps whose first-layer kernel-gradient norm is below
  ``metrics.vanish_threshold``.
- ``diverged``: 1 if any seed's loss became NaN or Inf.
- ``final_val_accuracy``: classification only (a regression's validation score is its loss).
- ``diag.init.*`` / ``diag.final.*``: signal-propagation diagnostics (``pipeline.core.diagnostics``)
  at initialization and after the last step: ``backprop_ratio`` = ||dL/dh|| of the first hidden
  layer over the last (<< 1: the gradient vanishes on its way down; >> 1: it explodes),
  ``weight_grad_ratio`` likewise for ||dL/dW||, ``act_var_ratio`` = activation variance of the
  last hidden layer over the first (the forward signal), ``dead_fraction`` and
  ``saturated_fraction`` averaged over layers, and ``unit_spread`` (0 = every unit of a layer
  computes the same thing: a symmetry that training never breaks); a residual MLP also has
  ``stream_var_ratio``, the mean square of its residual stream after the last block (before a
  post-norm) over that entering the first block (``theory.stream_var_ratio`` predicts it); a
  transformer also ``attention_entropy`` (each attention row's entropy over ln T, the mean over
  blocks, heads, rows and probe samples: 1 is uniform attention) and ``logit_std`` (the std of
  the attention logits, mean over blocks; ``theory.logit_std`` predicts it).
- The objective Optuna minimizes (``objective`` below): ``steps_to_target`` when the target was
  reached; otherwise ``steps + 1 + steps * min(1, final_loss / initial_loss)``, so runs that made
  more progress rank higher; ``2 * steps + 2`` (the worst value) for a diverged run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pipeline.core.diagnostics import PROBE_FIELDS

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
DIAGNOSTIC_NAMES = (
    "backprop_ratio",
    "weight_grad_ratio",
    "act_var_ratio",
    "dead_fraction",
    "saturated_fraction",
    "unit_spread",
)
DIAGNOSTIC_KEYS = tuple(
    f"diag.{when}.{name}" for when in ("init", "final") for name in DIAGNOSTIC_NAMES
)


@dataclass
class TrialResult:
    """Everything measured for one trial: summaries (medians over seeds), per seed, curves."""

    metrics: dict[str, float]
    seeds: list[dict[str, float]]
    curves: dict[str, np.ndarray]  # name -> (steps, values), medians over seeds
    # Probe field -> [boundaries, layers] (medians over seeds); the layers are the trial's real
    # hidden layers (weight norms and their gradients: plus the read-out), the boundaries
    # diagnostic_steps.
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostic_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    pruned: bool = False
    theory: dict[str, float] = field(default_factory=dict)  # theory.* predicted for the trial

    @property
    def objective(self) -> float:
        return self.metrics["objective"]

    @property
    def layer_grad_norm_init(self) -> np.ndarray:
        """Kernel-gradient norms at initialization, input layer first, read-out last."""
        if not self.diagnostics:
            return np.zeros(0)
        return self.diagnostics["weight_grad_norm"][0]


# --- inside the compiled call: what each training step adds (one row) --------------------------


class Running(NamedTuple):
    """The per-row numbers every training step updates, by the definitions above."""

    ema_loss: jax.Array  # smoothed training loss (final_train_loss, the objective's progress)
    clean_ema: jax.Array  # the same over steps whose gradient did not explode: steps_to_target
    initial_loss: jax.Array
    hit_step: jax.Array  # 0-based step at which clean_ema first reached the target, -1 before
    explosions: jax.Array
    vanishings: jax.Array
    diverged: jax.Array


def start_running() -> Running:
    zero, nan = jnp.zeros((), jnp.int32), jnp.full((), jnp.nan)
    return Running(nan, nan, nan, zero - 1, zero, zero, jnp.bool_(False))


def update_running(r: Running, step, loss, grad_norm, first_layer_grad_norm, settings) -> Running:
    """``r`` after the step ``step`` (0-based) whose mini-batch loss, gradient global norm and
    first-layer kernel-gradient norm are given; ``settings``: smoothing, target_loss,
    explode_threshold and vanish_threshold of the executable."""
    first = step == 0
    s = settings.smoothing
    exploded = ~jnp.isfinite(grad_norm) | (grad_norm > settings.explode_threshold)
    # A loss computed from exploded logits is not a result (float32 log-softmax of logits ~1e12
    # rounds to 0, and once let an all-constant network "reach" the target), so the target is
    # watched on an EMA that leaves exploded steps out.
    clean = jnp.where(jnp.isnan(r.clean_ema), loss, s * r.clean_ema + (1 - s) * loss)
    clean = jnp.where(exploded, r.clean_ema, clean)
    hit = (r.hit_step < 0) & (clean <= settings.target_loss)
    return Running(
        ema_loss=jnp.where(first, loss, s * r.ema_loss + (1 - s) * loss),
        clean_ema=clean,
        initial_loss=jnp.where(first, loss, r.initial_loss),
        hit_step=jnp.where(hit, step, r.hit_step),
        explosions=r.explosions + exploded,
        vanishings=r.vanishings + (first_layer_grad_norm < settings.vanish_threshold),
        diverged=r.diverged | ~jnp.isfinite(loss),
    )


# --- on the host: summaries ---------------------------------------------------------------------


def snapshot(state) -> dict:
    """The per-row scalars of a training state that metrics need (small to copy to the host)."""
    r = state.running
    return {
        "step": state.step,
        "hit_step": r.hit_step,
        "explosions": r.explosions,
        "vanishings": r.vanishings,
        "diverged": r.diverged,
        "ema_loss": r.ema_loss,
        "initial_loss": r.initial_loss,
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
        "final_val_accuracy": None if last.val_accuracy is None else last.val_accuracy[rows],
        "objective": objective({k: v[rows] for k, v in final.items()}, steps),
    }
    per_seed = {k: v for k, v in per_seed.items() if v is not None}  # a regression: no accuracy
    seeds = [{k: float(v[s]) for k, v in per_seed.items()} for s in range(len(hit))]
    summary = {k: _median(v) for k, v in per_seed.items()}
    summary["diverged"] = float(per_seed["diverged"].max())

    # The last chunk may reach past train.steps (masked steps, ``train.chunk_row``): the curves
    # keep the real steps only, and that chunk's validation and probes are at train.steps.
    loss = np.concatenate([c.loss[rows] for c in chunks], axis=1)[:, :steps]
    grad_norm = np.concatenate([c.grad_norm[rows] for c in chunks], axis=1)[:, :steps]
    chunk_ends = chunk_boundaries(chunks, steps)[1:]
    curves = {
        "loss": (np.arange(loss.shape[1]), np.median(loss, axis=0)),
        "grad_norm": (np.arange(loss.shape[1]), np.median(grad_norm, axis=0)),
        "val_loss": (
            chunk_ends,
            np.median(np.stack([c.val_loss[rows] for c in chunks], 1), axis=0),
        ),
    }
    if last.val_accuracy is not None:
        accuracy = np.stack([c.val_accuracy[rows] for c in chunks], 1)
        curves["val_accuracy"] = (chunk_ends, np.median(accuracy, axis=0))
    steps_at, diagnostics = _diagnostics(chunks, rows, depth, steps)
    for when, boundary in (("init", 0), ("final", -1)) if diagnostics else ():
        scalars = diagnostic_scalars(diagnostics, boundary)
        summary.update({f"diag.{when}.{k}": v for k, v in scalars.items()})
    return TrialResult(summary, seeds, curves, diagnostics, steps_at, pruned)


def chunk_boundaries(chunks: list, steps: int) -> np.ndarray:
    """The training step at init and after each chunk: its curve lengths summed, capped at
    ``steps`` (a last chunk's masked steps change nothing)."""
    lengths = [c.loss.shape[1] for c in chunks]
    return np.minimum(np.concatenate([[0], np.cumsum(lengths)]), steps).astype(int)


def _diagnostics(chunks: list, rows: slice, depth: int, steps: int) -> tuple[np.ndarray, dict]:
    """Per-layer diagnostics at init and at every chunk boundary, medians over seeds."""
    if chunks[0].probe_start is None:  # metrics.diagnostics off
        return np.zeros(0, int), {}
    probes = [c.probe_start for c in chunks] + [chunks[-1].probe_end]
    steps_at = chunk_boundaries(chunks, steps)
    table = {}
    for name in PROBE_FIELDS:
        if getattr(probes[0], name) is None:  # stream_ms: a residual MLP's only
            continue
        v = np.stack([np.asarray(getattr(p, name))[rows] for p in probes], 1)
        with_readout = name in ("weight_grad_norm", "weight_norm")
        v = np.concatenate([v[..., :depth], v[..., -1:]], -1) if with_readout else v[..., :depth]
        table[name] = np.median(v, axis=0)
    return steps_at, table


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 and np.isfinite(a) and np.isfinite(b) else float("nan")


def diagnostic_scalars(table: dict, boundary: int) -> dict[str, float]:
    """First/last-layer ratios and unit fractions at one boundary of a diagnostics table."""
    back = table["backprop_norm"][boundary]
    wgrad = table["weight_grad_norm"][boundary]
    var = table["act_var"][boundary]
    scalars = {
        "backprop_ratio": _ratio(back[0], back[-1]),
        "weight_grad_ratio": _ratio(wgrad[0], wgrad[-2]),  # [-1] is the read-out
        "act_var_ratio": _ratio(var[-1], var[0]),
        "dead_fraction": float(np.mean(table["dead_fraction"][boundary])),
        "saturated_fraction": float(np.mean(table["saturated_fraction"][boundary])),
        "unit_spread": float(np.mean(table["unit_spread"][boundary])),
    }
    if "stream_ms" in table:  # a residual MLP: its stream after the last block over its input
        stream = table["stream_ms"][boundary]
        scalars["stream_var_ratio"] = _ratio(stream[-1], stream[0])
    for name in ("attention_entropy", "logit_std"):  # a transformer: mean over its blocks
        if name in table:  # (its layer 0, the embedding, has no attention)
            scalars[name] = float(np.mean(table[name][boundary][1:]))
    return scalars


def diagnostics_csv(result: TrialResult) -> str:
    """The per-layer diagnostics table of a trial: one row per (step, layer)."""
    names = list(result.diagnostics)
    lines = ["step,layer," + ",".join(names)]
    for b, step in enumerate(result.diagnostic_steps):
        for layer in range(result.diagnostics["weight_grad_norm"].shape[1]):
            values = [
                result.diagnostics[n][b][layer] if layer < result.diagnostics[n].shape[1] else ""
                for n in names
            ]
            lines.append(
                f"{step},{layer}," + ",".join(f"{v:.6g}" if v != "" else "" for v in values)
            )
    return "\n".join(lines) + "\n"


def compact_trace(result: TrialResult, every: int) -> dict[str, list[float]]:
    """What a study keeps of a trial's curves for its figures: the loss every ``every`` steps
    and the per-layer signals at initialization (a few hundred numbers)."""
    steps, loss = result.curves["loss"]
    trace = {
        "loss_steps": [int(s) for s in steps[::every]],
        "loss": [float(v) for v in loss[::every]],
    }
    if not result.diagnostics:
        return trace
    return {
        **trace,
        "init_backprop_norm": [float(v) for v in result.diagnostics["backprop_norm"][0]],
        "init_grad_norm": [float(v) for v in result.diagnostics["weight_grad_norm"][0]],
        "init_act_var": [float(v) for v in result.diagnostics["act_var"][0]],
    }
