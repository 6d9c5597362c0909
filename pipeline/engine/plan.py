"""Planning on the host, before anything compiles: the static settings of an executable, depth
buckets, the memory a row needs, which unit draws a space needs, and the refusal of a space whose
largest trial cannot fit."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax

from pipeline.config import Space, TrialSpec
from pipeline.core.initializers import DRAWS, INITIALIZERS
from pipeline.core.model import Structure, layer_shapes
from pipeline.core.train import Settings
from pipeline.engine.datasets import sizes as data_sizes


def settings_from(cfg, optimizer: str, trials: Sequence[TrialSpec] = ()) -> Settings:
    """Static settings of the executable that trains ``trials``: the code for dropout and LSUV
    is compiled only into calls that have a row using them."""
    return Settings(
        optimizer=optimizer,
        batch_size=cfg.train.batch_size,
        chunk_steps=cfg.train.eval_every_steps,
        smoothing=cfg.metrics.smoothing,
        target_loss=cfg.train.target_loss,
        explode_threshold=cfg.metrics.explode_threshold,
        vanish_threshold=cfg.metrics.vanish_threshold,
        unroll=cfg.engine.unroll,
        diagnostics=cfg.metrics.diagnostics,
        dropout=any(t["model.dropout"] > 0 for t in trials),
        weight_decay=any(t["train.weight_decay"] > 0 for t in trials),
        lsuv=any(INITIALIZERS[t["init.weights"]].data_dependent for t in trials),
    )


def depth_buckets(cfg, space: Space) -> list[int]:
    """``engine.depth_buckets``; ``auto`` = the space's depth list (no padding at all) when the
    depth is searched over a short list or fixed, else powers of two (at most 2x the layers of a
    trial)."""
    if cfg.engine.depth_buckets != "auto":
        return list(cfg.engine.depth_buckets)
    depths = space.get("model.depth", cfg.model.depth)
    depths = depths if isinstance(depths, list | dict) else [depths]
    if isinstance(depths, list) and len(depths) <= 8:
        return sorted(set(depths))
    return [2**k for k in range(11)]


def default_memory_gb() -> float:
    """A quarter of the host's RAM (at most 8 GB) on CPU; 60% of the first device's memory."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        if limit:
            return 0.6 * limit / 2**30
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = 16.0
    return min(8.0, ram / 4)


def bucket_depth(depth: int, buckets: Sequence[int]) -> int:
    """The stack height a trial of ``depth`` trains in: the next bucket, or its own depth."""
    return next((b for b in buckets if b >= depth), depth)


def draws_for(weights: Sequence[str]) -> tuple[str, ...]:
    """The unit draws a set of initializers needs, in ``DRAWS`` order."""
    used = {INITIALIZERS[w].draw for w in weights}
    return tuple(d for d in DRAWS if d in used)


def row_bytes(structure: Structure, settings: Settings, n_val: int) -> int:
    """A generous estimate of one row's device memory inside a chunk call."""
    s = structure
    kernels = {k: math.prod(v) for k, v in layer_shapes(s).items()}
    n_params = kernels["input"] + (s.n_hidden - 1) * kernels["hidden"] + kernels["output"]
    n_params += s.n_hidden * s.width + s.n_classes
    positions = s.n_in if s.kind == "cnn" else 1  # a CNN keeps a feature map per pixel
    opt_copies = {"sgd": 0, "momentum": 1, "adam": 2}[settings.optimizer]
    state = (4 + opt_copies) * n_params  # params, grads, updates, donated copy, optimizer
    activations = 4 * max(settings.batch_size, n_val) * positions * s.width * (s.n_hidden + 1)
    curves = settings.chunk_steps * (s.n_hidden + 4)
    return 4 * (state + activations + curves)


def check_fits(cfg, space: Space) -> None:
    """Refuse a search space whose largest trial cannot fit ``engine.memory_gb`` even alone.

    Runs before the study is opened, so a refused sweep writes nothing. The estimate is the one
    that sizes calls (``row_bytes``), plus the replicated data and mini-batch schedule.
    """
    from pipeline.config import ConfigError

    n_train, n_val, n_in, n_classes = data_sizes(cfg.data)
    optimizers = space.values("train.optimizer", cfg.train.optimizer)
    optimizer = max(optimizers, key=("sgd", "momentum", "adam").index)
    depth = space.largest("model.depth", cfg.model.depth)
    width = space.largest("model.width", cfg.model.width)
    kind = "cnn" if "cnn" in space.values("model.kind", cfg.model.kind) else "mlp"
    n_hidden = bucket_depth(depth, depth_buckets(cfg, space))
    structure = Structure("relu", n_hidden, width, n_in, n_classes, kind)
    memory_gb = cfg.engine.memory_gb or default_memory_gb()
    n_seeds, t = cfg.train.seeds, cfg.train
    rows_per_device = -(-n_seeds // jax.device_count())
    fixed = 4 * ((n_train + n_val) * (n_in + 1) + n_seeds * t.steps * t.batch_size)
    need = fixed + rows_per_device * row_bytes(structure, settings_from(cfg, optimizer), n_val)
    if need > memory_gb * 2**30:
        raise ConfigError(
            f"one trial of the search space needs about {need / 2**30:.3g} GB (model.depth="
            f"{depth}, model.width={width}, train.optimizer={optimizer}, train.seeds={n_seeds}, "
            f"{n_train + n_val} samples) but engine.memory_gb={memory_gb:.3g}: lower model.width "
            "or model.depth (or their space), train.seeds, train.steps or the data size, or raise "
            "engine.memory_gb"
        )
