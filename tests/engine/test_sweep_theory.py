"""Theory's prediction is stored on each trial a sweep runs with diagnostics (the ``theory``
user attribute), equal to ``predict.trial_prediction`` of the trial's spec, in JSON an Optuna
journal keeps (an infinite depth scale included), and the reports read it back; a sweep without
diagnostics stores none, so the reports compute it as for a study written before."""

import json
import math

from conftest import SMALL_SWEEP

from pipeline.config import load_config
from pipeline.core.predict import trial_prediction
from pipeline.reports import plots
from pipeline.search.study import THEORY_ATTR, trial_spec, trial_theory
from pipeline.search.sweep import run_sweep

# ReLU at its recommended gain (He, or orthogonal at sqrt 2) is exactly at the edge of chaos,
# sigma_w2 = 2: xi_c and the trainable depth are infinite.
SWEEP = [
    *SMALL_SWEEP,
    "space.model.activation=[relu]",
    "space.init.gain=[auto]",
    "tracking.enabled=false",
    "study.n_trials=4",
]


def _sweep(tmp_path, *overrides: str):
    cfg = load_config([*SWEEP, f"runs_dir={tmp_path}", *overrides])
    return run_sweep(cfg).study


def test_each_trial_stores_theorys_prediction_and_the_reports_read_it(tmp_path):
    study = _sweep(tmp_path)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        stored = t.user_attrs[THEORY_ATTR]
        json.dumps(stored, allow_nan=False)  # strict JSON: no Infinity or NaN literals
        expected = trial_prediction(trial_spec(study, t))
        assert expected and trial_theory(t) == expected
        assert {k for k, v in stored.items() if isinstance(v, str)} == {
            k for k, v in expected.items() if not math.isfinite(v)
        }
        assert stored["theory.xi_c"] == "inf" and trial_theory(t)["theory.xi_c"] == math.inf
    rows = plots.study_rows(study)
    assert [r.theory for r in rows] == [trial_theory(t) for t in trials]
    assert [plots.prediction(r) for r in rows] == [r.theory for r in rows]


def test_a_sweep_without_diagnostics_stores_no_prediction(tmp_path):
    study = _sweep(tmp_path, "metrics.diagnostics=false", "study.n_trials=2")
    trials = study.get_trials(deepcopy=False)
    assert trials and all(THEORY_ATTR not in t.user_attrs for t in trials)
    for row in plots.study_rows(study):  # the reports compute it, as they always did
        assert row.theory is None
        assert plots.prediction(row) == trial_prediction(row.config) != {}
