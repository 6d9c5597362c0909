"""What a run checks before anything is written, beyond the config itself: the data.

``pipeline.config.load_config`` reads the config only (schema and cross-field checks: a mistyped
key fails there in a line, without importing JAX); the checks here read the user's data (a file is
hashed, a loader called) and the sizes of a built-in set, so they belong to the engine. The CLI
calls ``preflight`` right after loading, before it creates a folder, a study or a run; the memory
and model checks (``check_fits``) follow once JAX is set up, as they read the devices.
"""

from __future__ import annotations

from pathlib import Path

import jax
from omegaconf import DictConfig, OmegaConf

from pipeline.config import RULES, ConfigError, Space
from pipeline.config.schema import DATA_FILES
from pipeline.core.data import token_vocab
from pipeline.core.model import Structure
from pipeline.core.names import OPTIMIZER_STATE_COPIES
from pipeline.engine import datasets
from pipeline.engine.factory import check_model, net_for
from pipeline.engine.plan import (
    bucket_depth,
    default_memory_gb,
    depth_buckets,
    row_bytes,
    settings_from,
)


def preflight(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the user's data pinned (its absolute path and SHA-256) and checked against
    the data; else a one-line ``ConfigError``."""
    if cfg.data.name in DATA_FILES:  # what trials record: the data's source and its hash
        cfg = pin_data(cfg)
    check_data(cfg)
    return cfg


def pin_data(cfg: DictConfig) -> DictConfig:
    """The user's data pinned: a file's absolute path, and the SHA-256 of the file or of the
    loader's arrays (computed once, here), compared with a ``data.sha256`` given beforehand."""
    d = cfg.data
    if d.name == "npz":
        if d.path is None:
            return cfg  # check_data says what is wrong
        source, resolved = f"data.path={d.path!r}", {"path": str(Path(d.path).resolve())}
    else:
        if d.loader is None or not RULES["data.loader"].ok(d.loader):
            return cfg
        source, resolved = f"data.loader={d.loader}", {}
    digest = datasets.digest(d)
    if d.sha256 is not None and RULES["data.sha256"].ok(d.sha256) and d.sha256 != digest:
        raise ConfigError(
            f"data.sha256={d.sha256} does not match {source} (its SHA-256 is {digest}): the "
            "data changed"
        )
    return OmegaConf.merge(cfg, {"data": {**resolved, "sha256": digest}})


def check_data(cfg: DictConfig) -> None:
    """The checks that read the data (a user's file, or the sizes of a built-in set)."""
    d, t = cfg.data, cfg.train
    n = datasets.check(d) if d.name in DATA_FILES else datasets.sizes(d)
    if d.name == "digits" and min(n.n_train, n.n_val) < n.n_classes:
        # scikit-learn's stratified split needs a sample of every class on both sides.
        raise ConfigError(
            f"data.val_fraction={d.val_fraction} leaves {n.n_train} training and "
            f"{n.n_val} validation images: each needs at least {n.n_classes} (one per class)"
        )
    if t.batch_size > n.n_train:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is larger than the {n.n_train} training samples"
        )


def check_fits(cfg, space: Space) -> None:
    """Refuse a search space whose largest trial cannot fit ``engine.memory_gb`` even alone,
    and a model that cannot be built (``factory.check_model``: a user's factory is called here).

    Runs before the study is opened, so a refused sweep writes nothing. The estimate is the one
    that sizes calls (``row_bytes``), plus the replicated data and mini-batch schedule.
    """
    n_train, n_val, n_in, n_classes = datasets.sizes(cfg.data)
    optimizers = space.values("train.optimizer", cfg.train.optimizer)
    optimizer = max(optimizers, key=OPTIMIZER_STATE_COPIES.__getitem__)  # the most state
    depth = space.largest("model.depth", cfg.model.depth)
    width = space.largest("model.width", cfg.model.width)
    kinds = space.values("model.kind", cfg.model.kind)
    kind = next((k for k in ("custom", "cnn", "transformer") if k in kinds), "mlp")
    if kind == "custom":  # the factory is called here: its errors come before anything is written
        factory = max(space.values("model.factory", cfg.model.factory) or [None], key=str)
        structure = Structure(cfg.model.activation, depth, width, n_in, n_classes, kind, factory)
    else:
        n_hidden = bucket_depth(depth, depth_buckets(cfg, space))
        heads = max(space.values("model.heads", cfg.model.heads)) if kind == "transformer" else 1
        structure = Structure(
            "relu", n_hidden, width, n_in, n_classes, kind, None, "none", heads,
            token_vocab(cfg.data),
        )  # fmt: skip
    check_model(cfg, space, n_in, n_classes)
    net = net_for(structure, cfg.engine.unroll)
    memory_gb = cfg.engine.memory_gb or default_memory_gb()
    n_seeds, t = cfg.train.seeds, cfg.train
    rows_per_device = -(-n_seeds // jax.device_count())
    fixed = 4 * ((n_train + n_val) * (n_in + 1) + n_seeds * t.steps * t.batch_size)
    need = fixed + rows_per_device * row_bytes(net, structure, settings_from(cfg, optimizer), n_val)
    if need > memory_gb * 2**30:
        raise ConfigError(
            f"one trial of the search space needs about {need / 2**30:.3g} GB (model.depth="
            f"{depth}, model.width={width}, train.optimizer={optimizer}, train.seeds={n_seeds}, "
            f"{n_train + n_val} samples) but engine.memory_gb={memory_gb:.3g}: lower model.width "
            "or model.depth (or their space), train.seeds, train.steps or the data size, or raise "
            "engine.memory_gb"
        )
