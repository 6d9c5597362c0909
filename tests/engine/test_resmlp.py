"""The residual MLP (model.kind=resmlp) and its initialization rules (issue 13): equivalences,
rules at initialization, theory against measurement, refusals, and one run end to end."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, run_main
from conftest import train_trials as run

from pipeline.config import ConfigError, Space, TrialSpec, load_config
from pipeline.core.data import batch_schedule, gaussian
from pipeline.core.model import Structure
from pipeline.core.net import builtin_net
from pipeline.core.train import Data, Settings, init_params
from pipeline.core.unit_draws import make_unit_draws
from pipeline.engine import Engine, draws_for
from pipeline.engine.datasets import load_dataset
from pipeline.engine.rows import row_hparams, stack_rows
from pipeline.engine.run import batched_train
from pipeline.reuse import export

RES = [*TINY, "model.kind=resmlp", "train.steps=20", "train.eval_every_steps=10", "train.seeds=1"]
RULES = ("none", "scaled", "gpt2", "fixup", "rezero")


def test_trials_of_every_rule_train_in_one_call_as_each_alone():
    # Diagnostics off: half the compile time; test_masked_blocks_... compares them.
    cfg = load_config([*RES, "model.depth=3", "model.norm=pre", "metrics.diagnostics=false"])
    variants = [{"init.residual": r} for r in RULES] + [{"init.readout": "zero"}]
    base = TrialSpec.of_config(cfg)
    trials = [base.with_values(v) for v in variants]
    engine = Engine(cfg, load_dataset(cfg.data), Space())
    together = engine.run(trials)
    assert engine.stats.executables == 1  # init.residual and init.readout are traced
    for trial, batched_result in zip(trials, together):
        [alone] = engine.run([trial])
        np.testing.assert_allclose(
            alone.curves["loss"][1], batched_result.curves["loss"][1], rtol=2e-4, atol=1e-5
        )
        assert alone.metrics["steps_to_target"] == batched_result.metrics["steps_to_target"]
    # A zero read-out (kernel and bias): every logit is 0, the loss exactly ln(classes).
    zero = together[-1].metrics["initial_train_loss"]
    assert zero == pytest.approx(math.log(cfg.data.classes), abs=1e-6)
    assert together[0].metrics["initial_train_loss"] > zero + 0.1


def test_masked_blocks_equal_the_real_shallower_network():
    variant = {"model.depth": 3, "init.residual": "scaled", "init.bias": "normal"}
    [padded], e1 = run(load_config([*RES, "model.norm=post", "engine.depth_buckets=[8]"]), variant)
    [exact], e2 = run(load_config([*RES, "model.norm=post", "engine.depth_buckets=[3]"]), variant)
    assert e1.stats.padded_layer_steps > e2.stats.padded_layer_steps  # the first really padded
    np.testing.assert_allclose(
        padded.curves["loss"][1], exact.curves["loss"][1], rtol=2e-4, atol=1e-5
    )
    for name, value in exact.diagnostics.items():
        assert value.shape == padded.diagnostics[name].shape, name
        np.testing.assert_allclose(padded.diagnostics[name], value, rtol=1e-4, atol=1e-7)
    assert exact.diagnostics["stream_ms"].shape[1] == 4  # the input layer + 3 blocks


# The measured stream ratio against theory (and against PyTorch built from the export):
# tests/engine/test_residual_export.py.

STRUCTURE = Structure("relu", 3, 16, 16, 10, "resmlp")  # TINY's sizes, 3 blocks
DRAWS = draws_for(["he_normal"])


@functools.cache
def _net_and_units():
    """The network of ``STRUCTURE`` and its unit draws (sampled once for the tests below)."""
    net = builtin_net(STRUCTURE)
    return net, make_unit_draws(net, DRAWS)(jax.random.key(0), 1)


def _initial(trial: TrialSpec):
    """(row, params) of one trial at initialization, through the core."""
    net, units = _net_and_units()
    hp = row_hparams(trial, net.layout, STRUCTURE, DRAWS, 0)
    return hp, init_params(units, hp, net.layout)


def test_fixup_zeroes_each_branch_output_and_scales_its_input_layer():
    base = TrialSpec.of_config(load_config([*RES, "model.depth=3"]))
    _, plain = _initial(base)
    _, fixup = _initial(base.with_values({"init.residual": "fixup"}))
    assert np.all(np.asarray(fixup["blocks"]["fc2"]["kernel"]) == 0.0)
    ratio = np.asarray(fixup["blocks"]["fc1"]["kernel"]) / np.asarray(
        plain["blocks"]["fc1"]["kernel"]
    )
    np.testing.assert_allclose(ratio, 3**-0.5, rtol=1e-6)  # Zhang et al. 2019: L^(-1/(2m-2))
    np.testing.assert_array_equal(fixup["input"]["kernel"], plain["input"]["kernel"])


def test_rezero_starts_as_the_network_without_blocks_and_its_gate_learns():
    cfg = load_config([*RES, "model.depth=3", "init.bias=normal", "init.bias_std=0.1"])
    base = TrialSpec.of_config(cfg)
    trials = [base.with_values({"init.residual": r}) for r in ("rezero", "scaled")]
    net, units = _net_and_units()
    hp, params = _initial(trials[0])
    x = jnp.asarray(gaussian(10, 16, 64, 8, 6.0, 0)[0])
    logits = net.apply(params, x, hp)
    h = jax.nn.relu(x @ params["input"]["kernel"] + params["input"]["bias"])
    h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-6)
    h = h * params["input_norm"]["scale"] + params["input_norm"]["bias"]
    no_blocks = h @ params["output"]["kernel"] + params["output"]["bias"]
    np.testing.assert_allclose(logits, no_blocks, rtol=1e-5, atol=1e-5)

    ds = gaussian(10, 16, 256, 64, 6.0, 0)
    data = Data(*(jnp.asarray(a) for a in ds[:4]), jnp.asarray(batch_schedule(256, 32, 1, 1, 0)))
    settings = Settings("sgd", 32, 1, 0.9, 0.7, 1e3, 1e-6, diagnostics=False)
    init_fn, chunk_fn = batched_train(net, settings)
    hps = stack_rows([_initial(t)[0] for t in trials])
    state = init_fn(hps, units, data)
    state, _ = chunk_fn(state, hps, jnp.ones(2, bool), data)
    gates = np.asarray(state.params["blocks"]["gate"])
    assert np.all(gates[0] != 0.0)  # rezero: each block's gate moved off 0
    assert np.all(gates[1] == 0.0)  # scaled: alpha is a constant, the gate is not trained


def _entry(**overrides) -> dict:
    """A best-file entry (the nested spec) of a resmlp trial with ``overrides`` (dotted keys)."""
    spec = TrialSpec.of_config(load_config([*RES, "model.depth=16"]))
    return spec.with_values({k.replace("__", "."): v for k, v in overrides.items()}).nested()


def test_each_rule_exports_as_rules_and_its_forward_constants_as_code():
    fixup = _entry(init__residual="fixup", init__readout="zero")
    assert export.init_spec(fixup, "blocks/3/fc2").weights == "zeros"  # a PyTorch-style path
    plain = export.init_spec(fixup)
    assert export.init_spec(fixup, "blocks/fc1").gain == pytest.approx(plain.gain / 4)  # 16^-1/2
    out = export.init_spec(fixup, "output")
    assert (out.weights, out.bias) == ("zeros", "zeros")
    deep = _entry(init__residual="deepnorm", model__norm="post")
    assert export.init_spec(deep, "blocks/0/fc2").gain == pytest.approx(plain.gain * 128**-0.25)
    scaled = export.snippet(_entry(init__residual="scaled"), "flax")
    assert "alpha = 0.25, skip = 1" in scaled
    rezero = export.snippet(_entry(init__residual="rezero"), "torch")
    assert "torch.nn.Parameter(torch.zeros(()))" in rezero
    assert "alpha" not in export.snippet(_entry(model__kind="mlp"), "keras")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.kind=resmlp", "init.residual=deepnorm"], "needs model.norm=post"),
        (["init.residual=scaled"], "is for model.kind=resmlp"),
        (["model.norm=pre"], "is for model.kind=resmlp"),
        (["model.kind=resmlp", "space.init.residual=[none, deepnorm]"], "needs model.norm=post"),
        (
            ["model.kind=custom", "model.factory=examples.resnet:make_model", "init.readout=zero"],
            "init.readout=zero",
        ),
        (["model.kind=resmlp", "init.weights=lsuv"], "lsuv is implemented for model.kind=mlp"),
    ],
)
def test_bad_combinations_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config([*TINY, *overrides])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_resmlp_sweep_best_and_train_reproduce_the_stored_metrics(tmp_path):
    args = [*RES, "model.depth=4", "model.norm=pre", "study.name=res", "study.sampler=grid"]
    space = ["space={init: {residual: [none, scaled, fixup, rezero]}}", "study.n_trials=4"]
    space += ["space.init.gain=1.0", "space.train.learning_rate=0.05"]  # BASE's ranges fixed
    run_main(tmp_path, "sweep", *args, *space, "tracking.figures=wait")
    best = tmp_path / "best.yaml"
    snippet = run_main(tmp_path, "best", "study.name=res", "--out", str(best), "--format", "torch")
    assert "model.kind=resmlp" in snippet.stdout and "init.residual=" in snippet.stdout
    out = run_main(tmp_path, "train", "--config", str(best), "--json")
    report = json.loads(out.stdout[out.stdout.index("{") :])
    import yaml

    stored = yaml.safe_load(best.read_text())["configs"][0]
    assert stored["model"]["kind"] == "resmlp" and stored["model"]["norm"] == "pre"
    assert report["config"]["init.residual"] == stored["init"]["residual"]
    assert report["steps_to_target"] == stored["measured"]["steps_to_target"]
    assert report["diag.init.stream_var_ratio"] > 0
    assert report["theory.stream_var_ratio"] > 0  # theory beside the measurement
