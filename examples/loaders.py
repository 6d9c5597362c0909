"""Data loaders for ``data.name=custom data.loader=examples.loaders:<function>``: your data as
arrays, straight from Python, no file in between. Each uses a data set scikit-learn ships
(nothing is downloaded).

A loader returns ``{"x_train", "y_train"[, "x_val", "y_val"]}`` (or the same as a tuple); without
validation arrays the engine holds out ``data.val_fraction`` with ``data.seed``, which a loader
that takes ``seed`` also receives. The arrays' SHA-256 is recorded in every trial's spec.

    python -m pipeline sweep data.name=custom data.loader=examples.loaders:wine
    python -m pipeline sweep data.name=custom data.loader=examples.loaders:diabetes \\
        data.task=regression train.target_loss=0.6
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes, load_wine


def wine() -> dict[str, np.ndarray]:
    """Classification: 178 wines, 13 chemical measurements, 3 cultivars."""
    x, y = load_wine(return_X_y=True)
    return {"x_train": x, "y_train": y}


def diabetes(seed: int = 0) -> dict[str, np.ndarray]:
    """Regression: disease progression a year on, from 10 baseline measurements of 442
    patients; a shuffled 80/20 split of its own, by ``seed``."""
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, val = order[:cut], order[cut:]
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val]}
