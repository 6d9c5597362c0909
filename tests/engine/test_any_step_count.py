"""Any train.steps with any train.eval_every_steps (issue 25): the chunking never changes the
numbers, the last chunk's masked steps count nowhere, and a step count the chunks divide trains
bit for bit as the engine did before a last chunk could be partial."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import pytest
from conftest import TINY, run_cli
from data.unit_draws_before_flat import unit_draws_before_flat

from benchmarks import baseline
from pipeline.config import Space, TrialSpec, load_config
from pipeline.core.metrics import compact_trace
from pipeline.engine import Engine
from pipeline.engine.datasets import load_dataset

# Three trials of two structures: one that reaches the target, one whose seeds explode and
# vanish (one of them reaches the target), a tanh one with dropout (its masks are keyed by step).
GOLDEN_CONFIG = [
    *TINY,  # train.steps=60, train.eval_every_steps=20
    "train.seeds=2",
    "model.depth=3",
    "train.target_loss=2.3",
    "metrics.explode_threshold=50",
]
GOLDEN_VARIANTS = [
    {"init.weights": "he_normal", "init.gain": 1.0},
    {"init.weights": "normal", "init.std": 1.0, "train.learning_rate": 0.3},
    {
        "model.activation": "tanh",
        "init.weights": "orthogonal",
        "init.gain": 1.3,
        "model.dropout": 0.1,
    },
]
# Produced by the engine before issue 25's change (commit d911ed9, where train.steps had to be a
# multiple of train.eval_every_steps), on this project's 2-core CPU machine: GOLDEN_VARIANTS
# trained with GOLDEN_CONFIG through conftest.train_trials, each result printed as
# (_digest(result), repr of every metric); twice, in two processes, with the same output. The
# digest covers the per-seed values, every curve and the diagnostics table with its steps. The
# unit draws were that sampler's (tests/engine/data/unit_draws_before_flat.py).
GOLDEN = [
    (
        "05d7fb8164a6e228",
        {
            "steps_to_target": 33.0,
            "reached_target": 1.0,
            "explosion_count": 0.0,
            "vanishing_count": 0.0,
            "diverged": 0.0,
            "initial_train_loss": 3.180114507675171,
            "final_train_loss": 2.1086710691452026,
            "final_val_loss": 2.1542850732803345,
            "final_val_accuracy": 0.234375,
            "objective": 33.0,
            "diag.init.backprop_ratio": 1.1494495868682861,
            "diag.init.weight_grad_ratio": 0.6698192954063416,
            "diag.init.act_var_ratio": 1.2471967935562134,
            "diag.init.dead_fraction": 0.0,
            "diag.init.saturated_fraction": 0.0,
            "diag.init.unit_spread": 0.7538029551506042,
            "diag.final.backprop_ratio": 0.7397071719169617,
            "diag.final.weight_grad_ratio": 1.2773815393447876,
            "diag.final.act_var_ratio": 0.6530033349990845,
            "diag.final.dead_fraction": 0.010416666977107525,
            "diag.final.saturated_fraction": 0.0,
            "diag.final.unit_spread": 0.7647690176963806,
        },
    ),
    (
        "6abf598c3ccc914e",
        {
            "steps_to_target": 60.0,
            "reached_target": 0.5,
            "explosion_count": 2.0,
            "vanishing_count": 3.5,
            "diverged": 0.0,
            "initial_train_loss": 145.9244384765625,
            "final_train_loss": 2.570701003074646,
            "final_val_loss": 2.4485161304473877,
            "final_val_accuracy": 0.140625,
            "objective": 60.43328094482422,
            "diag.init.backprop_ratio": 9.463554382324219,
            "diag.init.weight_grad_ratio": 0.5327699184417725,
            "diag.init.act_var_ratio": 79.82059478759766,
            "diag.init.dead_fraction": 0.0,
            "diag.init.saturated_fraction": 0.0,
            "diag.init.unit_spread": 0.7538029551506042,
            "diag.final.backprop_ratio": 2.1438279151916504,
            "diag.final.weight_grad_ratio": 1.2634408473968506,
            "diag.final.act_var_ratio": 0.007649912033230066,
            "diag.final.dead_fraction": 0.34375,
            "diag.final.saturated_fraction": 0.0,
            "diag.final.unit_spread": 0.5387986302375793,
        },
    ),
    (
        "570373c511a3d8e5",
        {
            "steps_to_target": 41.0,
            "reached_target": 1.0,
            "explosion_count": 0.0,
            "vanishing_count": 0.0,
            "diverged": 0.0,
            "initial_train_loss": 2.4853408336639404,
            "final_train_loss": 2.1818110942840576,
            "final_val_loss": 2.0906102657318115,
            "final_val_accuracy": 0.26171875,
            "objective": 41.0,
            "diag.init.backprop_ratio": 0.9031936526298523,
            "diag.init.weight_grad_ratio": 1.1602001190185547,
            "diag.init.act_var_ratio": 0.6804882287979126,
            "diag.init.dead_fraction": 0.0,
            "diag.init.saturated_fraction": 0.02083333395421505,
            "diag.init.unit_spread": 0.963385283946991,
            "diag.final.backprop_ratio": 0.8820683360099792,
            "diag.final.weight_grad_ratio": 1.1608597040176392,
            "diag.final.act_var_ratio": 0.6885034441947937,
            "diag.final.dead_fraction": 0.0,
            "diag.final.saturated_fraction": 0.02197265625,
            "diag.final.unit_spread": 0.9653047919273376,
        },
    ),
]

# Two trials of one structure: one that trains, one whose learning rate is too small to reach
# the target (the never-sentinel).
VARIANTS = [
    {"init.weights": "he_normal", "init.gain": 1.0, "train.learning_rate": 0.2},
    {"init.weights": "he_normal", "init.gain": 1.0, "train.learning_rate": 1e-4},
]


def _digest(result) -> str:
    """A hash of everything a result holds besides its summary metrics."""
    h = hashlib.sha256()
    for seed in result.seeds:
        h.update(np.asarray([seed[k] for k in sorted(seed)], np.float64).tobytes())
    for name in sorted(result.curves):
        steps, values = result.curves[name]
        h.update(np.asarray(steps, np.int64).tobytes())
        h.update(np.asarray(values, np.float64).tobytes())
    for name in sorted(result.diagnostics):
        h.update(np.asarray(result.diagnostics[name], np.float64).tobytes())
    h.update(np.asarray(result.diagnostic_steps, np.int64).tobytes())
    return h.hexdigest()[:16]


def _train(steps: int, every: int, *overrides: str):
    """VARIANTS trained in one engine call, recording what the pruner would be told:
    (results, engine, [(step, interim objectives)] per chunk)."""
    cfg = load_config(
        [*TINY, "train.target_loss=2.3", f"train.steps={steps}", f"train.eval_every_steps={every}"]
        + list(overrides)
    )
    trials = [TrialSpec.of_config(cfg).with_values(v) for v in VARIANTS]
    engine = Engine(cfg, load_dataset(cfg.data), Space.parse({"init.weights": ["he_normal"]}))
    told = []

    def on_chunk(ids, step, values):
        told.append((step, values))
        return set()

    return engine.run(trials, on_chunk=on_chunk), engine, told


def test_a_step_count_the_chunks_divide_trains_bit_for_bit_as_before():
    # GOLDEN was recorded with the unit draws of the sampler before pipeline.core.unit_draws:
    # today's engine trains from those same numbers (both structures share one layout).
    cfg = load_config(GOLDEN_CONFIG)
    trials = [TrialSpec.of_config(cfg).with_values(v) for v in GOLDEN_VARIANTS]
    space = Space.parse({"init.weights": [t["init.weights"] for t in trials]})
    engine = Engine(cfg, load_dataset(cfg.data), space)
    net = engine.net(engine.structure_of(trials[0]))
    units = unit_draws_before_flat(net.layout, engine.draws, net.own, engine.key, engine.n_seeds)
    engine._unit_values[net.layout] = jax.device_put(units, engine.replicated)
    results = engine.run(trials)
    for result, (digest, metrics) in zip(results, GOLDEN, strict=True):
        assert result.metrics == metrics
        assert _digest(result) == digest


def test_a_last_partial_chunk_changes_no_number():
    """61 steps in chunks of 20 (the last one 1 step and 19 masked ones) against one chunk of
    61: the same loss and gradient norm at every step, the same metrics and validation, and
    every boundary where the pruner, the curves and the diagnostics say it is."""
    ragged, ragged_engine, told = _train(61, 20)
    whole, whole_engine, _ = _train(61, 61)
    for r, w in zip(ragged, whole, strict=True):
        for name in ("loss", "grad_norm"):
            np.testing.assert_array_equal(r.curves[name][0], np.arange(61))
            np.testing.assert_array_equal(r.curves[name][1], w.curves[name][1])
        assert np.isfinite(r.curves["loss"][1]).all()  # no masked step's NaN leaked in
        assert r.metrics == w.metrics
        np.testing.assert_array_equal(r.curves["val_loss"][0], [20, 40, 60, 61])
        assert r.curves["val_loss"][1][-1] == w.curves["val_loss"][1][-1]
        np.testing.assert_array_equal(r.diagnostic_steps, [0, 20, 40, 60, 61])
        for name, table in r.diagnostics.items():  # after the last real step, as one chunk
            np.testing.assert_array_equal(table[-1], w.diagnostics[name][-1], err_msg=name)
        trace = compact_trace(r, 5)
        assert trace["loss_steps"] == list(range(0, 61, 5)) and np.isfinite(trace["loss"]).all()
    trains, never = ragged
    assert trains.metrics["reached_target"] == 1.0
    assert never.metrics["steps_to_target"] == 62.0 and never.metrics["reached_target"] == 0.0
    assert 62.0 < never.metrics["objective"] <= 2 * 61 + 2
    assert [step for step, _ in told] == [20, 40, 60, 61]
    assert told[-1][1] == [r.metrics["objective"] for r in ragged]  # one seed: its objective
    # The masked steps are counted as computed work (padding), never as trained steps.
    assert ragged_engine.stats.layer_steps == whole_engine.stats.layer_steps
    assert ragged_engine.stats.padded_layer_steps * 61 == whole_engine.stats.padded_layer_steps * 80
    # The plain loops' rule on the engine's curve gives the engine's steps to target.
    cfg = ragged_engine.cfg
    for r in ragged:
        loss, grad_norm = r.curves["loss"][1], r.curves["grad_norm"][1]
        assert baseline.steps_to_target(loss, grad_norm, cfg) == r.metrics["steps_to_target"]


def test_fewer_steps_than_a_chunk_train_as_one_step_at_a_time():
    short, short_engine, told = _train(7, 20)
    stepwise, stepwise_engine, _ = _train(7, 1)
    for s, w in zip(short, stepwise, strict=True):
        np.testing.assert_array_equal(s.curves["loss"][1], w.curves["loss"][1])
        assert len(s.curves["loss"][1]) == 7 and s.metrics == w.metrics
        np.testing.assert_array_equal(s.curves["val_loss"][0], [7])
        np.testing.assert_array_equal(s.diagnostic_steps, [0, 7])
        assert s.metrics["steps_to_target"] == 8.0  # nobody reaches 2.3 in 7 steps
    assert [step for step, _ in told] == [7]
    # One chunk of 7 steps, none masked: no more work than seven chunks of one.
    assert short_engine.stats.padded_layer_steps == stepwise_engine.stats.padded_layer_steps


def test_masked_steps_count_in_no_metric():
    """Planted: every step explodes and vanishes (thresholds no gradient can pass), so each
    count is the number of steps that ran; 19 masked steps would show."""
    results, _, _ = _train(61, 20, "metrics.explode_threshold=1e-9", "metrics.vanish_threshold=1e9")
    for r in results:
        assert r.metrics["explosion_count"] == 61 and r.metrics["vanishing_count"] == 61
        # Every step exploded, so the watched EMA never started: never, the sentinel.
        assert r.metrics["steps_to_target"] == 62.0 and r.metrics["reached_target"] == 0.0


@pytest.mark.slow  # the command as a user runs it: e2e
def test_train_with_steps_no_chunk_divides_from_the_command_line(tmp_path):
    args = [*TINY, "train.steps=61", "train.eval_every_steps=20", "train.target_loss=1e-6"]
    out = run_cli(tmp_path, "train", *args, "--json")
    report = json.loads(out.stdout)
    assert report["steps_to_target"] == 62.0 and report["reached_target"] == 0.0
    assert 62.0 < report["objective"] <= 2 * 61 + 2
    assert report["config"]["train.steps"] == 61
    assert np.isfinite(report["final_train_loss"]) and np.isfinite(report["final_val_loss"])
