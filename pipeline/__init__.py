"""initsweep: sweep weight initialization with JAX, Optuna and MLflow; reuse the winners.

The package, by concern (each subpackage's docstring says more):

- ``pipeline.core``: the pure JAX core (initializers, model, training, metrics, theory, data);
- ``pipeline.config``: the schema, loading and validation, the search space, ``TrialSpec``;
- ``pipeline.engine``: planning, traced arrays, compiled calls, devices;
- ``pipeline.search``: Optuna samplers, study storage, leases, the sweep loop, workers;
- ``pipeline.tracking``: every MLflow write;
- ``pipeline.reports``: what a finished study shows (figures, reports, recommendations, transfer);
- ``pipeline.reuse``: best-config files, ``load_initializer``, Flax/Keras/PyTorch export;
- ``pipeline.cli``: ``python -m pipeline ...``.

The public API is ``__all__`` below, loaded on first use (PEP 562): ``import pipeline.config``
imports no JAX. ``pipeline.theory``, ``pipeline.export`` and the other module names of the first
version are plain modules (``pipeline/theory.py``, ...) that stand for the modules they became.
"""

import importlib
import time as _time

STARTED = _time.time()  # when the package began to import: the bench's start-up phases

# Each public name and the module that defines it (imported when the name is first read).
_PUBLIC = {
    "init_params": "pipeline.reuse.best",
    "load_bias_initializer": "pipeline.reuse.best",
    "load_initializer": "pipeline.reuse.best",
    "make_bias_initializer": "pipeline.core.initializers",
    "make_initializer": "pipeline.core.initializers",
}
# The first version's module names (each a file here that stands for the module it became).
_OLD_NAMES = ("activations", "initializers", "model", "theory", "data", "export", "study")

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """``pipeline.load_initializer`` and ``pipeline.theory`` after ``import pipeline``."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # read once: later lookups skip this function
        return value
    if name in _OLD_NAMES:
        return importlib.import_module(f"pipeline.{name}")
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_OLD_NAMES})
