"""One real sweep on tiny data, through the command line, on real embedded stores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optuna
import pytest
import yaml
from conftest import TINY as TINY_TRAIN
from conftest import run_cli
from mlflow.tracking import MlflowClient

import pipeline
from pipeline.config import SPEC_ATTR
from pipeline.core.initializers import expected_std
from pipeline.reports.figures import wait_for_figures
from pipeline.search.study import make_storage
from pipeline.tracking.tracker import param_text

pytestmark = pytest.mark.slow

TINY = [
    *TINY_TRAIN,
    "space.model.depth=[2, 4]",
    "space.model.activation=[relu, tanh]",
    "space.init.weights=[he_normal, glorot_uniform, orthogonal, normal]",
    "study.batch_size=4",
    "study.name=e2e",
    "tracking.figures=background",  # as a user's sweep draws them
]
cli = run_cli


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    first = cli(tmp, "sweep", *TINY, "study.n_trials=6")
    # The figures are drawn by a process of their own after the command returns.
    wait_for_figures(tmp / "runs" / "e2e")
    # Rerunning with a larger budget continues the study instead of starting over.
    second = cli(tmp, "sweep", *TINY, "study.n_trials=9")
    wait_for_figures(tmp / "runs" / "e2e")
    assert "Traceback" not in (tmp / "runs" / "e2e" / "figures.log").read_text()
    return tmp, first, second


def test_sweep_fills_optuna_and_mlflow(swept):
    tmp, first, second = swept
    study = optuna.load_study(
        study_name="e2e", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    states = [t.state for t in study.trials]
    assert len(states) == 9 and all(s == optuna.trial.TrialState.COMPLETE for s in states)
    # each run ends with the answer per network, from every trial finished so far
    assert "which initialization, per network" in first.stderr
    assert "which initialization, per network" in second.stderr

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 9
    # The parent describes the study: the searched space, not base values no trial used.
    params = parents[0].data.params
    assert params["space.model.depth"] == "[2, 4]" and "model.depth" not in params
    assert params["study.name"] == "e2e" and params["train.steps"] == "60"
    assert {r.data.tags["trial_number"] for r in children} == {str(i) for i in range(9)}
    by_number = {t.number: t for t in study.trials}
    for r in children:
        trial = by_number[int(r.data.tags["trial_number"])]
        stored = trial.user_attrs["metrics"]
        # The values the study stored, not only their names (NaN and Inf are left out).
        for metric in (
            "steps_to_target",
            "explosion_count",
            "vanishing_count",
            "final_val_accuracy",
            "final_train_loss",
        ):
            assert r.data.metrics[metric] == pytest.approx(stored[metric], rel=1e-6), metric
        # Its params are the trial's whole spec, every key.
        spec = trial.user_attrs[SPEC_ATTR]
        assert r.data.params == {k: param_text(v) for k, v in spec.items()}
        gain = r.data.params["init.gain"]  # 4 significant digits, not 0.67826091...
        assert len(gain.replace("-", "").replace(".", "").lstrip("0")) <= 5, gain
        assert r.info.status == "FINISHED"
        # Theory's prediction beside what was measured, and the in-call diagnostics.
        for metric in ("theory.chi1", "theory.xi_c", "diag.init.dead_fraction"):
            assert metric in r.data.metrics, metric
        depth = int(r.data.params["model.depth"])
        back = client.get_metric_history(r.info.run_id, "init_backprop_norm")
        assert sorted(m.step for m in back) == list(range(depth))
    run_id = children[0].info.run_id
    table = client.download_artifacts(run_id, "diagnostics/per_layer.csv", str(tmp))
    header = Path(table).read_text().splitlines()[0].split(",")
    assert header[:2] == ["step", "layer"] and "backprop_norm" in header
    boundaries = client.get_metric_history(run_id, "diag.dead_fraction")
    assert sorted(m.step for m in boundaries) == [0, 20, 40, 60]  # init and each chunk end
    curve = client.get_metric_history(children[0].info.run_id, "loss")
    assert len(curve) >= 10 and sorted(m.step for m in curve) == [
        m.step for m in sorted(curve, key=lambda m: m.step)
    ]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)} | {
        a.path for a in client.list_artifacts(parents[1].info.run_id)
    }
    assert "config.yaml" in artifacts and "plots" in artifacts
    plots = {a.path for a in client.list_artifacts(parents[1].info.run_id, "plots")}
    for name in (
        "loss_curves_by_init",
        "depth_x_sigma_w2",
        "layer_gradients_at_init",
        "explosions_vs_gain",
        "theory_vs_measurement",
        "param_importances",
    ):
        assert f"plots/{name}.png" in plots, name


def test_report_is_one_self_contained_page(swept):
    tmp, *_ = swept
    out = cli(tmp, "report", "study.name=e2e")
    page = (tmp / "runs" / "e2e" / "report.html").read_text()
    assert "wrote" in out.stderr and "The answer: which initialization per network" in page
    assert page.index("The answer") < page.index("Single fastest trials")  # answer first
    assert page.count('src="data:image/png;base64,') >= 6  # figures inlined, no other files
    assert "theory chi1" in page  # the trials table, theory beside the measurement


def test_best_writes_a_loadable_config(swept):
    tmp, *_ = swept
    out = cli(tmp, "best", "study.name=e2e", "--top", "3", "--out", str(tmp / "best.yaml"))
    assert "wrote" in out.stderr
    doc = yaml.safe_load((tmp / "best.yaml").read_text())
    # the answer first (a recommended arm per network that has one), then the top 3 trials
    kinds = [c["source"] for c in doc["configs"]]
    assert kinds == sorted(kinds) and kinds.count("top trial") == 3  # recommendation < top
    assert [c["rank"] for c in doc["configs"]] == list(range(len(kinds)))
    answers = len(doc["configs"]) - 3
    tops = doc["configs"][answers:]
    top = tops[0]
    assert top["provenance"]["study"] == "e2e" and top["provenance"]["mlflow_run_id"]
    assert {"steps_to_target", "explosion_count"} <= set(top["measured"])
    # The ranking is the stored objectives' (lower first; ties in trial order), each entry's
    # measured numbers are its trial's, and its config is the trial's stored spec.
    study = optuna.load_study(
        study_name="e2e", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    want = sorted(complete, key=lambda t: (t.value, t.number))[:3]
    assert [c["provenance"]["trial"] for c in tops] == [t.number for t in want]
    for entry, trial in zip(tops, want, strict=True):
        assert entry["measured"]["objective"] == trial.value
        assert (
            entry["measured"]["steps_to_target"] == trial.user_attrs["metrics"]["steps_to_target"]
        )
        assert entry["model"] == {
            k.split(".")[1]: v
            for k, v in trial.user_attrs[SPEC_ATTR].items()
            if k.startswith("model.")
        }

    init = pipeline.load_initializer(tmp / "best.yaml", rank=top["rank"])
    w = np.asarray(init(jax.random.key(0), (512, 512), np.float32))
    params = {k: top["init"][k] for k in ("mode", "std", "limit", "value")}
    want = expected_std(top["init"]["weights"], (512, 512), top["init"]["gain_value"], params)
    assert w.std() == pytest.approx(want, rel=0.03)

    # The best config retrains to the same metrics (same config, same seed, same machine).
    again = json.loads(
        cli(
            tmp, "train", "--config", str(tmp / "best.yaml"), "--rank", str(top["rank"]), "--json"
        ).stdout
    )
    assert again["steps_to_target"] == top["measured"]["steps_to_target"]


def test_train_command_prints_json_with_seeds(tmp_path):
    out = cli(
        tmp_path,
        "train",
        *TINY_TRAIN,
        "model.depth=3",
        "init.weights=he_normal",
        "train.seeds=2",
        "--json",
    )
    report = json.loads(out.stdout)
    assert {"steps_to_target", "explosion_count", "final_train_loss", "final_val_accuracy"} <= set(
        report
    )
    assert len(report["seeds"]) == 2 and len(report["layer_grad_norm_init"]) == 4


def test_sharded_over_two_devices_equals_one_device(tmp_path):
    args = [*TINY_TRAIN, "model.depth=3", "train.seeds=3", "init.weights=orthogonal", "--json"]
    one = json.loads(cli(tmp_path, "train", *args, "engine.cpu_devices=1").stdout)
    two = json.loads(cli(tmp_path, "train", *args, "engine.cpu_devices=2").stdout)
    # Also through XLA's own flag, the way a user would simulate several devices.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    three = json.loads(run_cli(tmp_path, "train", *args, env=env, runs="runs3").stdout)
    for key in ("steps_to_target", "explosion_count", "final_train_loss", "final_val_accuracy"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
        assert three[key] == pytest.approx(one[key], rel=1e-4), key


def test_pruned_and_multi_objective_studies_finish_every_trial(tmp_path):
    for extra in (
        ["study.pruner=median", "study.name=pruned"],
        ["study.objectives=[steps_to_target, explosion_count]", "study.name=pareto"],
    ):
        cli(tmp_path, "sweep", *TINY[:-1], *extra, "study.n_trials=12", "tracking.enabled=false")
    storage = make_storage(str(tmp_path / "runs" / "optuna.journal"))
    for name in ("pruned", "pareto"):
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert len(trials) == 12
        assert all(
            t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            for t in trials
        )
        # Intermediate values are stored only where a pruner reads them: one per chunk.
        reported = [len(t.intermediate_values) for t in trials]
        assert all(n >= 1 for n in reported) if name == "pruned" else not any(reported), reported


def test_interrupted_sweep_leaves_no_running_trial_and_resumes(tmp_path):
    import signal
    import time

    args = [*TINY, "study.name=sig", "study.n_trials=24", f"runs_dir={tmp_path / 'runs'}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sweep", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / "runs" / "optuna.journal"
    deadline = time.time() + 300
    while time.time() < deadline and (
        not journal.exists() or b'"state":1' not in journal.read_bytes()
    ):
        time.sleep(0.5)  # wait until at least one trial has completed
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    study = optuna.load_study(study_name="sig", storage=make_storage(str(journal)))
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sig")
    [parent] = client.search_runs([exp.experiment_id], filter_string="tags.role = 'sweep'")
    assert parent.info.status == "KILLED"
    # Every result trained before the interrupt was told and logged (the recorder drained).
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    told = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert told
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == sorted(told)

    cli(tmp_path, "sweep", *TINY, "study.name=sig", "study.n_trials=24", "tracking.enabled=false")
    study = optuna.load_study(study_name="sig", storage=make_storage(str(journal)))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 24
