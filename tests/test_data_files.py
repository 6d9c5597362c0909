"""Your own data: ``data.name=npz data.path=<file>``, checked, hashed, recorded, trained."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import optuna
import pytest
import yaml
from conftest import TINY, run_cli, train_trials
from sklearn.datasets import load_digits, load_iris

from pipeline.cli import main
from pipeline.config import SPEC_ATTR, load_config
from pipeline.core.data import digits, split
from pipeline.engine.datasets import load_dataset, sha256
from pipeline.search.study import make_storage

SMALL = ["model.width=16", "train.steps=60", "train.eval_every_steps=20", "train.batch_size=32"]


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
    cfg = load_config([*SMALL, "data.name=npz", f"data.path={digits_split}", "model.depth=2"])
    assert cfg.data.path == str(digits_split.resolve()) and cfg.data.sha256 == sha256(digits_split)
    ours, builtin = load_dataset(cfg.data), digits(0.2, 0)
    for a, b in zip(ours, builtin, strict=True):
        np.testing.assert_array_equal(a, b)  # standardized with the same training statistics
    [mine], _ = train_trials(cfg, {})
    [theirs], _ = train_trials(load_config([*SMALL, "data.name=digits", "model.depth=2"]), {})
    assert mine.metrics == theirs.metrics


def test_without_validation_arrays_the_split_is_stratified_and_seeded(tmp_path):
    x, y = load_iris(return_X_y=True)
    path = write(tmp_path / "iris.npz", x_train=x, y_train=y)
    cfg = load_config(["data.name=npz", f"data.path={path}", "train.batch_size=32"])
    ds = load_dataset(cfg.data)
    assert (len(ds.y_train), len(ds.y_val), ds.n_features, ds.n_classes) == (120, 30, 4, 3)
    assert np.bincount(ds.y_val).tolist() == [10, 10, 10]  # stratified
    same = ["data.name=npz", f"data.path={path}", "train.batch_size=32"]
    again = load_dataset(load_config([*same, "data.seed=0"]).data)
    np.testing.assert_array_equal(ds.x_val, again.x_val)
    other = load_dataset(load_config([*same, "data.seed=1"]).data)
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
        "error: data.path is read with data.name=npz only (data.name=gaussian)"
    ]
    code, lines, _ = _run("train", "data.name=npz", runs=runs)
    assert code == 2 and "needs data.path=" in lines[0]


@pytest.mark.slow
def test_a_sweep_on_a_users_file_records_it_and_its_best_config_retrains(tmp_path):
    x, y = load_iris(return_X_y=True)
    path = write(tmp_path / "iris.npz", x_train=x, y_train=y)
    args = [*TINY[3:], "train.batch_size=32", "study.n_trials=2", "study.name=mine"]
    run_cli(tmp_path, "sweep", "data.name=npz", "data.path=iris.npz", *args)
    study = optuna.load_study(
        study_name="mine", storage=make_storage(str(tmp_path / "runs" / "optuna.journal"))
    )
    digest = sha256(path)
    for trial in study.trials:
        spec = trial.user_attrs[SPEC_ATTR]
        assert spec["data.path"] == str(path.resolve()) and spec["data.sha256"] == digest
    best = tmp_path / "best.yaml"
    run_cli(tmp_path, "best", "study.name=mine", "--out", str(best))
    entry = yaml.safe_load(best.read_text())["configs"][0]
    assert entry["data"]["sha256"] == digest
    out = run_cli(tmp_path / "runs", "train", "--config", str(best), "--json")  # elsewhere
    report = json.loads(out.stdout[out.stdout.index("{") :])
    assert report["steps_to_target"] == entry["measured"]["steps_to_target"]
    assert report["final_train_loss"] == pytest.approx(entry["measured"]["final_train_loss"])
