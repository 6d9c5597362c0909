"""Recommendations per network: the statistics on planted trials, and one real study end to end.

Planted groups: steps to target drawn per seed around a group mean with a spread of 3 steps, so a
20-step gap is about 7 spreads (the bootstrap must call it) and two draws of one distribution
must not be told apart.
"""

import json
import math

import numpy as np
import optuna
import pytest
from conftest import TINY, run_cli

from pipeline.search.study import SEED_STEPS_ATTR, make_storage
from pipeline.tracking import recommend
from pipeline.tracking.recommend import Trial, recommend_cell

CELL = (("model.kind", "mlp"), ("model.activation", "relu"), ("model.depth", 8))


def planted(init: str, mean: float, trials: int, seeds: int = 3, seed: int = 0, **kw) -> list:
    """``trials`` trials of group ``init`` whose seeds take ``mean`` +- 3 steps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(trials):
        steps = tuple(float(v) for v in np.round(mean + 3 * rng.standard_normal(seeds)))
        fields = {
            "gain": 1.0 + 0.1 * i,
            "learning_rate": 0.1,
            "steps": 300,
            "sigma_w2": None,
            "sigma_b2": None,
            "activation": "relu",
            "negative_slope": 0.01,
            "objective": float(np.median(steps)),
            **kw,
        }
        out.append(Trial(init, seed_steps=steps, **fields))
    return out


def test_a_clearly_faster_initializer_is_significant():
    row = recommend_cell(CELL, planted("he", 20, 6) + planted("glorot", 40, 6, seed=1), "x")
    assert row["enough_evidence"] and row["significant"]
    assert row["recommended"] == {"init": "he", "gain": [1.0, 1.5]}
    assert row["runner_up"]["init"] == "glorot"
    ci = row["ci"]
    assert ci["level"] == 0.95 and 0 < ci["low"] <= 20 <= ci["high"] < 30
    assert row["steps_to_target"] == pytest.approx(20, abs=2)


def test_two_identical_initializers_are_not_told_apart():
    trials = planted("he", 30, 6, seed=2) + planted("lecun", 30, 6, seed=3)
    row = recommend_cell(CELL, trials, "x")
    assert row["enough_evidence"] and not row["significant"]
    assert row["ci"]["low"] <= 0 <= row["ci"]["high"]
    assert "within noise" in row["note"] or "equally fast" in row["note"]


def test_one_trial_is_not_enough_evidence():
    row = recommend_cell(CELL, planted("he", 10, 1) + planted("glorot", 40, 5, seed=1), "x")
    assert row["leader"] == "he" and not row["enough_evidence"]
    assert row["recommended"] is None and row["ci"] is None and not row["significant"]
    assert "run 2 more of he" in row["note"]
    alone = recommend_cell(CELL, planted("he", 10, 5), "x")
    assert not alone["enough_evidence"] and alone["runner_up"] is None


def test_bootstrap_is_reproducible_and_narrows_with_more_trials():
    few = planted("he", 20, 4) + planted("glorot", 26, 4, seed=1)
    many = planted("he", 20, 16) + planted("glorot", 26, 16, seed=1)
    assert recommend_cell(CELL, few, "x")["ci"] == recommend_cell(CELL, few, "x")["ci"]
    width = [recommend_cell(CELL, t, "x")["ci"] for t in (few, many)]
    assert width[1]["high"] - width[1]["low"] < width[0]["high"] - width[0]["low"]


def test_more_trials_rule():
    # half-width 10 at 4 trials, difference 5: (10/5)^2 = 4x the trials, 12 more
    assert recommend.more_trials(4, 10.0, 5.0) == 12
    assert recommend.more_trials(4, 10.0, 0.0) is None


def test_baseline_measured_and_not():
    trials = planted("he", 20, 5) + planted("torch_default", 50, 5, seed=1)
    base = recommend_cell(CELL, trials, "torch_default")["baseline"]
    assert base["name"] == "torch_default"
    assert base["steps_to_target"] == pytest.approx(50, abs=3)
    assert base["speedup"] == pytest.approx(base["steps_to_target"] / 20, rel=0.15)
    missing = recommend_cell(CELL, trials, "flax_default")["baseline"]
    assert missing["steps_to_target"] is None and "space.init.weights" in missing["note"]


def test_theory_gain_is_the_edge_of_chaos():
    # ReLU without bias: chi1 = sigma_w2 / 2 (He et al. 2015), so He's gain 1 is critical;
    # a best trial at gain 1.5 (sigma_w2 = 2 * 1.5^2) still points back to gain 1.
    he = planted("he", 20, 3, sigma_w2=2 * 1.5**2, sigma_b2=0.0, gain=1.5)
    row = recommend_cell(CELL, he + planted("glorot", 40, 3, seed=1), "x")
    assert row["theory_sigma_w2"] == pytest.approx(2.0, rel=1e-3)
    assert row["theory_gain"] == pytest.approx(1.0, rel=1e-3)


def test_best_at_own_and_at_shared_learning_rate():
    """Glorot at its own larger learning rate beats He at He's best; at the one bin both were
    measured in, He wins: the row says both, with the bins' spans."""
    he = planted("he", 30, 3, learning_rate=0.05) + planted("he", 80, 3, seed=1, learning_rate=0.5)
    glorot = planted("glorot", 60, 3, seed=2, learning_rate=0.05) + planted(
        "glorot", 20, 3, seed=3, learning_rate=0.5
    )
    glorot += planted("glorot", 25, 3, seed=4, learning_rate=2.0)  # a bin He never visited
    view = recommend_cell(CELL, he + glorot, "x")["learning_rates"]
    assert view["own"]["init"] == "glorot"
    assert view["own"]["learning_rate"] == pytest.approx([10**-0.5, 1.0])
    assert view["own"]["steps_to_target"] == pytest.approx(20, abs=3)
    shared = view["shared"]  # the 0.05 bin (He 30 + Glorot 60) beats the 0.5 bin (80 + 20)
    assert shared["learning_rate"] == pytest.approx([10**-1.5, 0.1])
    assert shared["init"] == "he" and set(shared["by_init"]) == {"he", "glorot"}
    assert shared["by_init"]["glorot"] == pytest.approx(60, abs=3)
    cells = recommend.row_cells(recommend_cell(CELL, he + glorot, "x"))
    assert "shared @0.0316-0.1: he" in cells[recommend.COLUMNS.index("best at own / shared LR")]


