import subprocess
import sys

import pytest

from pipeline.config import load_config

# Small enough to compile and train in about a second per structure on 2 cores.
TINY = [
    "data.samples=512",
    "data.val_samples=128",
    "data.features=16",
    "model.width=16",
    "train.batch_size=64",
    "train.steps=60",
    "train.eval_every_steps=20",
]


def train_trials(cfg, *variants: dict, weights=None):
    """Train one trial per variant (dotted overrides of cfg) in one engine call."""
    from pipeline.config import to_flat_dict
    from pipeline.data import load_dataset
    from pipeline.engine import Engine
    from pipeline.sweep import TRIAL_SECTIONS

    base = to_flat_dict(cfg, TRIAL_SECTIONS)
    trials = [{**base, **v} for v in variants]
    engine = Engine(cfg, load_dataset(cfg.data), weights or [t["init.weights"] for t in trials])
    return engine.run(trials), engine


@pytest.fixture
def train():
    return train_trials


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return load_config([*TINY, *overrides])

    return make


def run_cli(tmp_path, *args, check=True, env=None, runs="runs"):
    """``python -m pipeline *args`` in ``tmp_path``, writing under ``tmp_path/runs``."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, f"runs_dir={tmp_path / runs}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out
