"""The host side of training: group trials by structure, pad, call the compiled core, summarize.

A *trial* is a flat dict of dotted config values. Each trial becomes ``train.seeds`` rows. Rows
are grouped by structure (activation, depth bucket, width, optimizer); within a group, calls are
sized from ``engine.memory_gb`` and padded to a power of two so that few executables serve every
batch. What triggers a compile: a new structure, a new padded row count, or a change of the static
training settings (batch size, chunk length, thresholds, smoothing, target loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pipeline import metrics
from pipeline.data import Dataset, batch_schedule
from pipeline.initializers import (
    DRAWS,
    INITIALIZERS,
    bias_moments,
    compute_fans,
    resolve_gain,
    weight_scale,
)
from pipeline.metrics import TrialResult
from pipeline.model import Structure, layer_shapes
from pipeline.train import Data, Hparams, Settings, Shape, make_train, make_unit_draws


@dataclass
class EngineStats:
    compile_s: float = 0.0
    train_s: float = 0.0
    executables: int = 0
    rows: int = 0
    padded_rows: int = 0
    layer_steps: int = 0  # rows x real layers x steps
    padded_layer_steps: int = 0  # the same, counting masked layers and padding rows
    calls: list[dict] = field(default_factory=list)


def settings_from(cfg, optimizer: str) -> Settings:
    return Settings(
        optimizer=optimizer,
        batch_size=cfg.train.batch_size,
        chunk_steps=cfg.train.eval_every_steps,
        smoothing=cfg.metrics.smoothing,
        target_loss=cfg.train.target_loss,
        explode_threshold=cfg.metrics.explode_threshold,
        vanish_threshold=cfg.metrics.vanish_threshold,
        unroll=cfg.engine.unroll,
    )


def bucket_depth(depth: int, buckets: Sequence[int]) -> int:
    """The stack height a trial of ``depth`` trains in: the next bucket, or its own depth."""
    return next((b for b in buckets if b >= depth), depth)


def draws_for(weights: Sequence[str]) -> tuple[str, ...]:
    """The unit draws a set of initializers needs, in ``DRAWS`` order."""
    used = {INITIALIZERS[w].draw for w in weights}
    return tuple(d for d in DRAWS if d in used)


def row_hparams(
    trial: dict[str, Any], structure: Structure, draws: tuple[str, ...], seed: int
) -> dict:
    """The traced numbers of one row, computed on the host from a trial's config values."""
    weights = trial["init.weights"]
    slope = trial["model.negative_slope"]
    gain = resolve_gain(weights, trial["init.gain"], trial["model.activation"], slope)
    params = {k: trial[f"init.{k}"] for k in ("mode", "std", "limit", "value")}
    scales = [
        weight_scale(weights, compute_fans(shape), gain, params)
        for shape in layer_shapes(structure).values()
    ]
    bias_mean, bias_std = bias_moments(
        trial["init.bias"], trial["init.bias_value"], trial["init.bias_std"]
    )
    clip = trial["train.clip_norm"]
    return dict(
        draw=np.int32(draws.index(INITIALIZERS[weights].draw)),
        scale=np.asarray(scales, np.float32),
        bias_mean=np.float32(bias_mean),
        bias_std=np.float32(bias_std),
        learning_rate=np.float32(trial["train.learning_rate"]),
        momentum=np.float32(trial["train.momentum"]),
        clip_norm=np.float32(np.inf if clip is None else clip),
        slope=np.float32(slope),
        depth=np.int32(trial["model.depth"]),
        seed=np.int32(seed),
    )


def row_bytes(structure: Structure, settings: Settings, n_val: int) -> int:
    """A generous estimate of one row's device memory inside a chunk call."""
    s = structure
    n_params = s.n_in * s.width + (s.n_hidden - 1) * s.width**2 + s.width * s.n_classes
    n_params += s.n_hidden * s.width + s.n_classes
    opt_copies = {"sgd": 0, "momentum": 1, "adam": 2}[settings.optimizer]
    state = (4 + opt_copies) * n_params  # params, grads, updates, donated copy, optimizer
    activations = 4 * max(settings.batch_size, n_val) * s.width * (s.n_hidden + 1)
    curves = settings.chunk_steps * (s.n_hidden + 4)
    return 4 * (state + activations + curves)


