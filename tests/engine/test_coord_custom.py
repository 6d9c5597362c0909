"""The coordinate check on a user's own module (issue 14): the example NNX network
(examples/resnet.py) and a linen MLP, recorded without changing them; a factory without a width
is one error line."""

from __future__ import annotations

import contextlib
import io
import textwrap

import jax
import numpy as np
import pytest
from conftest import TINY

from pipeline.cli import main
from pipeline.config import TrialSpec, load_config
from pipeline.core.model import Structure
from pipeline.core.net import unflatten
from pipeline.engine.factory import net_for
from pipeline.reports.coord_check import _captured_names, coord_data, record, slopes

RESNET = "examples.resnet:make_model"  # embed, blocks/<i>/{norm, fc, out_proj}, head

LINEN = """
import flax.linen as nn


class MLP(nn.Module):
    width: int
    n_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.relu(nn.Dense(self.width, name="input")(x))
        h = nn.relu(nn.Dense(self.width, name="hidden")(h))
        return nn.Dense(self.n_classes, name="head")(h)


def make(width, n_classes):
    return MLP(width, n_classes)


def make_fixed(n_classes):  # no width: coord-check cannot build it at other widths
    return MLP(32, n_classes)
"""


@pytest.fixture
def linen_factory(tmp_path, monkeypatch):
    """The linen module file, in a folder on the path; its module name (unique per test)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"coord_linen_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(LINEN))
    return name


def _relu(a):
    return np.maximum(a, 0.0)


def _by_hand_linen(p, x):
    """The linen MLP's layers and logits, written out."""
    h1 = x @ p["input/kernel"] + p["input/bias"]
    h2 = _relu(h1) @ p["hidden/kernel"] + p["hidden/bias"]
    logits = _relu(h2) @ p["head/kernel"] + p["head/bias"]
    return {"input": h1, "hidden": h2, "logits": logits}


def _by_hand_resnet(p, x):
    """examples/resnet.py at depth 1 written out: embed, one pre-norm block, head (nnx.LayerNorm:
    epsilon 1e-6)."""
    e = x @ p["embed/kernel"] + p["embed/bias"]
    n = (e - e.mean(-1, keepdims=True)) / np.sqrt(e.var(-1, keepdims=True) + 1e-6)
    n = n * p["blocks/0/norm/scale"] + p["blocks/0/norm/bias"]
    f = n @ p["blocks/0/fc/kernel"] + p["blocks/0/fc/bias"]
    o = _relu(f) @ p["blocks/0/out_proj/kernel"] + p["blocks/0/out_proj/bias"]
    logits = (e + o) @ p["head/kernel"] + p["head/bias"]
    return {"embed": e, "blocks/0/fc": f, "blocks/0/out_proj": o, "logits": logits}


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_record_reads_every_dense_layer_of_the_users_module_as_written_by_hand(kind, linen_factory):
    # The read-out's output is the module's output: recorded once, as the logits; the layers in
    # the order the module calls them (NNX lists its modules alphabetically: blocks before embed).
    spec = f"{linen_factory}:make" if kind == "linen" else RESNET
    by_hand = _by_hand_linen if kind == "linen" else _by_hand_resnet
    net = net_for(Structure("relu", 1, 24, 16, 10, "custom", spec))
    rng = np.random.default_rng(0)
    flat = {leaf.path: rng.normal(0, 0.5, leaf.shape).astype(np.float32)
            for leaf in net.layout.leaves}  # fmt: skip
    x = rng.normal(size=(32, 16)).astype(np.float32)
    want = by_hand(flat, x)
    assert _captured_names(net, x) == list(want)
    got = np.asarray(jax.jit(record, static_argnums=0)(net, unflatten(flat), x, None))
    np.testing.assert_allclose(got, [np.abs(v).mean() for v in want.values()], rtol=1e-4)


# Calibrated like the built-in check (tests/engine/test_mup.py) on the linen MLP above (one hidden
# width x width layer) on TINY's gaussian data, Adam, lr 0.01, batch 64, 2 seeds, widths 64, 256,
# 1024; 3 runs with train.seed 0, 1, 2. Measured slopes of log mean|x| against log width: μP's
# layers within +-0.03 at every step; its logits -0.45..-0.47 at initialization (the read-out's
# std ~ width^-1/2), -0.23..-0.32 after step 1 (the learned part is Θ(1) but not yet larger than
# the vanishing initial part), -0.03..-0.06 after step 3. SP: every entry within +-0.05 at
# initialization; after one step the hidden layer +0.41..+0.44 and the logits +1.21..+1.22 (Adam
# moves each entry of a width x width matrix by ~lr: a pre-activation by ~lr x width). The
# thresholds sit about halfway to the next regime. (examples/resnet.py gives the same picture,
# docs/mup.md, but building an NNX module at each width costs ~30 s here: its layers initialize
# eagerly.)
def test_coordinate_check_of_a_users_module_is_flat_under_mup_and_grows_under_sp(linen_factory):
    model = ["model.kind=custom", f"model.factory={linen_factory}:make", "model.width=64"]
    cfg = load_config([*TINY, *model, "train.optimizer=adam", "train.learning_rate=0.01"])
    base = TrialSpec.of_config(cfg)
    trials = [base.with_values({"init.parametrization": p}) for p in ("sp", "mup")]
    data = coord_data(cfg, trials, (64, 256, 1024), seeds=2, steps=3, batch=64)
    assert data.layers == ("input", "hidden", "logits")
    s = slopes(data)  # [trials, steps + 1, layers]
    sp, mup = s[0], s[1]
    assert np.all(np.abs(mup[:, :-1]) < 0.15), mup
    assert -0.65 < mup[0, -1] < -0.3, mup  # the logits at initialization: width^-1/2
    assert np.all(mup[1:, -1] > -0.4) and abs(mup[-1, -1]) < 0.15, mup  # then Θ(1)
    assert np.all(np.abs(sp[0]) < 0.15), sp  # at initialization SP is as flat as μP
    assert sp[1, 1] > 0.25 and sp[1, -1] > 0.8, sp


def test_a_factory_without_width_is_one_error_line(linen_factory, tmp_path):
    err, out = io.StringIO(), io.StringIO()
    args = ["coord-check", *TINY, "model.kind=custom", f"model.factory={linen_factory}:make_fixed",
            f"runs_dir={tmp_path / 'runs'}"]  # fmt: skip
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    lines = [line for line in (err.getvalue() + out.getvalue()).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "needs a width argument (it takes: n_classes;" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
