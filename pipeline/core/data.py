"""Datasets, generated or bundled (nothing is downloaded), standardized, as numpy arrays.

``gaussian``: ``clusters_per_class`` Gaussian clusters per class, their means drawn from
N(0, separation^2 / (2 features) I) and unit-variance noise around them, so two cluster means lie
about ``separation`` noise standard deviations apart. ``digits``: scikit-learn's bundled 8x8
handwritten digits (1797 images, 64 features), split stratified into train and validation.
Both are standardized with training statistics.

``recall`` (associative recall, for ``model.kind=transformer``): integer token sequences
``k_1 v_1 k_2 v_2 ... k_P v_P q`` of ``pairs`` = P key-value pairs, the keys distinct and drawn
from ``key_vocab`` key tokens (ids ``0..key_vocab-1``), each value drawn from ``value_vocab``
value tokens (ids ``key_vocab + 0..value_vocab-1``), then a query key ``q`` that is one of the
P keys; the label is that key's value (a class of ``value_vocab``: chance accuracy
1/value_vocab, chance loss ln(value_vocab)). Nothing says which value goes with the query but
the value's position next to the matching key, so a bag of tokens (a sum of embeddings, any
read-out) cannot do better than guessing among the values present (about 1/P): the network has
to find the key's earlier occurrence and read its neighbour, which takes attention, and at
least two layers of it (an induction-head-like circuit, Olsson et al. 2022; the associative
recall task of Ba et al. 2016).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    x_train: np.ndarray  # float32 [n_train, features]
    y_train: np.ndarray  # int32 [n_train] class labels, or float32 [n_train, outputs] targets
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int  # the network's outputs: classes, or a regression's targets
    n_tokens: int = 0  # token inputs (recall): the vocabulary; 0: float features

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def regression(self) -> bool:
        return self.y_train.dtype.kind == "f"


def _standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)  # digits has constant (always blank) pixels
    return ((x_train - mean) / std).astype(np.float32), ((x_val - mean) / std).astype(np.float32)


def gaussian(
    classes: int,
    features: int,
    samples: int,
    val_samples: int,
    separation: float,
    seed: int,
    clusters_per_class: int = 1,
) -> Dataset:
    rng = np.random.default_rng(seed)
    # Two cluster means lie about `separation` noise standard deviations apart. With several
    # clusters per class the classes are not linearly separable, so depth and nonlinearity matter.
    n_clusters = classes * clusters_per_class
    means = rng.normal(0.0, separation / np.sqrt(2.0 * features), (n_clusters, features))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = rng.integers(0, n_clusters, n)
        return means[cluster] + rng.normal(size=(n, features)), (cluster % classes).astype(np.int32)

    x_train, y_train = draw(samples)
    x_val, y_val = draw(val_samples)
    x_train, x_val = _standardize(x_train, x_val)
    return Dataset(x_train, y_train, x_val, y_val, classes)


def recall(
    pairs: int, key_vocab: int, value_vocab: int, samples: int, val_samples: int, seed: int
) -> Dataset:
    """Associative recall (module docstring): int32 tokens ``[n, 2 pairs + 1]``, labels the
    queried key's value ``[n]``; vocabulary ``key_vocab + value_vocab``."""
    if pairs > key_vocab:
        raise ValueError(f"recall: {pairs} distinct keys need key_vocab >= {pairs}")
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        # Distinct keys per sequence: the first P of a random permutation of the key tokens.
        keys = np.argsort(rng.random((n, key_vocab)), axis=1)[:, :pairs]
        values = rng.integers(0, value_vocab, (n, pairs))
        asked = rng.integers(0, pairs, n)
        x = np.empty((n, 2 * pairs + 1), np.int32)
        x[:, 0:-1:2] = keys
        x[:, 1:-1:2] = key_vocab + values
        x[:, -1] = keys[np.arange(n), asked]
        return x, values[np.arange(n), asked].astype(np.int32)

    x_train, y_train = draw(samples)
    x_val, y_val = draw(val_samples)
    return Dataset(x_train, y_train, x_val, y_val, value_vocab, key_vocab + value_vocab)