def test_framework_defaults_keep_their_names():
    assert recommend.group_name("he_uniform") == "he"
    for name in ("torch_default", "flax_default", "keras_default"):
        assert recommend.group_name(name) == name


@pytest.mark.slow
def test_recommend_end_to_end(tmp_path):
    """A real study of 2 networks x 3 initializers; `recommend --json` against its storage."""
    args = [
        *TINY,
        "space.model.depth=[1, 2]",
        "space.model.activation=[relu]",
        "space.init.weights=[he_normal, torch_default, zeros]",
        "space.init.gain=[1.0]",
        "space.train.learning_rate=[0.2]",
        "init.bias=auto",
        "study.sampler=grid",
        "study.batch_size=6",
        "study.n_trials=6",
        "train.seeds=3",
        "train.learning_rate=0.2",
        "train.target_loss=2.0",
        "study.name=rec",
        "tracking.enabled=false",
    ]
    out = run_cli(tmp_path, "sweep", *args)
    assert "which initialization, per network" in out.stdout + out.stderr
    out = run_cli(
        tmp_path, "recommend", "study.name=rec", "report.baseline=torch_default", "--json"
    )
    rows = json.loads(out.stdout)
    assert [r["network"]["model.depth"] for r in rows] == [1, 2]
    study = optuna.load_study(
        study_name="rec", storage=make_storage(str(tmp_path / "runs" / "optuna.journal"))
    )
    from pipeline.tracking.html_report import _recommendation_section

    page = "".join(_recommendation_section(study, "torch_default"))
    assert "Which initialization per network" in page and "mlp·relu·d1" in page
    for row in rows:
        fields = {"network", "recommended", "steps_to_target", "ci", "runner_up", "significant"}
        assert fields | {"baseline", "enough_evidence", "learning_rate", "theory_gain"} <= set(row)
        assert not row["enough_evidence"]  # one trial per initializer and network
        assert row["leader"] != "constant"  # zeros never trains (every unit the same)
        assert row["learning_rate"] == [0.2, 0.2]
        # the pooled median recomputed from the per-seed values the sweep stored
        depth = row["network"]["model.depth"]
        weights = {"he": "he_normal"}.get(row["leader"], row["leader"])
        seeds = [
            min(v, 61)  # never: train.steps + 1
            for t in study.trials
            if t.params["model.depth"] == depth and t.params["init.weights"] == weights
            for v in t.user_attrs[SEED_STEPS_ATTR]
        ]
        assert len(seeds) == 3
        assert row["steps_to_target"] == pytest.approx(float(np.median(seeds)))
        base = row["baseline"]
        assert base["name"] == "torch_default" and base["steps_to_target"] is not None
        if row["leader"] == "he":
            assert math.isclose(base["speedup"], base["steps_to_target"] / row["steps_to_target"])


# --- Arms: the init choice that varied (a residual study fixes the initializer) ---------------

