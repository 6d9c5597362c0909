"""The device script and the scaling bench of `make bench` (issue 26), at tiny sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.device import loop_line
from benchmarks.measure import ROOT, fit_line

# One structure (depth 2, relu), width 16, 20 steps: a compile of a second or two per command.
TINY = ["space.model.depth=[2]", "space.model.activation=[relu]", "model.width=16"]


def bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """``python -m benchmarks.bench <args>`` as `make bench` runs it; the JSON it wrote."""
    out = tmp_path / "bench" / "latest.json"
    cmd = [sys.executable, "-m", "benchmarks.bench", *args, "--out", str(out), *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name = "device.json" if "--device" in args else "scaling.json"
    return json.loads((out.with_name(name)).read_text()), done.stdout


def test_a_line_through_planted_points_is_recovered():
    fit = fit_line([64, 256, 1024, 4096], [10 + 0.02 * n for n in (64, 256, 1024, 4096)])
    assert fit["fixed_s"] == pytest.approx(10) and fit["per_trial_s"] == pytest.approx(0.02)
    assert fit["max_residual_s"] < 1e-9 and fit["points"] == 4
    noisy = fit_line([64, 256, 1024], [12.0, 13.0, 35.0])  # not a line: the residual says so
    assert noisy["max_residual_s"] > 1
    assert fit_line([64, 64], [1.0, 2.0])["per_trial_s"] is None  # one count: no slope


def test_a_loop_is_extrapolated_from_its_trials_after_the_first():
    """Per trial is the mean of trials 2..k (the first carries one-time costs), the rest of the
    whole command is fixed, and the line is labelled with the trials it came from."""
    ends = [100.0 + 5.0, 100.0 + 6.0, 100.0 + 7.0, 100.0 + 8.0]  # 5 s first, then 1 s each
    loop = {"trial_ends": ends, "wall_s": 9.0, "phases": {}, "compile_s": 0.0, "params": []}
    line = loop_line("independent loop", loop, 4)
    assert line["per_trial_s"] == pytest.approx(1.0)
    assert line["fixed_s"] == pytest.approx(5.0)  # 9 s whole - 4 x 1 s
    assert line["label"] == "extrapolated from 4 trials"


@pytest.mark.slow
def test_the_device_script_reports_sane_numbers_at_tiny_sizes(tmp_path):
    doc, stdout = bench(
        tmp_path, "--device", "--sizes", "4,8", "--steps", "20", "--loop-trials", "3",
        "--loops", "independent loop", "--matmul-size", "512",
    )  # fmt: skip
    assert doc["device_kind"] and doc["device_kind"] in stdout  # the device kind is printed
    peak = doc["peak"]
    assert peak["peak_gflops"] > 0 and peak["peak_highest_gflops"] > 0
    assert "measured" in doc["peak_source"]
    (loop,) = doc["loops"]
    assert loop["loop"] == "independent loop" and loop["trials_measured"] == 3
    assert loop["label"] == "extrapolated from 3 trials"
    assert loop["per_trial_s"] > 0 and 0 <= loop["fixed_s"] < loop["wall_s"]
    assert [r["trials"] for r in doc["rows"]] == [4, 8] and not doc["skipped"]
    assert [r["start"] for r in doc["rows"]] == ["cold", "warm"]
    for row in doc["rows"]:
        n = row["trials"]
        assert 0 < row["train_s"] < row["whole_s"]
        assert sum(row["phases"].values()) == pytest.approx(row["whole_s"], abs=0.05)
        assert 0 <= row["outside_training_fraction"] <= 1
        outside = 1 - row["train_s"] / row["whole_s"]
        assert row["outside_training_fraction"] == pytest.approx(outside)
        assert row["trial_steps"] == n * 20 * doc["seeds"]
        rate = row["trial_steps"] / row["train_s"]
        assert row["trial_steps_per_s_training"] == pytest.approx(rate)
        assert row["trial_steps_per_s_training"] > row["trial_steps_per_s_whole"] > 0
        assert row["useful_gflops_training"] > row["useful_gflops_whole"] > 0
        assert 0 < row["peak_fraction"] <= 1
        extrapolated = row["loops"]["independent loop"]
        assert extrapolated["label"] == "extrapolated from 3 trials"
        assert extrapolated["seconds"] == pytest.approx(loop["fixed_s"] + n * loop["per_trial_s"])
        assert row["speedup"] == pytest.approx(extrapolated["seconds"] / row["whole_s"])
    assert "extrapolated from 3 trials" in stdout  # labelled in the table too


@pytest.mark.slow
def test_scaling_fits_a_positive_cost_per_trial_at_tiny_sizes(tmp_path):
    """Study batches of 4 trials, so every call has one shape (one compile) and 48 trials are
    12 calls against 1: the slope is the cost of more trials, not of a second compile. At 200
    steps the 44 more trials train for about 10 s, well above how much a cold start varies on a
    loaded machine (at 20 steps, 2 s, and the fitted slope came out negative once)."""
    doc, stdout = bench(
        tmp_path, "--scaling", "4,48", "--starts", "cold", "--loop-max", "0",
        "train.steps=200", "study.batch_size=4",
    )  # fmt: skip
    assert [(p["series"], p["trials"]) for p in doc["points"]] == [
        ("engine cold", 4),
        ("engine cold", 48),
    ]
    fit = doc["fits"]["engine cold"]["whole"]
    assert fit["per_trial_s"] > 0 and fit["fixed_s"] > 0 and fit["points"] == 2
    for p in doc["points"]:  # a line through two points passes through both
        assert fit["fixed_s"] + fit["per_trial_s"] * p["trials"] == pytest.approx(p["wall_s"])
        assert p["per_trial_s"] == pytest.approx(p["wall_s"] / p["trials"])
    assert "fixed + per trial" in stdout
    assert doc["fit"].startswith("seconds = fixed_s + per_trial_s * trials")
