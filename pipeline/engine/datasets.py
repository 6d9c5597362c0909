"""The dataset a config names: the core's generated and bundled ones, or the user's own data.

``data.name=npz data.path=<file>``: a NumPy ``.npz`` holding ``x_train`` (samples x features,
numbers) and ``y_train``, and either ``x_val`` and ``y_val`` or neither (then ``data.val_fraction``
of the training arrays is held out with ``data.seed``: stratified for class labels).
``data.name=custom data.loader=<module>:<function>``: the function (imported as Python would from
the current folder and ``PYTHONPATH``, called with ``seed=data.seed`` if it takes ``seed``)
returns the same arrays, as a mapping or as a tuple ``(x_train, y_train[, x_val, y_val])``.

Labels: integer classes ``0..k-1`` (``data.task=classification``), or real-valued targets, 1-D or
``(samples, outputs)`` (``data.task=regression``: mean squared error, ``pipeline.core.losses``).
Features are standardized with training statistics, as for the built-in data; regression targets
too unless ``data.standardize_targets=false``.

What trials record: the SHA-256 of the file, or of the loader's arrays (names, dtypes, shapes
and bytes), goes into ``data.sha256``, so each trial's spec, its MLflow params and the best file
say exactly what it was found on; a ``data.sha256`` given beforehand refuses data that changed.
Every problem is one line naming the array and what is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.config.schema import DATA_FILES, ConfigError
from pipeline.core import data as core_data
from pipeline.core.data import Dataset, Sizes

ARRAYS = ("x_train", "y_train", "x_val", "y_val")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of arrays by name: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a data file; a one-line ``ConfigError`` names what is wrong. Read once per
    process and version of the file (validation, planning and loading ask)."""
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
    return _complete(where, arrays, names)


def read_loader(spec: str, seed: int) -> dict[str, np.ndarray]:
    """The arrays ``data.loader`` returns, called once per process and seed; one-line errors."""
    return _read_loader(spec, seed)


@functools.lru_cache(maxsize=4)
def _read_loader(spec: str, seed: int) -> dict[str, np.ndarray]:
    from pipeline.engine.factory import load_function, said

    where = f"data.loader={spec}"
    fn = load_function(spec, "data.loader")
    try:
        takes_seed = "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_seed = False
    try:
        got = fn(seed=seed) if takes_seed else fn()
    except Exception as e:
        raise ConfigError(f"{where} raised {said(e)}") from None
    if isinstance(got, Mapping):
        returned = {str(k): v for k, v in got.items()}
    elif isinstance(got, tuple | list) and len(got) in (2, 4):
        returned = dict(zip(ARRAYS, got))
    else:
        raise ConfigError(
            f"{where} returned {type(got).__name__}; expected a mapping {{x_train, y_train[, "
            "x_val, y_val]}} or a tuple (x_train, y_train[, x_val, y_val]) of arrays"
        )
    arrays = {}
    for name, value in returned.items():
        if name not in ARRAYS:
            continue
        array = np.asarray(value)
        if array.dtype == object:
            raise ConfigError(f"{where}: {name} is not an array of numbers")
        arrays[name] = array
    return _complete(where, arrays, list(returned))


