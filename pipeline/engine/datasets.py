"""The dataset a config names: the core's generated and bundled ones, or the user's own file.

``data.name=npz data.path=<file>``: a NumPy ``.npz`` holding ``x_train`` (samples x features,
numbers) and ``y_train`` (integer class labels 0..k-1), and either ``x_val`` and ``y_val`` or
neither (then ``data.val_fraction`` of the training arrays is held out, stratified, with
``data.seed``). Features are standardized with training statistics, as for the built-in data.
The file's SHA-256 goes into ``data.sha256``, so each trial's spec, its MLflow params and the best
file say exactly what it was found on; a ``data.sha256`` given beforehand refuses a file that
changed. Every problem with a file is one line naming the array and what is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from pipeline.config.schema import ConfigError
from pipeline.core import data as core_data
from pipeline.core.data import Dataset, Sizes

ARRAYS = ("x_train", "y_train", "x_val", "y_val")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a data file, checked; a one-line ``ConfigError`` names what is wrong.
    Read once per process and version of the file (validation, planning and loading ask)."""
    if not Path(path).is_file():
        raise ConfigError(f"data.path={str(path)!r}: no such file")
    stat = Path(path).stat()
    return _read_npz(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_npz(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    where = f"data.path={str(path)!r}"
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{where} cannot be read: it is not a NumPy .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ARRAYS}
            names = list(npz.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        reason = "it holds Python objects" if "pickle" in str(e) else "it is not a valid .npz file"
        raise ConfigError(f"{where} cannot be read: {reason}") from None
    for name in ("x_train", "y_train"):
        if name not in arrays:
            raise ConfigError(
                f"{where} has no array {name!r} (it has: {', '.join(names) or 'nothing'}); "
                "expected x_train, y_train and optionally x_val, y_val"
            )
    if ("x_val" in arrays) != ("y_val" in arrays):
        have, miss = ("x_val", "y_val") if "x_val" in arrays else ("y_val", "x_val")
        raise ConfigError(
            f"{where} has {have} but no {miss}: give both, or neither (then data.val_fraction "
            "of the training arrays is held out)"
        )
    for split in ("train", "val"):
        if f"x_{split}" in arrays:
            _check_pair(where, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    if "x_val" in arrays and arrays["x_val"].shape[1] != arrays["x_train"].shape[1]:
        raise ConfigError(
            f"{where}: x_val has {arrays['x_val'].shape[1]} features but x_train "
            f"{arrays['x_train'].shape[1]}"
        )
    return arrays


def _check_pair(where: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    xs, ys = f"x_{split}", f"y_{split}"
    if (
        x.ndim != 2
        or not np.issubdtype(x.dtype, np.number)
        or np.issubdtype(x.dtype, np.complexfloating)
    ):
        raise ConfigError(
            f"{where}: {xs} must be a 2-D array of real numbers (samples, features), got shape "
            f"{x.shape} of {x.dtype}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"{where}: {ys} must be a 1-D array of integer class labels, got shape {y.shape} of "
            f"{y.dtype}"
        )
    if len(x) != len(y):
        raise ConfigError(f"{where}: {xs} has {len(x)} samples but {ys} {len(y)}")
    if len(y) == 0:
        raise ConfigError(f"{where}: {xs} is empty")
    if not np.isfinite(x).all():
        raise ConfigError(f"{where}: {xs} has NaN or Inf values")
    if y.min() < 0:
        raise ConfigError(f"{where}: {ys} has a negative label ({y.min()}); labels are 0..k-1")


def _n_classes(arrays: dict[str, np.ndarray]) -> int:
    return int(max(a.max() for k, a in arrays.items() if k.startswith("y_"))) + 1


def _checked(cfg) -> tuple[dict[str, np.ndarray], Sizes]:
    """The file's arrays and the sizes they give (after the split, when there is one)."""
    arrays = read_npz(cfg.path)
    n_classes = _n_classes(arrays)
    where = f"data.path={cfg.path!r}"
    if n_classes < 2:
        raise ConfigError(f"{where}: the labels name one class only; a classifier needs two")
    n_features = arrays["x_train"].shape[1]
    if "x_val" in arrays:
        return arrays, Sizes(len(arrays["y_train"]), len(arrays["y_val"]), n_features, n_classes)
    n = len(arrays["y_train"])
    n_val = math.ceil(cfg.val_fraction * n)
    counts = np.bincount(arrays["y_train"], minlength=n_classes)
    if min(n - n_val, n_val) < n_classes or counts.min() < 2:
        raise ConfigError(
            f"{where}: holding out data.val_fraction={cfg.val_fraction} of its {n} samples leaves "
            f"{n - n_val} for training and {n_val} for validation, and its rarest class has "
            f"{counts.min()}: a stratified split needs every class on both sides (give x_val, "
            "y_val, or another data.val_fraction)"
        )
    return arrays, Sizes(n - n_val, n_val, n_features, n_classes)


def check(cfg) -> Sizes:
    """Validate a ``data`` section that names a file: its path and contents (``data.sha256``
    is compared where the config resolves the file: ``pipeline.config.load``)."""
    if cfg.path is None:
        raise ConfigError(
            "data.name=npz needs data.path=<file.npz> (x_train, y_train[, x_val, y_val])"
        )
    return _checked(cfg)[1]


def sizes(cfg) -> Sizes:
    """What a ``data`` section will hold, without training on it."""
    if cfg.name == "npz":
        return _checked(cfg)[1]
    return core_data.sizes(cfg)


def load_dataset(cfg) -> Dataset:
    """The dataset a (validated) ``data`` section describes."""
    if cfg.name != "npz":
        return core_data.load_dataset(cfg)
    arrays, n = _checked(cfg)
    if "x_val" in arrays:
        parts = (arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"])
    else:
        parts = core_data.split(arrays["x_train"], arrays["y_train"], cfg.val_fraction, cfg.seed)
    return core_data.from_arrays(*parts, n.n_classes)
