"""The traced arrays: one trial's spec turned into the per-row numbers of ``Hparams``."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from pipeline.config import ROW_KEYS, TrialSpec
from pipeline.core.initializers import (
    INITIALIZERS,
    bias_moments,
    compute_fans,
    resolve_gain,
    weight_scale,
)
from pipeline.core.model import Structure, layer_shapes
from pipeline.core.train import Hparams


def row_hparams(
    trial: TrialSpec, structure: Structure, draws: tuple[str, ...], seed: int
) -> Hparams:
    """The traced numbers of one row, computed on the host from a trial's spec: the schema's
    ``row`` keys as they are, and what the core needs derived from the others."""
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
    return Hparams(
        draw=np.int32(draws.index(INITIALIZERS[weights].draw)),
        scale=np.asarray(scales, np.float32),
        bias_mean=np.float32(bias_mean),
        bias_std=np.float32(bias_std),
        clip_norm=np.float32(np.inf if clip is None else clip),
        lsuv=np.bool_(INITIALIZERS[weights].data_dependent),
        depth=np.int32(trial["model.depth"]),
        seed=np.int32(seed),
        values={k: np.float32(trial[k]) for k in ROW_KEYS},
    )


def stack_rows(rows: Sequence[Hparams], sharding=None) -> Hparams:
    """One ``Hparams`` of arrays with a leading row axis (placed with ``sharding``)."""
    return jax.tree.map(lambda *xs: jax.device_put(np.stack(xs), sharding), *rows)
