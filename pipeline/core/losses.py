"""The loss and the validation score of a task, chosen by the dtype of its labels.

- classification: integer labels; mean softmax cross-entropy of the outputs (the logits);
  validation accuracy.
- regression (``data.task=regression``): float targets ``[batch, outputs]``; mean squared error
  over every sample and output (scikit-learn's ``mean_squared_error``, uniform average), in the
  targets' squared units: standardized targets (``data.standardize_targets``, the default) make
  ``train.target_loss`` a share of their variance left unexplained, 1 - R^2. No accuracy.

A dtype is static under ``jit``, so the choice costs nothing at run time: the dataset's labels
(``pipeline.core.data``) are the one place that says which task a network is trained for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def is_regression(y: jax.Array) -> bool:
    return jnp.issubdtype(y.dtype, jnp.floating)


def loss(outputs: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy (integer labels) or mean squared error (float targets)."""
    if is_regression(y):
        return jnp.mean(jnp.square(outputs - y))
    return optax.softmax_cross_entropy_with_integer_labels(outputs, y).mean()


def accuracy(outputs: jax.Array, y: jax.Array) -> jax.Array | None:
    """Share of samples whose largest logit is their label; ``None`` for a regression."""
    if is_regression(y):
        return None
    return jnp.mean(jnp.argmax(outputs, -1) == y)
