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


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return load_config([*TINY, *overrides])

    return make
