"""One trial, one stored spec: what trained is what `best`, the report, `train --config` and
MLflow say, for every preset; fixed space values and resumed studies keep their history."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import optuna
import pytest
import yaml
from conftest import TINY, run_main
from mlflow.tracking import MlflowClient

from pipeline.config import (
    CONF_DIR,
    RUN_KEYS,
    SCHEMA,
    SPEC_ATTR,
    ConfigError,
    TrialSpec,
    experiments,
    load_config,
    markdown_table,
)
from pipeline.search.study import make_storage, ranked_trials, trial_spec
from pipeline.tracking.tracker import param_text

# Every preset, shrunk to two short trials of narrow networks; its own keys stay as they are.
SHRINK = [
    "study.n_trials=2",
    "study.batch_size=2",
    "train.steps=20",
    "train.eval_every_steps=20",
    "train.seeds=1",
    "model.width=16",
]


def _study(tmp, name: str) -> optuna.Study:
    storage = make_storage(str(tmp / "runs" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def _train_json(tmp, *args) -> dict:
    out = run_main(tmp, "train", *args, "--json")
    return json.loads(out.stdout[out.stdout.index("{") :])


def _smallest(preset: str | None) -> list[str]:
    """A preset that searches depth or width keeps only its smallest: which keys survive into
    `best` and `train` depends on neither, and a 256-block or 1024-wide stack costs a compile
    (and minutes) of its own."""
    if preset is None:
        return []
    conf = yaml.safe_load((CONF_DIR / "experiment" / f"{preset}.yaml").read_text())
    model = (conf.get("space") or {}).get("model") or {}
    return [
        f"space.model.{k}=[{min(model[k])}]"
        for k in ("depth", "width")
        if isinstance(model.get(k), list)
    ]


# The round trip below runs on the default study and one preset per path the engine takes
# (tanh with a bias variance; a residual MLP; Adam with warmup and post-norm; the transformer;
# muP and depth-muP): which keys survive into `best` and `train` depends on those, not on a
# preset's values, and CI's 30 minutes do not hold a sweep per preset. Every preset is loaded
# and validated below, and `recommend` answers on each of these studies.
ROUND_TRIP = (
    None,
    "edge_of_chaos",
    "residual_without_norm",
    "preln_vs_postln",
    "attention_logit_scale",
    "init_transfer",
)


# your_model reads a file of examples/: test_custom_model runs it from its own folder.
@pytest.mark.parametrize("preset", [e for e in experiments() if e != "your_model"])
def test_every_preset_loads_validates_and_keeps_its_own_keys(preset):
    conf = yaml.safe_load((CONF_DIR / "experiment" / f"{preset}.yaml").read_text())
    cfg = load_config([], experiment=preset)
    for section in ("model", "init", "train", "study"):
        for k, v in (conf.get(section) or {}).items():
            if not isinstance(v, dict | list):
                assert cfg[section][k] == v, f"{preset}: {section}.{k}"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ROUND_TRIP)
def test_a_best_config_retrains_to_its_stored_metrics_and_mlflow_holds_its_whole_spec(
    tmp_path, preset
):
    name = f"spec_{preset or 'default'}"
    preset_args = ["--experiment", preset, *_smallest(preset)] if preset else []
    run_main(tmp_path, "sweep", *preset_args, *SHRINK, f"study.name={name}")
    best_path = tmp_path / "best.yaml"
    run_main(tmp_path, "best", f"study.name={name}", "--out", str(best_path))
    # `recommend --json` answers on every preset's study: one row per network it covers.
    out = run_main(tmp_path, "recommend", f"study.name={name}", "--json")
    networks = json.loads(out.stdout)["networks"]
    fields = {"network", "keys", "recommended", "summary", "baseline", "arms"}
    assert networks and all(fields <= n.keys() for n in networks)

    study = _study(tmp_path, name)
    top = ranked_trials(study)[0]
    stored = top.user_attrs[SPEC_ATTR]
    assert sorted(stored) == sorted(RUN_KEYS)  # the whole spec, every run key
    entries = yaml.safe_load(best_path.read_text())["configs"]
    # the recommended arms come first (make best exports the answer); the top trial follows
    entry = next(e for e in entries if e["provenance"]["trial"] == top.number)
    written = {f"{s}.{k}": v for s in ("data", "model", "init", "train", "metrics")
               for k, v in entry[s].items() if k != "gain_value"}  # fmt: skip
    assert written == stored

    # `train --config` retrains exactly that trial: the same numbers as the sweep stored.
    report = _train_json(tmp_path, "--config", str(best_path), "--rank", str(entry["rank"]))
    assert report["config"] == stored
    metrics = top.user_attrs["metrics"]
    for key in ("steps_to_target", "explosion_count", "vanishing_count", "diverged"):
        assert report[key] == metrics[key], key
    for key in ("final_train_loss", "final_val_loss", "initial_train_loss"):
        assert math.isclose(report[key], metrics[key], rel_tol=1e-5, abs_tol=1e-6), key

    # The MLflow child run's params are the spec, every key.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    [child] = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.trial_number = '{top.number}'"
    )
    assert child.data.params == {k: param_text(v) for k, v in stored.items()}


@pytest.mark.slow
def test_a_value_the_space_fixes_survives_into_best_report_and_train(tmp_path):
    # The base says depth 2; the space fixes depth 4 (a scalar: no Optuna parameter).
    args = [*TINY, "model.depth=2", "space.model.depth=4", "study.n_trials=2", "study.name=fx"]
    run_main(tmp_path, "sweep", *args)  # tracking.figures=off (the tests' base)
    figures = tmp_path / "runs" / "fx"
    assert not list(figures.glob("*.png")) and not (figures / "figures.pending").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [parent] = client.search_runs(
        [client.get_experiment_by_name("fx").experiment_id], filter_string="tags.role = 'sweep'"
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "config.yaml" in artifacts and "plots" not in artifacts
    study = _study(tmp_path, "fx")
    assert all("model.depth" not in t.params for t in study.trials)
    assert {trial_spec(study, t).model.depth for t in study.trials} == {4}

    best_path = tmp_path / "best.yaml"
    out = run_main(tmp_path, "best", "study.name=fx", "--out", str(best_path))
    entries = yaml.safe_load(best_path.read_text())["configs"]
    assert {e["model"]["depth"] for e in entries} == {4}  # the answer's entries and the top 2
    depth_column = [row.split("│")[7].strip() for row in out.stderr.splitlines() if "│" in row]
    assert depth_column == ["4", "4"], out.stderr
    assert _train_json(tmp_path, "--config", str(best_path))["config"]["model.depth"] == 4

    run_main(tmp_path, "report", "study.name=fx")
    assert list(figures.glob("*.png"))  # the report draws them
    page = (tmp_path / "runs" / "fx" / "report.html").read_text()
    trials = page[page.index('id="best-table"') :]  # the single trials, after the answer
    header, *rows = re.findall(r"<tr>(.*?)</tr>", trials)[:3]
    column = re.findall(r"<th>(.*?)</th>", header).index("depth")
    assert [re.findall(r"<td[^>]*>(.*?)</td>", r)[column] for r in rows] == ["4", "4"]


@pytest.mark.slow
def test_best_reads_each_trials_own_steps_not_the_default_config(tmp_path):
    # 40 steps and a target no trial reaches: each is "never", not "41 steps" (it was printed
    # as a number because `best` compared against the default train.steps=300).
    args = [*TINY, "train.steps=40", "train.target_loss=0.001", "study.n_trials=2", "study.name=q"]
    run_main(tmp_path, "sweep", *args, "tracking.enabled=false")
    out = run_main(tmp_path, "best", "study.name=q", "tracking.enabled=false")
    rows = [row.split("│") for row in out.stderr.splitlines() if "│" in row]
    assert [r[3].strip() for r in rows] == ["never", "never"], out.stderr
    assert "41" not in "".join(r[3] for r in rows)


@pytest.mark.slow
def test_a_resumed_study_never_rewrites_what_earlier_trials_were(tmp_path):
    args = [*TINY, "study.name=r", "tracking.enabled=false", "study.batch_size=2"]
    run_main(tmp_path, "sweep", *args, "study.n_trials=2", "train.steps=40")
    # Another training budget is another question: refused, nothing written.
    out = run_main(tmp_path, "sweep", *args, "study.n_trials=4", "train.steps=60", check=False)
    assert out.returncode == 2 and "train.steps (40 -> 60)" in out.stderr
    assert len(_study(tmp_path, "r").trials) == 2
    # --resume continues the study as it was asked: its later trials train 40 steps too.
    run_main(tmp_path, "sweep", *args, "study.n_trials=4", "train.steps=60", "--resume")
    study = _study(tmp_path, "r")
    steps = [trial_spec(study, t).train.steps for t in sorted(study.trials, key=lambda t: t.number)]
    assert steps == [40, 40, 40, 40]
    best_path = tmp_path / "best.yaml"
    run_main(
        tmp_path,
        "best",
        "study.name=r",
        "tracking.enabled=false",
        "--out",
        str(best_path),
        "--top",
        "4",
    )
    entries = yaml.safe_load(best_path.read_text())["configs"]
    by_trial = {e["provenance"]["trial"]: e["train"]["steps"] for e in entries}
    assert by_trial == {0: 40, 1: 40, 2: 40, 3: 40}


def test_a_spec_is_whole_valid_and_read_only():
    spec = TrialSpec.of_config(load_config(["model.depth=16", "init.gain=auto"]))
    assert spec.model.depth == spec["model.depth"] == 16 and spec.init.gain == "auto"
    assert TrialSpec.from_flat(spec.flat()) == spec
    with pytest.raises(AttributeError):
        spec.model.depth = 3  # frozen
    with pytest.raises(ConfigError, match="needs 'train.steps'"):
        TrialSpec.from_flat({k: v for k, v in spec.flat().items() if k != "train.steps"})
    with pytest.raises(ConfigError, match="model.depth=0 .* from 1 to"):
        spec.with_values({"model.depth": 0})
    with pytest.raises(ConfigError, match="unknown trial key 'study.name'"):
        TrialSpec.from_flat({**spec.flat(), "study.name": "x"})


def test_keys_and_the_docs_table_come_from_the_schema():
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    start, end = "<!-- keys: start -->\n", "\n<!-- keys: end -->"
    assert page[page.index(start) + len(start) : page.index(end)] == markdown_table()
    # Every key of the table is one the loader accepts, with the schema's default where the
    # default study (conf/config.yaml) does not set its own.
    from pipeline.config.load import CONF_DIR, _flatten, read_yaml

    study = read_yaml(CONF_DIR / "config.yaml")
    study_keys = set(_flatten({k: v for k, v in study.items() if k != "space"}))
    assert {"train.seeds", "data.name"} <= study_keys
    cfg = load_config()
    for key, info in SCHEMA.items():
        if key in study_keys:
            continue
        value = cfg
        for part in key.split("."):
            value = value[part]
        assert (list(value) if isinstance(info.default, list) else value) == info.default, key


def test_a_traced_number_is_one_schema_entry():
    # What adding a per-row number costs: its schema entry marks it `row`, the engine hands it to
    # the core as hp.values[<key>] with no other edit. Shown with a key that exists already.
    from pipeline.config import ROW_KEYS
    from pipeline.core.model import Structure
    from pipeline.engine import row_hparams

    spec = TrialSpec.of_config(load_config(["train.learning_rate=0.125"]))
    from pipeline.core.net import builtin_net

    structure = Structure("relu", 8, 64, 32, 10)
    hp = row_hparams(spec, builtin_net(structure).layout, structure, ("normal",), 0)
    assert set(hp.values) == set(ROW_KEYS)
    assert hp.values["train.learning_rate"] == np.float32(0.125)
