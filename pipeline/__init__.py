"""initsweep: sweep weight initialization with JAX, Optuna and MLflow; reuse the winners."""

import time as _time

STARTED = _time.time()  # when the package began to import: the bench's start-up phases

from pipeline.export import load_bias_initializer, load_initializer  # noqa: E402
from pipeline.initializers import make_bias_initializer, make_initializer  # noqa: E402

__all__ = ["load_bias_initializer", "load_initializer", "make_bias_initializer", "make_initializer"]