def token_vocab(cfg) -> int:
    """The token vocabulary a ``data`` section's inputs use; 0 for float features."""
    return cfg.key_vocab + cfg.value_vocab if cfg.name == "recall" else 0


DIGITS_IMAGES, DIGITS_PIXELS, DIGITS_CLASSES = 1797, 64, 10  # scikit-learn's load_digits


class Sizes(NamedTuple):
    n_train: int
    n_val: int
    n_features: int
    n_classes: int  # outputs: classes, or a regression's targets


def sizes(cfg) -> Sizes:
    """What a generated or bundled ``data`` section will hold, without building it. Digits:
    scikit-learn's split takes ``ceil(val_fraction * 1797)`` images for validation."""
    if cfg.name == "digits":
        n_val = math.ceil(cfg.val_fraction * DIGITS_IMAGES)
        return Sizes(DIGITS_IMAGES - n_val, n_val, DIGITS_PIXELS, DIGITS_CLASSES)
    if cfg.name == "recall":  # features: the sequence's positions
        return Sizes(cfg.samples, cfg.val_samples, 2 * cfg.pairs + 1, cfg.value_vocab)
    return Sizes(cfg.samples, cfg.val_samples, cfg.features, cfg.classes)


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, stratify=True) -> tuple:
    """Train/validation split (scikit-learn's): ``ceil(val_fraction * n)`` samples held out;
    stratified (every class on both sides) unless the labels are regression targets."""
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=seed, stratify=y if stratify else None
    )
    return x_train, y_train, x_val, y_val


def from_arrays(x_train, y_train, x_val, y_val, n_classes: int) -> Dataset:
    """A dataset from arrays: float32 features standardized with training statistics, int32
    labels."""
    x_train, x_val = _standardize(np.asarray(x_train, np.float64), np.asarray(x_val, np.float64))
    return Dataset(
        x_train, np.asarray(y_train, np.int32), x_val, np.asarray(y_val, np.int32), n_classes
    )


def regression_from_arrays(x_train, y_train, x_val, y_val, standardize: bool) -> Dataset:
    """A regression dataset from arrays: features standardized, targets float32 ``[n, outputs]``
    (a 1-D target is one output), standardized per output with training statistics when
    ``standardize`` (then a loss of 1 is what predicting the mean scores)."""
    x_train, x_val = _standardize(np.asarray(x_train, np.float64), np.asarray(x_val, np.float64))
    y_train, y_val = (np.asarray(y, np.float64).reshape(len(y), -1) for y in (y_train, y_val))
    if standardize:
        y_train, y_val = _standardize(y_train, y_val)
    y_train, y_val = y_train.astype(np.float32), y_val.astype(np.float32)
    return Dataset(x_train, y_train, x_val, y_val, y_train.shape[1])


def digits(val_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return from_arrays(*split(x, y, val_fraction, seed), DIGITS_CLASSES)


def load_dataset(cfg) -> Dataset:
    """The generated or bundled dataset a ``data`` config section describes (a user's file:
    ``pipeline.engine.datasets``)."""
    if cfg.name == "gaussian":
        return gaussian(
            cfg.classes,
            cfg.features,
            cfg.samples,
            cfg.val_samples,
            cfg.separation,
            cfg.seed,
            cfg.clusters_per_class,
        )
    if cfg.name == "digits":
        return digits(cfg.val_fraction, cfg.seed)
    if cfg.name == "recall":
        return recall(
            cfg.pairs, cfg.key_vocab, cfg.value_vocab, cfg.samples, cfg.val_samples, cfg.seed
        )
    raise ValueError(f"unknown dataset {cfg.name!r}")


def batch_schedule(
    n_train: int, batch_size: int, steps: int, seeds: int, base_seed: int
) -> np.ndarray:
    """int32 [seeds, steps, batch_size]: sample indices, epoch-wise shuffles per seed."""
    per_epoch = n_train // batch_size
    epochs = -(-steps // per_epoch)
    out = np.empty((seeds, epochs * per_epoch, batch_size), np.int32)
    for s in range(seeds):
        rng = np.random.default_rng([base_seed, s])
        perms = [rng.permutation(n_train)[: per_epoch * batch_size] for _ in range(epochs)]
        out[s] = np.concatenate(perms).reshape(-1, batch_size)
    return out[:, :steps]
