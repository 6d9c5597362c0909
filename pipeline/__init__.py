"""initsweep: sweep weight initialization with JAX, Optuna and MLflow; reuse the winners."""

from pipeline.export import load_bias_initializer, load_initializer
from pipeline.initializers import make_bias_initializer, make_initializer

__all__ = ["load_bias_initializer", "load_initializer", "make_bias_initializer", "make_initializer"]
