"""One place per name: optimizers, samplers and pruners are each declared once, and every
registry that acts on them holds exactly those names (it refuses at import to differ)."""

from dataclasses import fields

import jax
import jax.numpy as jnp
import optuna
import pytest

from pipeline.config.schema import PRUNERS, SAMPLERS, Study, Train
from pipeline.config.space import Space
from pipeline.core.names import OPTIMIZER_STATE_COPIES, OPTIMIZERS, check_registry
from pipeline.core.train import DIRECTIONS
from pipeline.search.samplers import (
    PRUNER_FACTORIES,
    SAMPLER_FACTORIES,
    make_pruner,
    make_sampler,
)


@pytest.mark.parametrize(
    ("section", "key", "names", "acts"),
    [
        (Train, "optimizer", OPTIMIZERS, DIRECTIONS),
        (Study, "sampler", SAMPLERS, SAMPLER_FACTORIES),
        (Study, "pruner", PRUNERS, PRUNER_FACTORIES),
    ],
)
def test_the_schema_accepts_exactly_the_names_the_registries_act_on(section, key, names, acts):
    [f] = [f for f in fields(section) if f.name == key]
    rule = f.metadata["rule"]
    assert rule.names == names == tuple(acts)
    assert not rule.ok("no_such_name")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_holds_the_state_copies_the_memory_estimate_counts(name):
    """The copies of the parameters in the direction's state, counted on a real optax state."""
    params = {"w": jnp.zeros((3, 5)), "b": jnp.zeros(5)}

    class Hp:
        values = {"train.momentum": 0.9}

    state = DIRECTIONS[name](Hp).init(params)
    shaped = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) in {(3, 5), (5,)}]
    assert len(shaped) == 2 * OPTIMIZER_STATE_COPIES[name]


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_name_builds_a_seeded_sampler(name):
    if name == "gp":
        pytest.importorskip("torch")
    space = Space.parse({"init.gain": [1.0, 2.0]})
    sampler = make_sampler(name, 3, space)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_every_pruner_name_builds_its_pruner(name, kind):
    assert isinstance(make_pruner(name), kind)


def test_a_registry_that_differs_from_its_names_is_refused():
    with pytest.raises(ImportError, match="differs"):
        check_registry({**SAMPLER_FACTORIES, "qmc": None}, SAMPLERS)
    with pytest.raises(ImportError, match="order"):
        check_registry(dict(reversed(PRUNER_FACTORIES.items())), PRUNERS)
