"""The examples in the docstrings run (doctest), each against a best file as ``make best`` writes
it: a one-trial study of the tests' tiny network, exported by ``best_document``.

Each example's names are the ones its docstring reads: ``model`` is the Flax module for
``init_params`` and a PyTorch network named like the built-in MLP for ``to_torch`` and
``torch_param_groups``; ``params`` the built-in network's Flax parameters for ``optax_for``."""

from __future__ import annotations

import doctest
import importlib
import os

import optuna
import pytest
from conftest import TINY, add_planted_trial

from pipeline.config import TrialSpec, load_config
from pipeline.reuse.best import best_document, read_best, write_best

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 defaults to TensorFlow otherwise

# Every module whose docstrings hold examples (a test below fails if one is missing here).
MODULES = (
    "pipeline.core.initializers",
    "pipeline.reuse.best",
    "pipeline.reuse.rates",
    "pipeline.reuse.export_flax",
    "pipeline.reuse.export_keras",
    "pipeline.reuse.export_torch",
    "pipeline.reuse.optimizers",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with conf/best/default.yaml and conf/best/my_study.yaml."""
    from optuna.distributions import CategoricalDistribution

    tmp = tmp_path_factory.mktemp("doctest")
    spec = TrialSpec.of_config(load_config([*TINY, "model.depth=2", "init.weights=he_normal"]))
    study = optuna.create_study(study_name="my_study")
    params = {"init.weights": "he_normal"}
    distributions = {"init.weights": CategoricalDistribution(("he_normal",))}
    add_planted_trial(study, spec, params, distributions, [30, 32])
    document = best_document(study, 1, {}, None, "memory", answers={"networks": []})
    for name in ("default", "my_study"):
        write_best(document, tmp / "conf" / "best" / f"{name}.yaml")
    return tmp


def _mlp_class():
    import flax.linen as nn

    class MLP(nn.Module):
        """A user's linen MLP, as docs/your_model.md writes one."""

        width: int
        classes: int

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.relu(nn.Dense(self.width)(x))
            x = nn.relu(nn.Dense(self.width)(x))
            return nn.Dense(self.classes)(x)

    return MLP


def _MLP(width: int, classes: int):
    return _mlp_class()(width, classes)


def _names(module_name: str, best: dict) -> dict:
    """The names the module's examples use, built as a user's code would have them."""
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp

    import pipeline

    width, features = best["model"]["width"], best["structure"]["n_features"]
    classes = best["structure"]["n_classes"]
    flax_mlp = _MLP(width, classes)
    x = jnp.zeros((4, features))
    names = {"pipeline": pipeline, "jax": jax, "jnp": jnp, "nnx": nnx, "best": best, "x": x}
    names["read_best"] = read_best
    names["model"] = flax_mlp
    names["params"] = pipeline.init_params(best, flax_mlp, jax.random.key(0), x)
    if module_name in ("pipeline.reuse.export_torch", "pipeline.reuse.optimizers"):
        torch = pytest.importorskip("torch")
        names["torch"] = torch
        layers = [features, width, width, classes]
        linear = [torch.nn.Linear(a, b) for a, b in zip(layers, layers[1:])]
        names["model"] = torch.nn.Sequential(linear[0], torch.nn.ReLU(), linear[1],
                                             torch.nn.ReLU(), linear[2])  # fmt: skip
    if module_name == "pipeline.reuse.export_keras":
        names["keras"] = pytest.importorskip("keras")
    return names


@pytest.mark.parametrize("module_name", MODULES)
def test_the_docstring_examples_run(module_name, folder, monkeypatch):
    monkeypatch.chdir(folder)
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{module_name} holds no examples: take it off MODULES"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    names = _names(module_name, read_best(folder / "conf" / "best" / "default.yaml"))
    for test in tests:
        test.globs.update(names)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (above)"
    assert result.attempted == sum(len(t.examples) for t in tests)  # none skipped


def test_every_module_with_examples_is_run():
    """A docstring example anywhere in the package is in MODULES (or it would never run)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "pipeline"
    holders = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts)
        for p in root.rglob("*.py")
        if ">>> " in p.read_text()
    }
    assert holders == set(MODULES)
