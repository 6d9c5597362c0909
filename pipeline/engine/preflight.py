"""What a run checks before anything is written, beyond the config itself: the data.

``pipeline.config.load_config`` reads the config only (schema and cross-field checks: a mistyped
key fails there in a line, without importing JAX); the checks here read the user's data (a file is
hashed, a loader called) and the sizes of a built-in set, so they belong to the engine. The CLI
calls ``preflight`` right after loading, before it creates a folder, a study or a run; the memory
and model checks (``plan.check_fits``) follow once JAX is set up, as they read the devices.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config import RULES, ConfigError
from pipeline.config.schema import DATA_FILES
from pipeline.engine import datasets


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
