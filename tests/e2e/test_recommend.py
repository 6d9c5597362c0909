"""The answer per network (``pipeline.reports.recommend``): planted studies with known answers
written into an Optuna study, the ``recommend --json`` contract, the 80-column terminal answer,
and one real grid study end to end (extension, refusal of a changed question, resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import TINY, add_planted_trial, run_main

from pipeline.config import Space, TrialSpec, load_config
from pipeline.reports.answer_text import WIDTH, answer_text
from pipeline.reports.recommend import recommendations
from pipeline.search.study import (
    QUESTION_ATTR,
    SEED_STEPS_ATTR,
    make_storage,
    question,
)

LRS = [0.01, 0.01778, 0.03162, 0.05623, 0.1, 0.1778, 0.3162]
NEVER = None
BUDGET = 60


def planted_study(
    arms: dict[str, dict],
    overrides: tuple[str, ...] = (),
    network: dict | None = None,
    study: optuna.Study | None = None,
) -> optuna.Study:
    """An in-memory study holding, per arm (a dict of dotted init values, keyed by a name for
    the test), per learning rate, the given per-seed steps (None = never reached within
    ``BUDGET``), as a grid sweep stores them: spec, metrics, seed steps and divergence."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    cfg = load_config(
        [*TINY, f"train.steps={BUDGET}", "train.seeds=3", "init.bias=auto", *overrides]
    )
    base = TrialSpec.of_config(cfg)
    if study is None:
        study = optuna.create_study(study_name="planted")
        space = Space.parse(
            {"init.weights": ["x"], "train.learning_rate": {"low": 0.01, "high": 0.3, "log": True}}
        )
        study.set_user_attr(QUESTION_ATTR, question(cfg, space))
    for values, per_lr in arms.values():
        for lr, seeds in per_lr.items():
            steps = [BUDGET + 1.0 if s is None else float(s) for s in seeds]
            diverged = [int(s == "div") for s in seeds]
            steps = [BUDGET + 1.0 if s == "div" else v for s, v in zip(seeds, steps)]
            spec = base.with_values({**(network or {}), **values, "train.learning_rate": lr})
            params = {"init.weights": spec.init.weights, "train.learning_rate": lr}
            distributions = {
                "init.weights": CategoricalDistribution([spec.init.weights]),
                "train.learning_rate": FloatDistribution(1e-4, 10, log=True),
            }
            add_planted_trial(study, spec, params, distributions, steps, diverged)
    return study


def curve(best: float, at: int = 3, width: int = 2, spread=(0, -2, 2)) -> dict:
    """Per learning rate of ``LRS``: a basin of ``width`` points each side of ``LRS[at]`` where
    the median rises 1.4x per point away from ``best``; never elsewhere."""
    out = {}
    for i, lr in enumerate(LRS):
        d = abs(i - at)
        if d > width:
            out[lr] = [NEVER] * 3
        else:
            out[lr] = [round(best * 1.4**d) + s for s in spread]
    return out


def never() -> dict:
    return {lr: [NEVER] * 3 for lr in LRS}


def answer_of(study, baseline="torch_default") -> dict:
    [network] = recommendations(study, baseline)["networks"]
    return network


def test_a_three_way_tie_is_a_three_arm_recommendation():
    study = planted_study(
        {
            "he": ({"init.weights": "he_normal"}, curve(20)),
            "lecun": ({"init.weights": "lecun_normal"}, curve(20, spread=(1, -1, 2))),
            "glorot": ({"init.weights": "glorot_normal"}, curve(20, spread=(-1, 0, 2))),
            "torch": ({"init.weights": "torch_default"}, curve(40)),
        }
    )
    net = answer_of(study)
    assert sorted(net["recommended"]) == ["glorot_normal", "he_normal", "lecun_normal"]
    assert "tie" in net["summary"] and "torch_default" not in net["recommended"]
    base = net["baseline"]
    assert base["arm"] == "torch_default" and not base["fails"]
    assert base["ratio_own_lr"] == pytest.approx(2.0, rel=0.06)
    arms = {a["arm"]: a for a in net["arms"]}
    assert sum(a["p_best"] for a in arms.values()) == pytest.approx(1.0)
    assert arms["torch_default"]["p_best"] == 0 and arms["torch_default"]["ratio_ci"][0] > 1.5


def test_an_arm_that_never_reaches_fails_with_no_ratio_and_the_sentence_says_so():
    study = planted_study(
        {
            "he": ({"init.weights": "he_normal"}, curve(30, at=2, width=1)),
            "torch": ({"init.weights": "torch_default"}, never()),
            "flax": ({"init.weights": "flax_default"}, never()),
        }
    )
    net = answer_of(study)
    arms = {a["arm"]: a for a in net["arms"]}
    for name in ("torch_default", "flax_default"):
        assert arms[name]["fails"] and arms[name]["ratio_to_best"] is None
        assert arms[name]["steps"] is None and arms[name]["p_best"] is None
    assert net["recommended"] == ["he_normal"]
    assert arms["he_normal"]["basin"] == [0.01778, 0.05623]
    assert net["baseline"]["fails"] and net["baseline"]["ratio_own_lr"] is None
    assert "use he_normal (gain 1) at LR 0.0178–0.0562" in net["summary"]
    assert "no other initializer trained at any LR tried (0.01–0.316)" in net["summary"]
    assert "PyTorch's default included" in net["summary"]


