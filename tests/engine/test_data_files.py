"""Your own data: ``data.name=npz data.path=<file>``, checked, hashed, recorded, trained."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import optuna
import pytest
import yaml
from conftest import run_main, train_trials
from sklearn.datasets import load_digits, load_iris

from pipeline.cli import main
from pipeline.config import SPEC_ATTR, load_config
from pipeline.core.data import digits, split
from pipeline.engine.datasets import load_dataset, sha256
from pipeline.engine.preflight import preflight
from pipeline.search.study import make_storage

SMALL = [
    "model.width=16",
    "train.steps=60",
    "train.eval_every_steps=20",
    "train.batch_size=32",
    "train.seeds=1",
]


def checked(overrides):
    """What a command runs on: the config loaded, then its data pinned and checked."""
    return preflight(load_config(overrides))


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def digits_split(tmp_path):
    """The built-in digits split (val_fraction 0.2, seed 0), raw, as a user would save it."""
    x, y = load_digits(return_X_y=True)
    x_train, y_train, x_val, y_val = split(x, y, 0.2, 0)
    return write(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def test_a_file_of_the_digits_split_is_the_digits_dataset_and_trains_the_same(digits_split):
    cfg = checked([*SMALL, "data.name=npz", f"data.path={digits_split}", "model.depth=2"])
    assert cfg.data.path == str(digits_split.resolve()) and cfg.data.sha256 == sha256(digits_split)
    ours, builtin = load_dataset(cfg.data), digits(0.2, 0)
    for a, b in zip(ours, builtin, strict=True):
        np.testing.assert_array_equal(a, b)  # standardized with the same training statistics
    [mine], _ = train_trials(cfg, {})
    [theirs], _ = train_trials(checked([*SMALL, "data.name=digits", "model.depth=2"]), {})
    assert mine.metrics == theirs.metrics


def test_without_validation_arrays_the_split_is_stratified_and_seeded(tmp_path):
    x, y = load_iris(return_X_y=True)
    path = write(tmp_path / "iris.npz", x_train=x, y_train=y)
    cfg = checked(["data.name=npz", f"data.path={path}", "train.batch_size=32"])
    ds = load_dataset(cfg.data)
    assert (len(ds.y_train), len(ds.y_val), ds.n_features, ds.n_classes) == (120, 30, 4, 3)
    assert np.bincount(ds.y_val).tolist() == [10, 10, 10]  # stratified
    same = ["data.name=npz", f"data.path={path}", "train.batch_size=32"]
    again = load_dataset(checked([*same, "data.seed=0"]).data)
    np.testing.assert_array_equal(ds.x_val, again.x_val)
    other = load_dataset(checked([*same, "data.seed=1"]).data)
    assert not np.array_equal(ds.x_val, other.x_val)


def _run(*args: str, runs) -> tuple[int, list[str], bool]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([*args, f"runs_dir={runs}"])
    lines = [line for line in (err.getvalue() + out.getvalue()).splitlines() if line.strip()]
    return code, lines, runs.exists()


def _bad_files(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    p = tmp_path
    (p / "text.npz").write_text("not a zip")
    np.savez(p / "objects.npz", x_train=np.array([{}] * 40, dtype=object), y_train=y)
    return {
        "no such file": (p / "missing.npz", "no such file"),
        "not npz": (p / "text.npz", "not a NumPy .npz file"),
        "objects": (p / "objects.npz", "holds Python objects"),
        "no y_train": (write(p / "a.npz", x_train=x), "no array 'y_train' (it has: x_train)"),
        "x_val alone": (
            write(p / "b.npz", x_train=x, y_train=y, x_val=x),
            "has x_val but no y_val",
        ),
        "3-D x": (write(p / "c.npz", x_train=x[:, :, None], y_train=y), "x_train must be a 2-D"),
        "float labels": (write(p / "d.npz", x_train=x, y_train=y + 0.5), "integer class labels"),
        "lengths": (write(p / "e.npz", x_train=x, y_train=y[:30]), "40 samples but y_train 30"),
        "features": (
            write(p / "f.npz", x_train=x, y_train=y, x_val=x[:, :2], y_val=y),
            "x_val has 2 features but x_train 3",
        ),
        "nan": (write(p / "g.npz", x_train=np.where(x > 1, np.nan, x), y_train=y), "NaN or Inf"),
        "negative": (write(p / "h.npz", x_train=x, y_train=y - 1), "negative label"),
        "one class": (write(p / "i.npz", x_train=x, y_train=0 * y), "one class only"),
        "thin split": (
            write(p / "j.npz", x_train=x[:6], y_train=np.array([0, 0, 0, 0, 0, 1])),
            "every class on both sides",
        ),
    }


def test_every_bad_file_is_one_line_exit_2_and_nothing_written(tmp_path):
    for case, (path, words) in _bad_files(tmp_path).items():
        runs = tmp_path / f"runs-{case}"
        code, lines, wrote = _run("sweep", "data.name=npz", f"data.path={path}", runs=runs)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, lines)
        assert words in lines[0], (case, lines[0])
        assert not wrote, case


def test_a_pinned_hash_refuses_a_changed_file_and_a_path_needs_npz(tmp_path, digits_split):
    runs = tmp_path / "runs"
    wrong = "0" * 64
    code, lines, wrote = _run(
        "train", "data.name=npz", f"data.path={digits_split}", f"data.sha256={wrong}", runs=runs
    )
    assert code == 2 and "does not match" in lines[0] and sha256(digits_split) in lines[0]
    assert not wrote
    code, lines, _ = _run("train", f"data.path={digits_split}", runs=runs)
    assert code == 2 and lines == [
        "error: data.path is read with data.name=npz only (data.name=digits)"
    ]
    code, lines, _ = _run("train", "data.name=npz", runs=runs)
    assert code == 2 and "needs data.path=" in lines[0]


# --- regression targets and a loader function (data.task, data.loader) ------------------------

LOADERS = """
import numpy as np
from sklearn.datasets import load_diabetes, load_wine