# Planted medians per (model.norm, init.residual): without a norm the unscaled stream explodes
# (never: train.steps + 1) and Fixup wins; with pre-norm the plain residual wins. One initializer
# throughout, so only the residual rule can decide.
RESIDUAL_SPEED = {
    ("none", "none"): 61,
    ("none", "fixup"): 20,
    ("none", "rezero"): 35,
    ("pre", "none"): 15,
    ("pre", "fixup"): 30,
    ("pre", "rezero"): 32,
}


def residual_study() -> optuna.Study:
    """An in-memory study of a residual MLP (depth 16, he_normal fixed) with ``RESIDUAL_SPEED``
    planted as 4 trials of 3 seeds per (norm, rule), and a depth-4 network where only the plain
    rule was measured."""
    from optuna.distributions import CategoricalDistribution

    from pipeline.config import TrialSpec, load_config

    base = TrialSpec.of_config(
        load_config([*TINY, "model.kind=resmlp", "init.weights=he_normal", "train.steps=60"])
    )
    space = {"model.norm": ("none", "pre"), "init.residual": ("none", "fixup", "rezero")}
    space["model.depth"] = (4, 16)
    distributions = {k: CategoricalDistribution(v) for k, v in space.items()}
    study = optuna.create_study(study_name="residual")
    rng = np.random.default_rng(0)
    cells = [(16, norm, rule) for norm, rule in RESIDUAL_SPEED] + [(4, "none", "none")]
    for depth, norm, rule in cells:
        for _ in range(4):
            params = {"model.norm": norm, "init.residual": rule, "model.depth": depth}
            mean = RESIDUAL_SPEED[norm, rule] if depth == 16 else 25
            seeds = [float(min(61, v)) for v in np.round(mean + 3 * rng.standard_normal(3))]
            median = float(np.median(seeds))
            metrics = {"steps_to_target": median, "objective": median}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=distributions,
                    value=median,
                    user_attrs={
                        "spec": base.with_values(params).flat(),
                        "metrics": metrics,
                        SEED_STEPS_ATTR: seeds,
                    },
                )
            )
    return study


def test_the_residual_rule_is_the_arm_where_the_initializer_is_fixed():
    rows = {
        recommend.network_label(r["network"]): r
        for r in recommend.recommendations(residual_study())
    }
    # model.norm varies, so it names the network; the rule is the arm.
    assert set(rows) == {
        "resmlp·relu·d4·norm=none",
        "resmlp·relu·d16·norm=none",
        "resmlp·relu·d16·norm=pre",
    }
    plain, pre = rows["resmlp·relu·d16·norm=none"], rows["resmlp·relu·d16·norm=pre"]
    for row, winner, runner in ((plain, "fixup", "rezero"), (pre, "none", "fixup")):
        assert row["arm_keys"] == ["init.weights", "init.residual"]
        assert row["leader"] == f"he·residual={winner}" and row["significant"]
        assert row["leader_arm"] == {"init.weights": "he", "init.residual": winner}
        assert row["recommended"]["init"] == row["leader"]
        assert row["runner_up"]["arm"] == {"init.weights": "he", "init.residual": runner}
        assert row["baseline"]["steps_to_target"] is None  # torch_default never ran
    assert plain["steps_to_target"] == pytest.approx(20, abs=3)
    assert pre["ci"]["low"] > 0 and pre["ci"]["high"] < 30  # fixup (30) - none (15)
    # Pooling the rules as before would have called one initializer and nothing to compare.
    alone = rows["resmlp·relu·d4·norm=none"]
    assert alone["arm_keys"] == ["init.weights"] and alone["leader"] == "he"
    assert alone["runner_up"] is None and not alone["enough_evidence"]
    assert "only one initializer measured here" in alone["note"]
    cells = recommend.row_cells(plain)
    assert cells[1].startswith("he·residual=fixup g ") and "he·residual=rezero" in cells[3]


def test_the_baseline_is_the_framework_default_at_the_default_rule():
    none = [
        t._replace(choices=(("init.residual", "none"),)) for t in planted("torch_default", 50, 4)
    ]
    fixup = [
        t._replace(choices=(("init.residual", "fixup"),))
        for t in planted("torch_default", 20, 4, seed=1)
    ]
    row = recommend_cell(CELL, none + fixup, "torch_default")
    assert row["leader"] == "torch_default·residual=fixup"
    assert row["baseline"]["steps_to_target"] == pytest.approx(50, abs=3)  # residual=none's
    only_fixup = recommend_cell(CELL, fixup + planted("he", 30, 4, seed=2), "torch_default")
    assert only_fixup["baseline"]["steps_to_target"] is not None  # the rule did not vary here