def test_a_censored_baseline_reads_at_least():
    mostly_never = never()
    mostly_never[0.1] = [55, None, None]  # one seed in time, once
    study = planted_study(
        {
            "he": ({"init.weights": "he_normal"}, curve(20)),
            "torch": ({"init.weights": "torch_default"}, mostly_never),
        }
    )
    net = answer_of(study)
    base = net["baseline"]
    assert base["steps_censored"] and base["ratio_own_lr_censored"]
    assert base["ratio_own_lr"] == pytest.approx(61 / 20)
    assert "PyTorch's default takes ≥3× the steps" in net["summary"]
    torch = next(a for a in net["arms"] if a["arm"] == "torch_default")
    assert torch["steps_censored"] and torch["ratio_censored"] and not torch["fails"]
    assert "≥61" in answer_text(recommendations(study)) and "≥3.05" in answer_text(
        recommendations(study)
    )


def test_rescaled_and_rebiased_framework_defaults_are_other_arms_not_the_baseline():
    study = planted_study(
        {
            "scaled": ({"init.weights": "torch_default", "init.gain": 1.5}, curve(20)),
            "zero_bias": ({"init.weights": "torch_default", "init.bias": "zeros"}, curve(25)),
            "he": ({"init.weights": "he_normal"}, curve(30)),
        }
    )
    net = answer_of(study)
    names = {a["arm"] for a in net["arms"]}
    assert names == {"torch_default×1.5", "torch_default·bias=zeros", "he_normal"}
    assert not net["baseline"]["measured"]
    assert any("torch_default was not measured" in n for n in net["notes"])


def test_the_residual_rule_is_the_arm_and_the_norm_names_the_network():
    arms = {}
    speed = {
        ("none", "none"): None,
        ("none", "fixup"): 20,
        ("pre", "none"): 15,
        ("pre", "fixup"): 30,
    }
    study = None
    for (norm, rule), best in speed.items():
        planted = never() if best is None else curve(best)
        study = planted_study(
            {"a": ({"init.residual": rule}, planted)},
            ("model.kind=resmlp", "init.weights=he_normal"),
            {"model.norm": norm},
            study,
        )
        arms[norm, rule] = planted
    networks = {n["network"]: n for n in recommendations(study)["networks"]}
    assert set(networks) == {"resmlp·relu·d8·norm=none", "resmlp·relu·d8·norm=pre"}
    plain, pre = networks["resmlp·relu·d8·norm=none"], networks["resmlp·relu·d8·norm=pre"]
    assert plain["recommended"] == ["he_normal·residual=fixup"]
    assert pre["recommended"] == ["he_normal·residual=none"]
    assert next(a for a in plain["arms"] if a["arm"] == "he_normal·residual=none")["fails"]


CONTRACT_ARM = {
    "arm": str,
    "weights": str,
    "gain": (float, type(None)),
    "sigma_w2_over_critical": (float, type(None)),
    "lrs_tried": list,
    "best_lr": (float, type(None)),
    "best_lr_at_edge": bool,
    "steps": (float, type(None)),
    "steps_ci": (list, type(None)),
    "steps_censored": bool,
    "ratio_to_best": (float, type(None)),
    "ratio_ci": (list, type(None)),
    "p_best": (float, type(None)),
    "basin": (list, type(None)),
    "basin_decades": (float, type(None)),
    "within_1_5x": (list, type(None)),
    "divergence_lr": (float, type(None)),
    "fails": bool,
}
CONTRACT_BASELINE = ("arm", "ratio_own_lr", "ratio_own_lr_ci", "ratio_at_recommended_lr", "fails")


def check_contract(document: dict) -> None:
    """The ``recommend --json`` contract of docs/recommendations.md."""
    assert isinstance(document["networks"], list) and document["networks"]
    for net in document["networks"]:
        assert isinstance(net["network"], str) and isinstance(net["keys"], dict)
        assert isinstance(net["recommended"], list) and isinstance(net["summary"], str)
        assert net["summary"].startswith(net["network"] + ":")
        assert set(CONTRACT_BASELINE) <= set(net["baseline"])
        names = [a["arm"] for a in net["arms"]]
        assert set(net["recommended"]) <= set(names)
        for arm in net["arms"]:
            for key, kind in CONTRACT_ARM.items():
                assert isinstance(arm[key], kind), (key, arm[key])
            assert arm["fails"] == (arm["steps"] is None)
            if arm["basin"] is not None:
                assert len(arm["basin"]) == 2 and arm["basin"][0] <= arm["basin"][1]