def wine():
    x, y = load_wine(return_X_y=True)
    return {"x_train": x, "y_train": y}

def diabetes(seed):
    x, y = load_diabetes(return_X_y=True)
    return x, y

def two_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    return x, np.stack([x[:, 0] - x[:, 1], 3 * x[:, 2] + 10], 1)

def boom():
    raise RuntimeError("no data today")

def text():
    return "x_train"

def half():
    return {"x_train": np.zeros((10, 2))}
"""


@pytest.fixture
def loaders(tmp_path, monkeypatch):
    """A module of loaders in the current folder, importable as ``my_loaders``."""
    (tmp_path / "my_loaders.py").write_text(LOADERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _first_batch_targets(cfg):
    from pipeline.core.data import batch_schedule

    ds = load_dataset(cfg.data)
    schedule = batch_schedule(len(ds.y_train), cfg.train.batch_size, 1, 1, cfg.train.seed)
    return ds.y_train[schedule[0, 0]]


@pytest.mark.parametrize("standardize", [True, False])
def test_a_regression_trains_on_mean_squared_error_in_the_units_asked(tmp_path, standardize):
    # A zero read-out predicts 0 everywhere, so the first loss is exactly the mean square of the
    # first batch's targets: standardized (about 1) or in the targets' own units (about 3e4).
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    path = write(tmp_path / "diabetes.npz", x_train=x, y_train=y)
    cfg = checked(
        [*SMALL, "data.name=npz", f"data.path={path}", "data.task=regression",
         f"data.standardize_targets={str(standardize).lower()}", "model.depth=1",
         "train.steps=20"]
    )  # fmt: skip
    ds = load_dataset(cfg.data)
    assert ds.regression and ds.n_classes == 1 and ds.y_train.shape == (len(ds.x_train), 1)
    if standardize:
        assert abs(ds.y_train.mean()) < 1e-5 and ds.y_train.std() == pytest.approx(1, rel=1e-4)
    else:
        assert set(ds.y_train[:, 0]) <= set(y.astype(np.float32))  # the scores as given
    zero_readout = {"init.rules": [{"match": "output/kernel", "scale": 0}]}
    zero, plain = train_trials(cfg, zero_readout, {})[0]
    expected = float(np.mean(_first_batch_targets(cfg).astype(np.float64) ** 2))
    assert zero.metrics["initial_train_loss"] == pytest.approx(expected, rel=1e-5)
    assert "final_val_accuracy" not in zero.metrics and "val_accuracy" not in zero.curves
    if standardize:  # a zero read-out is the mean predictor; training explains some variance
        assert plain.metrics["final_val_loss"] < 0.95


def test_a_loader_gives_the_same_data_as_its_file_and_its_arrays_are_hashed(loaders):
    from sklearn.datasets import load_wine

    from pipeline.engine.datasets import arrays_sha256

    x, y = load_wine(return_X_y=True)
    path = write(loaders / "wine.npz", x_train=x, y_train=y)
    common = ["train.batch_size=32", "data.seed=3"]
    by_loader = checked([*common, "data.name=custom", "data.loader=my_loaders:wine"])
    by_file = checked([*common, "data.name=npz", f"data.path={path}"])
    assert by_loader.data.sha256 == arrays_sha256({"x_train": x, "y_train": y})
    for a, b in zip(load_dataset(by_loader.data), load_dataset(by_file.data), strict=True):
        np.testing.assert_array_equal(a, b)
    # A tuple, a loader taking the seed, several regression targets:
    two = checked(
        ["data.name=custom", "data.loader=my_loaders:two_targets", "data.task=regression"]
    )
    ds = load_dataset(two.data)
    assert ds.n_classes == 2 and ds.y_train.shape == (160, 2) and ds.y_val.shape == (40, 2)
    diabetes = checked(
        ["data.name=custom", "data.loader=my_loaders:diabetes", "data.task=regression"]
    )
    assert load_dataset(diabetes.data).n_features == 10


def test_every_bad_loader_or_task_is_one_line_exit_2_and_nothing_written(loaders):
    cases = {
        "no module": (["data.loader=nowhere:wine"], "cannot import 'nowhere'"),
        "no function": (["data.loader=my_loaders:absent"], "has no function 'absent'"),
        "raises": (["data.loader=my_loaders:boom"], "raised RuntimeError: no data today"),
        "not arrays": (["data.loader=my_loaders:text"], "returned str; expected a mapping"),
        "no y_train": (["data.loader=my_loaders:half"], "has no array 'y_train'"),
        "float labels": (
            ["data.loader=my_loaders:diabetes"],
            "integer class labels, got shape (442,) of float64 (real-valued targets: set "
            "data.task=regression)",
        ),
        "no loader": ([], "data.name=custom needs data.loader="),
        "changed": (
            ["data.loader=my_loaders:wine", f"data.sha256={'0' * 64}"],
            "does not match data.loader=my_loaders:wine",
        ),
    }
    for case, (args, words) in cases.items():
        runs = loaders / f"runs-{case}"
        code, lines, wrote = _run("sweep", "data.name=custom", *args, runs=runs)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, lines)
        assert words in lines[0], (case, lines[0])
        assert not wrote, case
    for args, words in (
        (["data.loader=my_loaders:wine"], "data.loader is read with data.name=custom only"),
        (["data.task=regression"], "data.task=regression needs real-valued targets"),
    ):
        code, lines, wrote = _run("train", *args, runs=loaders / "runs")
        assert code == 2 and words in lines[0] and not wrote, lines


def test_a_spec_stored_before_a_key_existed_reads_with_its_default():
    from pipeline.config import TrialSpec

    old = TrialSpec.of_config(load_config([])).flat()
    for key in ("data.task", "data.loader", "data.standardize_targets"):
        del old[key]
    study = optuna.create_study()
    study.enqueue_trial({})
    trial = study.ask()
    trial.set_user_attr(SPEC_ATTR, old)
    study.tell(trial, 1.0)
    from pipeline.search.study import trial_spec

    spec = trial_spec(study, study.trials[0])
    assert (spec.data.task, spec.data.loader, spec.data.standardize_targets) == (
        "classification", None, True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_regression_sweep_through_a_loader_records_it_and_its_best_retrains(loaders):
    args = [
        "data.name=custom", "data.loader=my_loaders:diabetes", "data.task=regression",
        "model.width=16", "train.steps=60", "train.eval_every_steps=20", "train.batch_size=64",
        "train.target_loss=0.8", "study.n_trials=2", "study.name=reg", "tracking.figures=wait",
    ]  # fmt: skip
    run_main(loaders, "sweep", *args)
    study = optuna.load_study(
        study_name="reg", storage=make_storage(str(loaders / "runs" / "optuna.journal"))
    )
    digest = checked(args).data.sha256
    for trial in study.trials:
        spec = trial.user_attrs[SPEC_ATTR]
        assert spec["data.loader"] == "my_loaders:diabetes" and spec["data.sha256"] == digest
        assert spec["data.task"] == "regression"
        assert "final_val_accuracy" not in trial.user_attrs["metrics"]
    best = loaders / "best.yaml"
    run_main(loaders, "best", "study.name=reg", "--out", str(best))
    entry = yaml.safe_load(best.read_text())["configs"][0]
    assert entry["data"]["loader"] == "my_loaders:diabetes" and entry["data"]["sha256"] == digest
    out = run_main(loaders, "train", "--config", str(best), "--json")
    report = json.loads(out.stdout[out.stdout.index("{") :])
    assert report["steps_to_target"] == entry["measured"]["steps_to_target"]
    assert report["final_val_loss"] == pytest.approx(entry["measured"]["final_val_loss"])
