"""initsweep: sweep weight initialization with JAX, Optuna and MLflow; reuse the winners.

The package, by concern (each subpackage's docstring says more):

- ``pipeline.core``: the pure JAX core (initializers, model, training, metrics, theory, data);
- ``pipeline.config``: the schema, loading and validation, the search space, ``TrialSpec``;
- ``pipeline.engine``: planning, traced arrays, compiled calls, devices;
- ``pipeline.search``: Optuna samplers, study storage, leases, the sweep loop, workers;
- ``pipeline.tracking``: MLflow, figures, reports;
- ``pipeline.reuse``: best-config files, ``load_initializer``, Flax/Keras/PyTorch export;
- ``pipeline.cli``: ``python -m pipeline ...``.

The public API is ``__all__`` below; ``pipeline.theory`` and ``pipeline.export`` (and the other
module names of the first version) still import, as the modules they became.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import time as _time

STARTED = _time.time()  # when the package began to import: the bench's start-up phases

# Modules of the first version, by the name scripts import them with: the same module objects.
MOVED = {
    "pipeline.activations": "pipeline.core.activations",
    "pipeline.initializers": "pipeline.core.initializers",
    "pipeline.model": "pipeline.core.model",
    "pipeline.theory": "pipeline.core.theory",
    "pipeline.data": "pipeline.core.data",
    "pipeline.export": "pipeline.reuse.export",
    "pipeline.study": "pipeline.search.study",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import pipeline.theory`` gives ``pipeline.core.theory`` itself (not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # the real module ran when it was imported


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())

from pipeline.core.initializers import make_bias_initializer, make_initializer  # noqa: E402
from pipeline.reuse.best import init_params, load_bias_initializer, load_initializer  # noqa: E402


def __getattr__(name: str):
    """``pipeline.theory.signal_propagation``, ``pipeline.export.to_flax`` after ``import
    pipeline``: the moved modules load on first use."""
    if f"pipeline.{name}" in MOVED:
        return importlib.import_module(f"pipeline.{name}")
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "init_params",
    "load_bias_initializer",
    "load_initializer",
    "make_bias_initializer",
    "make_initializer",
]