class Engine:
    """Trains lists of trials on one dataset with fixed training settings."""

    def __init__(self, cfg, dataset: Dataset, weights_in_space: Sequence[str]):
        self.cfg = cfg
        self.dataset = dataset
        self.steps = cfg.train.steps
        self.n_seeds = cfg.train.seeds
        self.draws = draws_for([*weights_in_space, cfg.init.weights])
        schedule = batch_schedule(
            len(dataset.y_train), cfg.train.batch_size, self.steps, self.n_seeds, cfg.train.seed
        )
        self.data = Data(*(jnp.asarray(a) for a in dataset[:4]), jnp.asarray(schedule))
        self.key = jax.random.key(cfg.train.seed)
        self.stats = EngineStats()
        self._executables: dict[tuple, Any] = {}
        self._units: dict[Shape, dict] = {}

    # --- grouping -----------------------------------------------------------------------------

    def structure_of(self, trial: dict[str, Any]) -> Structure:
        return Structure(
            activation=trial["model.activation"],
            n_hidden=bucket_depth(trial["model.depth"], self.cfg.engine.depth_buckets),
            width=trial["model.width"],
            n_in=self.dataset.n_features,
            n_classes=self.dataset.n_classes,
        )

    def max_rows(self, structure: Structure, settings: Settings) -> int:
        budget = self.cfg.engine.memory_gb * 2**30
        return max(1, int(budget // row_bytes(structure, settings, len(self.dataset.y_val))))

    # --- compiled pieces ------------------------------------------------------------------------

    def _units_for(self, structure: Structure) -> dict:
        shape = Shape(structure.n_hidden, structure.width, structure.n_in, structure.n_classes)
        if shape not in self._units:
            t0 = time.perf_counter()
            units = make_unit_draws(shape, self.draws)(self.key, self.n_seeds)
            self._units[shape] = jax.block_until_ready(units)
            self.stats.compile_s += time.perf_counter() - t0
        return self._units[shape]

    def _compiled(self, structure: Structure, settings: Settings, hp: Hparams, units: dict):
        key = (structure, settings, int(hp.depth.shape[0]))
        if key not in self._executables:
            t0 = time.perf_counter()
            init_fn, chunk_fn = make_train(structure, settings)
            init_c = init_fn.lower(hp, units).compile()
            state = jax.eval_shape(init_fn, hp, units)
            active = jax.ShapeDtypeStruct(hp.depth.shape, jnp.bool_)
            chunk_c = chunk_fn.lower(state, hp, active, self.data).compile()
            self._executables[key] = (init_c, chunk_c)
            self.stats.compile_s += time.perf_counter() - t0
            self.stats.executables += 1
        return self._executables[key]

    # --- running ------------------------------------------------------------------------------

    def run(
        self,
        trials: Sequence[dict[str, Any]],
        on_chunk: Callable[[list[int], int, list[float]], set[int]] | None = None,
        on_result: Callable[[int, TrialResult], None] | None = None,
    ) -> list[TrialResult]:
        """Train ``trials``; ``on_chunk(ids, step, interim_objectives)`` returns ids to prune.

        ``on_result(i, result)`` is called as soon as trial ``i`` is done, so the caller can log
        and report it while the next group trains.
        """
        results: list[TrialResult | None] = [None] * len(trials)
        groups: dict[tuple[Structure, str], list[int]] = {}
        for i, trial in enumerate(trials):
            groups.setdefault((self.structure_of(trial), trial["train.optimizer"]), []).append(i)
        for (structure, optimizer), ids in groups.items():
            settings = settings_from(self.cfg, optimizer)
            per_call = max(1, self.max_rows(structure, settings) // self.n_seeds)
            for start in range(0, len(ids), per_call):
                call_ids = ids[start : start + per_call]
                call = self._run_call(
                    structure, settings, [trials[i] for i in call_ids], call_ids, on_chunk
                )
                for i, result in zip(call_ids, call):
                    results[i] = result
                    if on_result is not None:
                        on_result(i, result)
        return results  # type: ignore[return-value]

    def _run_call(self, structure, settings, trials, ids, on_chunk) -> list[TrialResult]:
        n_real = len(trials) * self.n_seeds
        n_rows = 1 << max(0, math.ceil(math.log2(n_real)))  # pad to a power of two
        rows = [
            row_hparams(t, structure, self.draws, s) for t in trials for s in range(self.n_seeds)
        ]
        rows += [rows[0]] * (n_rows - n_real)
        hp = Hparams(**{k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]})
        active = np.arange(n_rows) < n_real

        units = self._units_for(structure)
        init_c, chunk_c = self._compiled(structure, settings, hp, units)
        t0 = time.perf_counter()
        state = init_c(hp, units)
        chunks = []
        for chunk_index in range(self.steps // settings.chunk_steps):
            state, out = chunk_c(state, hp, jnp.asarray(active), self.data)
            out, snapshot = jax.device_get((out, metrics.snapshot(state)))
            chunks.append(out)
            step = (chunk_index + 1) * settings.chunk_steps
            if on_chunk is not None:
                interim = metrics.objective(snapshot, self.steps)
                per_trial = [
                    float(np.median(interim[j * self.n_seeds : (j + 1) * self.n_seeds]))
                    for j in range(len(trials))
                ]
                live = [j for j in range(len(trials)) if active[j * self.n_seeds]]
                pruned = on_chunk([ids[j] for j in live], step, [per_trial[j] for j in live])
                for j in live:
                    if ids[j] in pruned:
                        active[j * self.n_seeds : (j + 1) * self.n_seeds] = False
            if not active.any():
                break
        final = jax.device_get(metrics.snapshot(state))
        elapsed = time.perf_counter() - t0
        self._account(structure, trials, n_rows, len(chunks) * settings.chunk_steps, elapsed)
        return [
            metrics.summarize(
                final,
                chunks,
                rows=slice(j * self.n_seeds, (j + 1) * self.n_seeds),
                steps=self.steps,
                depth=trials[j]["model.depth"],
                pruned=not active[j * self.n_seeds],
            )
            for j in range(len(trials))
        ]

    def _account(self, structure, trials, n_rows, steps_run, elapsed) -> None:
        st = self.stats
        st.train_s += elapsed
        st.rows += len(trials) * self.n_seeds
        st.padded_rows += n_rows
        real = sum(t["model.depth"] + 1 for t in trials) * self.n_seeds * steps_run
        st.layer_steps += real
        st.padded_layer_steps += n_rows * (structure.n_hidden + 1) * steps_run
        st.calls.append(
            dict(
                structure=structure,
                rows=n_rows,
                real_rows=len(trials) * self.n_seeds,
                seconds=elapsed,
            )
        )