def test_the_json_follows_the_contract_and_the_terminal_answer_fits_80_columns():
    study = planted_study(
        {
            "he": ({"init.weights": "he_normal"}, curve(20)),
            "long": ({"init.weights": "keras_default", "init.bias": "torch_default"}, curve(21)),
            "torch": ({"init.weights": "torch_default"}, never()),
        }
    )
    document = json.loads(json.dumps(recommendations(study)))
    check_contract(document)
    text = answer_text(document)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    words = set(text.split())
    for net in document["networks"]:  # nothing split inside a token: every name whole
        for arm in net["arms"]:
            assert arm["arm"] in words
            if not arm["fails"]:
                assert f"{arm['best_lr']:.3g}" in text
    assert "keras_default·bias=torch_default" in words  # long: on a line of its own


# --- a real grid study -----------------------------------------------------------------------

GRID = [
    *TINY,
    "train.seeds=3",
    "init.bias=auto",
    "study.design=grid",
    "study.sampler=random",
    "space.init.gain=1.0",
    "study.grid_per_decade=2",
    "study.n_trials=200",
    "study.batch_size=64",
    "space.model.depth=[1]",
    "space.model.activation=[relu]",
    "space.init.weights=[he_normal, torch_default, zeros]",
    "space.train.learning_rate={low: 0.1, high: 1.0, log: true}",
    "train.target_loss=1.5",
    "study.name=grid",
    "tracking.enabled=false",
]


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    out = run_main(tmp, "sweep", *GRID)
    return tmp, out


@pytest.mark.slow
def test_a_grid_study_tunes_every_arm_on_one_grid_and_extends_it(grid_study):
    tmp, out = grid_study
    assert "which initialization, per network" in out.stderr
    document = json.loads(run_main(tmp, "recommend", "study.name=grid", "--json").stdout)
    check_contract(document)
    [net] = document["networks"]
    arms = {a["arm"]: a for a in net["arms"]}
    assert set(arms) == {"he_normal", "torch_default", "zeros"}
    assert arms["zeros"]["fails"]  # every unit the same: never trains
    # the initial grid 0.1, 0.316, 1 is tried by every arm; an open end grew
    for arm in arms.values():
        assert {0.1, 0.3162, 1.0} <= set(arm["lrs_tried"])
    trained = [a for a in arms.values() if not a["fails"]]
    assert trained and net["recommended"]
    assert any(len(a["lrs_tried"]) > 3 for a in arms.values())
    for a in trained:  # the basin is closed on both sides, or the limit was reached
        lo, hi = a["lrs_tried"][0], a["lrs_tried"][-1]
        assert a["basin"] is None or a["basin"][0] > lo or lo <= 1e-4
        assert a["basin"] is None or a["basin"][1] < hi or hi >= 10
    # the stored per-seed results give the JSON's numbers
    study = optuna.load_study(
        study_name="grid", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    lead = arms[net["recommended"][0]]
    [number] = lead["trials_at_best_lr"][:1]
    seeds = study.trials[number].user_attrs[SEED_STEPS_ATTR]
    assert lead["steps"] == pytest.approx(float(np.median(seeds)))
    assert study.trials[number].params["train.learning_rate"] == pytest.approx(lead["best_lr"])


@pytest.mark.slow
def test_a_changed_question_is_refused_and_resume_continues_the_stored_one(grid_study):
    tmp, _ = grid_study

    def snapshot():
        return {
            str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted((tmp / "runs").rglob("*"))
            if "jax_cache" not in p.parts and p.is_file()
        }

    before = snapshot()
    changed = [a for a in GRID if not a.startswith("space.model.depth")]
    out = run_main(tmp, "sweep", *changed, "space.model.depth=[2]", "train.steps=40", check=False)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "space.model.depth" in lines[0] and "train.steps" in lines[0]
    assert "study.name=grid-2" in lines[0] and "--resume" in lines[0]
    assert snapshot() == before  # nothing written
    # --resume: the stored question wins; the grid is complete, so nothing more runs
    out = run_main(tmp, "sweep", *changed, "space.model.depth=[2]", "--resume")
    assert "resuming study 'grid' as it was asked; ignoring" in out.stderr
    assert "space.model.depth ([1] -> [2])" in out.stderr
    assert "mlp·relu·d1" in out.stderr and "mlp·relu·d2" not in out.stderr
    # the same question again resumes without a word
    out = run_main(tmp, "sweep", *GRID)
    assert "asked with other settings" not in out.stderr
    assert "--resume" not in run_main(tmp, "sweep", *GRID).stderr


def test_resume_of_an_unknown_study_is_one_line(tmp_path):
    out = run_main(tmp_path, "sweep", *GRID, "study.name=nosuch", "--resume", check=False)
    assert out.returncode == 2 and "no study 'nosuch'" in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) == 1


@pytest.mark.slow
def test_make_recommend_json_prints_only_json(grid_study):
    tmp, _ = grid_study
    root = Path(__file__).resolve().parents[2]
    stamp = subprocess.run(["make", "-q", ".venv/.installed"], cwd=root)
    if stamp.returncode != 0 or Path(sys.executable).parent != root / ".venv" / "bin":
        pytest.skip("make's venv is not this interpreter's, or it would reinstall")
    # as from a user's shell: not nested in the make that runs the tests
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(
        ["make", "recommend", "STUDY=grid", f"ARGS=--json runs_dir={tmp / 'runs'}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    check_contract(json.loads(out.stdout))
