"""Planning on the host, before anything compiles: the static settings of an executable, depth
buckets, the memory a row needs and which unit draws a space needs (``preflight.check_fits``
refuses a space whose largest trial cannot fit)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax

from pipeline.config import Space, TrialSpec
from pipeline.core.activations import MERGED
from pipeline.core.initializers import DRAWS, INITIALIZERS
from pipeline.core.model import BUILTIN_KINDS, Structure
from pipeline.core.names import OPTIMIZER_STATE_COPIES
from pipeline.core.net import Net
from pipeline.core.train import Settings


def settings_from(cfg, optimizer: str, trials: Sequence[TrialSpec] = ()) -> Settings:
    """Static settings of the executable that trains ``trials``: the code for dropout and LSUV
    is compiled only into calls that have a row using them."""
    return Settings(
        optimizer=optimizer,
        batch_size=cfg.train.batch_size,
        # A run shorter than a chunk is one chunk of its own length (no masked steps).
        chunk_steps=min(cfg.train.eval_every_steps, cfg.train.steps),
        smoothing=cfg.metrics.smoothing,
        target_loss=cfg.train.target_loss,
        explode_threshold=cfg.metrics.explode_threshold,
        vanish_threshold=cfg.metrics.vanish_threshold,
        unroll=cfg.engine.unroll,
        # The probes read each layer of the built-in stack; a user's module has no such layers.
        diagnostics=cfg.metrics.diagnostics
        and all(t["model.kind"] in BUILTIN_KINDS for t in trials),
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


# The kinds whose activation can be a traced switch (``activations.activate``); a transformer
# and a user's module keep one executable per activation.
MERGEABLE_KINDS = ("mlp", "cnn", "resmlp")


def merged_activation(cfg, space: Space) -> str | None:
    """The structure activation that serves every activation of the space in one executable
    (``engine.merge_activations``): their names joined in the space's order; None for one."""
    names = list(dict.fromkeys(space.values("model.activation", cfg.model.activation)))
    if cfg.engine.merge_activations == "off" or len(names) < 2:
        return None
    return MERGED.join(names)


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


def rule_sets(cfg, space: Space) -> list[list]:
    """Every ``init.rules`` a trial of the sweep can have: the base and the space's choices (a
    rule set is itself a list, so the space's entry is always a list of them)."""
    from omegaconf import OmegaConf

    base = cfg.init.rules
    base = OmegaConf.to_container(base) if OmegaConf.is_config(base) else list(base or [])
    return [base, *(list(r) for r in space.get("init.rules", None) or [])]


def space_draws(cfg, space: Space) -> tuple[str, ...]:
    """The unit draws every trial of a sweep can need: its initializers and its rules'."""
    weights = [*space.values("init.weights", cfg.init.weights), cfg.init.weights]
    for rules in rule_sets(cfg, space):
        weights += [r["weights"] for r in rules if "weights" in r]
    return draws_for(weights)


def row_bytes(net: Net, structure: Structure, settings: Settings, n_val: int) -> int:
    """A generous estimate of one row's device memory inside a chunk call: the parameters and
    their optimizer copies, and one activation per output feature of each layer and sample
    (a convolution's per position: a feature map per pixel)."""
    s = structure
    n_params = net.layout.n_params
    opt_copies = OPTIMIZER_STATE_COPIES[settings.optimizer]
    state = (4 + opt_copies) * n_params  # params, grads, updates, donated copy, optimizer
    features = 0
    for leaf in net.layout.kernels:
        positions = s.n_in if len(leaf.fan_shape) > 2 or s.kind == "transformer" else 1
        features += leaf.layers * leaf.fan_shape[-1] * positions
    if s.kind == "transformer":  # each block's attention logits and weights: heads x T x T
        features += 2 * s.n_hidden * s.heads * s.n_in * s.n_in
    if s.kind == "cnn":  # model.conv3x3's backward: the patches (9 values per channel and
        # pixel) of one layer's input and of its output's gradient
        convs = [leaf.fan_shape for leaf in net.layout.kernels if len(leaf.fan_shape) > 2]
        features += 2 * max(math.prod(shape[:-1]) for shape in convs) * s.n_in
    activations = 4 * max(settings.batch_size, n_val) * features
    curves = settings.chunk_steps * (sum(leaf.layers for leaf in net.layout.kernels) + 4)
    return 4 * (state + activations + curves)