def _complete(where: str, arrays: dict, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays a source must hold: x_train, y_train, and x_val with y_val or neither."""
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
    return arrays


def _check_pair(where: str, split: str, x: np.ndarray, y: np.ndarray, regression: bool) -> None:
    xs, ys = f"x_{split}", f"y_{split}"
    if not _real(x) or x.ndim != 2:
        raise ConfigError(
            f"{where}: {xs} must be a 2-D array of real numbers (samples, features), got shape "
            f"{x.shape} of {x.dtype}"
        )
    if regression and (not _real(y) or y.ndim not in (1, 2)):
        raise ConfigError(
            f"{where}: {ys} must be a 1-D or 2-D array of real-valued targets (samples[, "
            f"outputs]), got shape {y.shape} of {y.dtype}"
        )
    if not regression and (y.ndim != 1 or not np.issubdtype(y.dtype, np.integer)):
        raise ConfigError(
            f"{where}: {ys} must be a 1-D array of integer class labels, got shape {y.shape} of "
            f"{y.dtype} (real-valued targets: set data.task=regression)"
        )
    if len(x) != len(y):
        raise ConfigError(f"{where}: {xs} has {len(x)} samples but {ys} {len(y)}")
    if len(y) == 0:
        raise ConfigError(f"{where}: {xs} is empty")
    for name, a in ((xs, x), (ys, y)):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ConfigError(f"{where}: {name} has NaN or Inf values")
    if not regression and y.min() < 0:
        raise ConfigError(f"{where}: {ys} has a negative label ({y.min()}); labels are 0..k-1")


def _real(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)


def _outputs(arrays: dict[str, np.ndarray], regression: bool) -> int:
    """The network's outputs: classes (the largest label + 1), or the targets per sample."""
    if regression:
        return 1 if arrays["y_train"].ndim == 1 else arrays["y_train"].shape[1]
    return int(max(a.max() for k, a in arrays.items() if k.startswith("y_"))) + 1


def _source(cfg) -> tuple[str, dict[str, np.ndarray]]:
    """Where a user's data comes from (for messages) and its arrays, unchecked."""
    if cfg.name == "custom":
        if cfg.loader is None:
            raise ConfigError(
                "data.name=custom needs data.loader=<module>:<function>, a function that returns "
                "{x_train, y_train[, x_val, y_val]}"
            )
        return f"data.loader={cfg.loader}", read_loader(cfg.loader, cfg.seed)
    if cfg.path is None:
        raise ConfigError(
            "data.name=npz needs data.path=<file.npz> (x_train, y_train[, x_val, y_val])"
        )
    return f"data.path={cfg.path!r}", read_npz(cfg.path)


def _checked(cfg) -> tuple[dict[str, np.ndarray], Sizes]:
    """The user's arrays, checked, and the sizes they give (after the split, when there is
    one)."""
    where, arrays = _source(cfg)
    regression = cfg.task == "regression"
    for split in ("train", "val"):
        if f"x_{split}" in arrays:
            _check_pair(where, split, arrays[f"x_{split}"], arrays[f"y_{split}"], regression)
    if "x_val" in arrays:
        x_train, x_val, y_train, y_val = (
            arrays[k] for k in ("x_train", "x_val", "y_train", "y_val")
        )
        if x_val.shape[1] != x_train.shape[1]:
            raise ConfigError(
                f"{where}: x_val has {x_val.shape[1]} features but x_train {x_train.shape[1]}"
            )
        if regression and y_val.shape[1:] != y_train.shape[1:]:
            raise ConfigError(
                f"{where}: y_val has shape {y_val.shape} but y_train {y_train.shape}: the same "
                "targets per sample are needed"
            )
    n_outputs = _outputs(arrays, regression)
    if not regression and n_outputs < 2:
        raise ConfigError(f"{where}: the labels name one class only; a classifier needs two")
    n_features = arrays["x_train"].shape[1]
    if "x_val" in arrays:
        return arrays, Sizes(len(arrays["y_train"]), len(arrays["y_val"]), n_features, n_outputs)
    n = len(arrays["y_train"])
    n_val = math.ceil(cfg.val_fraction * n)
    if regression and min(n - n_val, n_val) < 1:
        raise ConfigError(
            f"{where}: holding out data.val_fraction={cfg.val_fraction} of its {n} samples leaves "
            f"{n - n_val} for training and {n_val} for validation (give x_val, y_val, or another "
            "data.val_fraction)"
        )
    counts = None if regression else np.bincount(arrays["y_train"], minlength=n_outputs)
    if counts is not None and (min(n - n_val, n_val) < n_outputs or counts.min() < 2):
        raise ConfigError(
            f"{where}: holding out data.val_fraction={cfg.val_fraction} of its {n} samples leaves "
            f"{n - n_val} for training and {n_val} for validation, and its rarest class has "
            f"{counts.min()}: a stratified split needs every class on both sides (give x_val, "
            "y_val, or another data.val_fraction)"
        )
    return arrays, Sizes(n - n_val, n_val, n_features, n_outputs)


def check(cfg) -> Sizes:
    """Validate a ``data`` section that names the user's data: its source and contents
    (``data.sha256`` is compared where the config resolves the data: ``pipeline.config.load``)."""
    return _checked(cfg)[1]


def digest(cfg) -> str:
    """What ``data.sha256`` records: the file's hash, or the hash of the loader's arrays."""
    if cfg.name == "custom":
        return arrays_sha256(_source(cfg)[1])
    return sha256(cfg.path)


def sizes(cfg) -> Sizes:
    """What a ``data`` section will hold, without training on it."""
    if cfg.name in DATA_FILES:
        return _checked(cfg)[1]
    return core_data.sizes(cfg)


def load_dataset(cfg) -> Dataset:
    """The dataset a (validated) ``data`` section describes."""
    if cfg.name not in DATA_FILES:
        return core_data.load_dataset(cfg)
    arrays, n = _checked(cfg)
    regression = cfg.task == "regression"
    if "x_val" in arrays:
        parts = (arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"])
    else:
        x, y = arrays["x_train"], arrays["y_train"]
        parts = core_data.split(x, y, cfg.val_fraction, cfg.seed, stratify=not regression)
    if regression:
        return core_data.regression_from_arrays(*parts, cfg.standardize_targets)
    return core_data.from_arrays(*parts, n.n_classes)
