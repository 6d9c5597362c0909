"""The plain loops `make bench` times measure what the engine measures."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.baseline import steps_to_target
from pipeline.config import load_config
from pipeline.core.metrics import start_running, update_running


def engine_steps_to_target(losses, norms, cfg) -> float:
    """The engine's rule, run as the compiled call runs it (metrics.update_running in a scan)."""

    m = cfg.metrics
    settings = SimpleNamespace(
        smoothing=m.smoothing,
        explode_threshold=m.explode_threshold,
        vanish_threshold=m.vanish_threshold,
        target_loss=cfg.train.target_loss,
    )

    def scan(r, xs):
        i, loss, norm = xs
        return update_running(r, i, loss, norm, jnp.float32(1.0), settings), None

    xs = (jnp.arange(len(losses)), jnp.asarray(losses, jnp.float32), jnp.asarray(norms))
    r, _ = jax.lax.scan(scan, start_running(), xs)
    hit = int(r.hit_step)
    return float(hit + 1) if hit >= 0 else float(cfg.train.steps + 1)


@pytest.mark.parametrize("seed", range(6))
def test_the_baselines_steps_to_target_is_the_engines(seed):
    cfg = load_config(["train.steps=100", "train.eval_every_steps=50", "train.target_loss=1.0"])
    rng = np.random.default_rng(seed)
    losses = np.linspace(2.5, 0.2, 100) + rng.normal(0, 0.3, 100)
    norms = rng.lognormal(1, 1, 100)
    # Planted explosions: huge or non-finite gradient norms, some with a misleading tiny loss.
    exploded = rng.choice(100, 15, replace=False)
    norms[exploded] = rng.choice([np.inf, np.nan, 5e3, 1e9], 15)
    losses[exploded[:5]] = 0.0
    want = engine_steps_to_target(losses, norms, cfg)
    assert steps_to_target(losses.astype(np.float32), norms, cfg) == want
    if seed == 0:  # a case that never gets there: the sentinel steps + 1
        assert (
            steps_to_target(losses + 10, norms, cfg)
            == 101.0
            == engine_steps_to_target(losses + 10, norms, cfg)
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "module", ["benchmarks.baseline", "benchmarks.independent_loop", "benchmarks.custom_loop"]
)
def test_each_plain_loop_runs_as_the_bench_runs_it(tmp_path, module):
    """A whole process from another folder, as `make bench` starts it (repo root on the path)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "out.json"
    tiny = ["study.n_trials=2", "train.steps=20", "train.eval_every_steps=20", "model.width=8"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if module == "benchmarks.custom_loop":  # the example's module on the example's data
        from examples.make_data import main as make_data

        make_data(str(tmp_path / "bc.npz"))
        tiny += [f"data.path={tmp_path / 'bc.npz'}", "train.batch_size=32"]
    cmd = [sys.executable, "-m", module, "--out", str(out), *tiny, f"runs_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(out.read_text())
    assert len(document["steps_to_target"]) == 2 and len(document["params"]) == 2
    assert all(1 <= s <= 21 for s in document["steps_to_target"])
