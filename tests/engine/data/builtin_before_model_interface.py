"""Writes builtin_before_model_interface.json: run from a checkout of commit 1f2c9f9 (the
engine before the model interface),
`python tests/engine/data/builtin_before_model_interface.py > ...json`."""

import json

import numpy as np

from pipeline.config import Space, TrialSpec, load_config
from pipeline.engine import Engine
from pipeline.engine.datasets import load_dataset

CASES = {
    "mlp_tanh_orthogonal_bias": [
        "model.activation=tanh",
        "model.depth=6",
        "init.weights=orthogonal",
        "init.gain=1.2",
        "init.bias=normal",
        "init.bias_std=0.1",
        "engine.depth_buckets=[8]",
    ],
    "cnn_relu_glorot": [
        "data.name=digits",
        "model.kind=cnn",
        "model.width=8",
        "model.depth=3",
        "init.weights=glorot_uniform",
    ],
}
TINY = [
    "data.samples=512",
    "data.val_samples=128",
    "data.features=16",
    "model.width=16",
    "train.batch_size=64",
    "train.steps=60",
    "train.eval_every_steps=20",
    "train.seeds=2",
    "engine.cpu_devices=1",
]
out = {}
for name, args in CASES.items():
    cfg = load_config([*TINY, *args])
    engine = Engine(cfg, load_dataset(cfg.data), Space())
    [r] = engine.run([TrialSpec.of_config(cfg)])
    out[name] = {
        "args": args,
        "loss": np.asarray(r.curves["loss"][1]).tolist(),
        **{
            k: float(r.metrics[k])
            for k in ("steps_to_target", "final_train_loss", "final_val_loss", "initial_train_loss")
        },
    }
print(json.dumps({"tiny": TINY, "cases": out}, indent=1))
