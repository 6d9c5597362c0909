"""The residual presets (docs/residual.md) and their figure, without training: each grid preset
asks for exactly its grid, and the figure draws from stored trials, overflow included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import Space, TrialSpec, load_config
from pipeline.reports.plots import FIGURES, Row, residual_rules

PRESETS = {
    "residual_without_norm": {"init.residual": ["none", "scaled", "fixup", "rezero"]},
    "residual_branch_scale": {"init.residual": ["none", "gpt2", "scaled"]},
    "preln_vs_postln": {"model.norm": ["pre", "post"], "train.warmup_steps": [0, 100]},
}


@pytest.mark.parametrize("name", PRESETS)
def test_each_residual_preset_is_a_full_grid_of_residual_mlps(name):
    cfg = load_config([], name)
    space = Space.parse(cfg.space).entries
    assert cfg.model.kind == "resmlp" and cfg.study.sampler == "grid"
    assert {k: space[k] for k in PRESETS[name]} == PRESETS[name]
    # A grid sampler asked for more trials than the grid has repeats cells; fewer leaves some out.
    assert cfg.study.n_trials == math.prod(len(v) for v in space.values() if isinstance(v, list))
    assert cfg.study.batch_size == cfg.study.n_trials  # one batch: every structure at once


def _row(residual: str, depth: int, measured: float, reached: float) -> Row:
    spec = TrialSpec.of_config(load_config(["model.kind=resmlp"])).with_values(
        {"init.residual": residual, "model.depth": depth}
    )
    metrics = {
        "diag.init.stream_var_ratio": measured,
        "steps_to_target": 40.0 if reached else 301.0,
        "reached_target": reached,
    }
    grads = np.linspace(1.0, 2.0, depth + 2) if residual != "rezero" else np.zeros(depth + 2)
    return Row(spec, metrics, {"init_grad_norm": list(grads), "loss": [2.3, 1.0]})


def test_the_residual_figure_draws_measurement_theory_and_overflow(tmp_path):
    rows = [
        _row("none", 4, 83.0, 1.0),
        _row("none", 256, math.nan, 0.0),  # 3^256 overflows float32: drawn as a cross
        _row("scaled", 4, 5.0, 1.0),
        _row("scaled", 256, 7.0, 1.0),
        _row("rezero", 4, 1.0, 0.0),  # zero gradients at init: left off the log axis
        _row("rezero", 256, 1.0, 0.0),
    ]
    path = residual_rules(rows, "t", tmp_path / "r.png")
    assert path == tmp_path / "r.png" and path.stat().st_size > 10_000
    assert FIGURES["residual_rules.png"] is residual_rules  # every sweep and report draws it
    mlp = TrialSpec.of_config(load_config([]))
    assert residual_rules([Row(mlp, {}, {})], "t", tmp_path / "none.png") is None
