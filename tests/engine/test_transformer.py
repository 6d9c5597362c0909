"""The transformer (model.kind=transformer) on associative recall (data.name=recall), its
attention logit scale, residual rules and attention diagnostics (issue 13): closed checks of the
data, equivalences (vmapped = alone, masked = shallower), theory against measurement, refusals,
and one tiny run end to end."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BASE, run_main

from pipeline.config import ConfigError, Space, TrialSpec, load_config
from pipeline.core.data import recall
from pipeline.core.diagnostics import measure
from pipeline.core.model import Structure
from pipeline.core.net import builtin_net, flatten, unflatten
from pipeline.core.predict import trial_prediction, trial_transformer_stream
from pipeline.core.train import init_params
from pipeline.engine import Engine, draws_for
from pipeline.engine.datasets import load_dataset, sizes
from pipeline.engine.rows import row_hparams
from pipeline.reuse import export

# 2 pairs of 4 keys and 4 values: sequences of 5 tokens, 8 token ids, 4 classes.
RECALL = [*BASE, "data.name=recall", "data.pairs=2", "data.key_vocab=4", "data.value_vocab=4"]
TRANS = [
    *RECALL,
    "model.kind=transformer",
    "model.width=16",
    "model.heads=2",
    "model.norm=pre",
    "data.samples=256",
    "data.val_samples=64",
    "train.batch_size=32",
    "train.steps=10",
    "train.eval_every_steps=5",
]


def test_recall_sequences_hold_distinct_keys_and_the_queried_keys_value():
    ds = recall(pairs=5, key_vocab=7, value_vocab=6, samples=300, val_samples=50, seed=3)
    assert ds.x_train.shape == (300, 11) and ds.x_train.dtype == np.int32
    assert (ds.n_tokens, ds.n_classes, len(ds.x_val)) == (13, 6, 50)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        keys, values, query = x[:, 0:-1:2], x[:, 1:-1:2], x[:, -1]
        assert keys.max() < 7 and values.min() >= 7 and values.max() < 13
        assert all(len(set(row)) == 5 for row in keys)  # distinct keys in every sequence
        match = keys == query[:, None]
        assert np.all(match.sum(axis=1) == 1)  # the query is exactly one of its keys
        np.testing.assert_array_equal(values[match] - 7, y)  # the label: that key's value
    assert set(ds.y_train) == set(range(6))
    again = recall(5, 7, 6, 300, 50, 3)
    for a, b in zip(ds[:4], again[:4]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(recall(5, 7, 6, 300, 50, 4).x_train, ds.x_train)
    cfg = load_config([*TRANS, "data.pairs=3"])
    loaded = load_dataset(cfg.data)
    assert tuple(sizes(cfg.data)) == (256, 64, 7, 4)
    assert loaded.x_train.shape == (256, 7) and (loaded.n_tokens, loaded.n_classes) == (8, 4)


def test_rows_of_scales_rules_and_depths_train_in_one_call_as_each_alone():
    cfg = load_config([*TRANS, "model.depth=3", "metrics.diagnostics=false"])
    base = TrialSpec.of_config(cfg)
    variants = [
        {},
        {"model.attention_scale": "1/d", "init.embedding_std": 0.1},
        {"model.attention_scale": "none", "init.residual": "gpt2"},
        {"init.residual": "rezero", "model.depth": 2},
        {"init.residual": "scaled", "model.depth": 1, "init.readout": "zero"},
    ]
    trials = [base.with_values(v) for v in variants]
    engine = Engine(cfg, load_dataset(cfg.data), Space())
    together = engine.run(trials)
    for trial, batched in zip(trials, together):
        # Alone: a call of copies of this trial only (the same executable, no other trial's rows).
        alone = engine.run([trial] * len(trials))[0]
        np.testing.assert_allclose(
            alone.curves["loss"][1], batched.curves["loss"][1], rtol=2e-4, atol=1e-5
        )
    assert engine.stats.executables == 1  # scale, rules and depth are traced
    first = [float(r.curves["loss"][1][0]) for r in together]
    assert len({round(v, 5) for v in first}) == len(first)  # the rows really differ
    # A zero read-out: every logit is 0, the loss exactly ln(value_vocab).
    assert together[-1].metrics["initial_train_loss"] == pytest.approx(math.log(4), abs=1e-6)


# --- at initialization, through the core (no training executable) -----------------------------

DRAWS = draws_for(["he_normal"])


L = 4  # blocks of the small setup the rule and masking tests share


def _units(net, seed: int = 0) -> dict:
    """Unit draws as the engine's sampler gives them (``make_unit_draws``: kernels (seeds,
    draws, ...), biases and other leaves (seeds, ...)), drawn with NumPy so these tests compile
    no sampler: the "normal" draw is a standard normal; the other leaves take the module's own
    initial values (``pipeline.core.transformer``: tables N(0, 1), norm scales 1, norm offsets
    and gates 0)."""
    rng = np.random.default_rng(seed)
    units = {}
    for leaf in net.layout.leaves:
        if leaf.role == "kernel":
            units[leaf.path] = rng.standard_normal((1, 1, *leaf.shape), np.float32)
        elif leaf.role == "bias" or leaf.module == "Embed":
            units[leaf.path] = rng.standard_normal((1, *leaf.shape), np.float32)
        else:
            fill = 1.0 if leaf.path.endswith("/scale") else 0.0
            units[leaf.path] = np.full((1, *leaf.shape), fill, np.float32)
    return units


@functools.cache
def _setup(width: int, heads: int, depth: int, norm: str):
    """(config, structure, net, unit draws, probe batch) of one transformer shape on recall
    sequences of 4 pairs (9 tokens, 32 token ids, 16 classes)."""
    args = [*RECALL, "data.pairs=4", "data.key_vocab=16", "data.value_vocab=16"]
    args += [f"model.width={width}", f"model.heads={heads}", f"model.depth={depth}"]
    args += ["model.kind=transformer", f"model.norm={norm}"]
    cfg = load_config([*args, "data.samples=64", "data.val_samples=64", "train.batch_size=64"])
    data = load_dataset(cfg.data)
    structure = Structure("relu", depth, width, 9, 16, "transformer", None, norm, heads, 32)
    net = builtin_net(structure)
    return cfg, structure, net, _units(net), (jnp.asarray(data.x_val), jnp.asarray(data.y_val))


def _initial(setup, **values):
    """(trial, row, params) of the setup's trial with ``values`` (dotted keys) changed."""
    cfg, structure, net, units, _ = setup
    trial = TrialSpec.of_config(cfg).with_values(values)
    hp = row_hparams(trial, net.layout, structure, DRAWS, 0)
    return trial, hp, init_params(units, hp, net.layout)


@functools.cache
def _probe_fn(net):
    """(diagnostics, logits) of ``net`` on a batch, jitted once per network (the row traced)."""

    def probe(params, hp, x, y):
        extra = (hp.depth, 0.0, hp.residual, hp.attention_scale)
        return measure(net, params, x, y, *extra), net.apply(params, x, hp)

    return jax.jit(probe)


def test_mup_sets_the_attention_scale_to_one_over_d_relative_to_the_base_width():
    """SP keeps model.attention_scale; muP is sqrt(d_base)/d: SP's 1/sqrt(d) at the base width,
    then 1/d (a 4x wider model: d 4x larger, scale 4x smaller, not 2x)."""
    from pipeline.core.transformer import attention_scale

    trial = {"model.width": 64, "model.heads": 4, "model.attention_scale": "none"}
    assert attention_scale({**trial, "init.parametrization": "sp"}) == 1.0
    mup = {**trial, "init.parametrization": "mup", "model.base_width": 64}
    assert attention_scale(mup) == pytest.approx(1 / math.sqrt(16))
    wide = attention_scale({**mup, "model.width": 256})
    assert wide == pytest.approx(attention_scale(mup) / 4) and wide == pytest.approx(4 / 64)


def test_a_masked_deeper_stack_is_the_shallower_network():
    """4 blocks of which 2 are masked against the real 2-block network given the same first two
    blocks (as the engine's sampler does: it draws a stacked leaf layer by layer): the logits and
    every probe of the real layers, the gradients' included, are equal."""
    cfg, structure, net, _, batch = _setup(16, 2, L, "pre")
    values = {"model.depth": 2, "init.residual": "scaled", "init.bias": "normal"}
    trial, hp, params = _initial(_setup(16, 2, L, "pre"), **values)
    real_structure = structure._replace(n_hidden=2)
    real_net = builtin_net(real_structure)
    # The stacked leaves' first two layers: the real network's parameters.
    flat = flatten(params)
    cut = unflatten({p: v[:2] if p.startswith("blocks/") else v for p, v in flat.items()})
    row = row_hparams(trial, real_net.layout, real_structure, DRAWS, 0)
    padded, padded_logits = _probe_fn(net)(params, hp, *batch)
    real, real_logits = _probe_fn(real_net)(cut, row, *batch)
    np.testing.assert_allclose(padded_logits, real_logits, rtol=1e-6, atol=1e-7)
    for name in real._fields:
        want, got = np.asarray(getattr(real, name)), np.asarray(getattr(padded, name))
        if name in ("weight_grad_norm", "weight_norm"):  # the read-out's entry is last
            got = np.concatenate([got[:3], got[-1:]])
        else:  # the embedding and the 2 real blocks
            got = got[:3]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=name)
    assert np.isnan(real.attention_entropy[0]) and 0 < real.attention_entropy[1] <= 1


def test_a_zero_gate_keeps_the_stream_exactly_constant():
    setup = _setup(16, 2, L, "pre")
    values = {"init.residual": "rezero", "init.bias": "normal"}
    trial, hp, params = _initial(setup, **values)
    probe, _ = _probe_fn(setup[2])(params, hp, *setup[4])
    stream = np.asarray(probe.stream_ms)  # entering, then after each of the 4 blocks
    assert np.all(stream == stream[0])
    assert trial_prediction(trial)["theory.stream_var_ratio"] == 1.0
    assert stream[0] == pytest.approx(2.0, rel=0.25)  # two N(0, 1) tables: q_0 = 2


# Width 256, 4 heads of d = 64, 2 blocks, ReLU at He (sigma_w2 = 2), zero biases, 64 probe
# sequences of 9 tokens. theory.logit_std = scale sqrt(d) sigma_w2 q_in: 2 for 1/sqrt(d).
# Tolerance 10%: a head's logit variance is a sum over d x 256 weights per matrix, so its
# finite-width error is a few percent (measured: 1-3% for pre, 5% for post's first block,
# whose input, the embedding, has only 9 + 32 distinct rows).
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_logit_std_at_init_matches_theory_and_scales_exactly(norm):
    setup = _setup(256, 4, 2, norm)
    probe = _probe_fn(setup[2])  # one compile: the scale is a traced number
    measured = {}
    for name in ("1/sqrt(d)", "1/d", "none"):
        trial, hp, params = _initial(setup, **{"model.attention_scale": name})
        p, _ = probe(params, hp, *setup[4])
        predicted = trial_prediction(trial)
        std = float(np.mean(np.asarray(p.logit_std)[1:]))
        assert std == pytest.approx(predicted["theory.logit_std"], rel=0.10), name
        measured[name] = p
    # The first block's logits are the same q.k times the scale: exactly in ratio (d = 64).
    first = {k: float(p.logit_std[1]) for k, p in measured.items()}
    assert first["none"] / first["1/sqrt(d)"] == pytest.approx(8.0, rel=1e-5)
    assert first["1/sqrt(d)"] / first["1/d"] == pytest.approx(8.0, rel=1e-5)
    entropy = {k: float(np.mean(np.asarray(p.attention_entropy)[1:])) for k, p in measured.items()}
    # Logits of std sigma over T = 9 keys: entropy ~ 1 - sigma^2 / (2 ln 9) of uniform's, above
    # 0.95 for 1/d (sigma = 0.25, 0.5 in post's first block, whose input has mean square 2).
    assert entropy["1/d"] > 0.95
    assert entropy["none"] < 0.5 * entropy["1/sqrt(d)"] < 0.5 * entropy["1/d"]
    if norm == "post":  # the MLP on a LayerNorm-ed input adds V(1) = 2: (1 + 2) / q_0
        stream = np.asarray(measured["1/sqrt(d)"].stream_ms)
        predicted = trial_prediction(trial)["theory.stream_var_ratio"]
        assert predicted == pytest.approx(3.0 / 2.0)  # q_0 = 2 embedding_std^2 = 2
        assert stream[-1] / stream[0] == pytest.approx(predicted, rel=0.10)


# Live attention branches without post-norm (theory.transformer_stream): width 256, 4 heads of
# d = 64, ReLU at He, zero biases, the 64 probe sequences of recall with 4 pairs (T = 9), 3 draws
# of the weights; pre-norm on the 2 blocks of the logit-std test above (its executable: no
# compile of its own), no norm on 4. The pre-norm stream grows by the attention branch as much
# as by the MLP (alpha^2 (A + V(1)) per block, A rising with the correlation between positions
# that the attention itself creates), so the MLP-only growth 1 + 2 l alpha^2 / q_0 is far below.
LIVE_RULE = {"pre": "none", "none": "t_fixup"}  # T-Fixup: the rule for a transformer without norm
LIVE_DEPTH = {"pre": 2, "none": L}
LIVE_VARIANTS = (
    {"model.attention_scale": "1/sqrt(d)"},
    {"model.attention_scale": "1/d"},  # near-uniform attention
    {"model.attention_scale": "none"},  # nearly one-hot rows
    {"init.parametrization": "depth_mup", "model.base_depth": 1},  # both branches x 1/2
)
LIVE_SEEDS = (0, 1, 2)
# Measured over 6 draws (docs/transformer.md): the seed-to-seed spread of a block's ratio is at
# most 4% (3-draw standard error 2.3%), the error of the 6-draw mean at most 2.4%, of the 3-draw
# mean 1.5%: 6% is 2.6 standard errors of the noisiest block, and the wrong formulas of the next
# test miss by more than twice that.
LIVE_TOLERANCE = 0.06


@functools.cache
def _live_ratios(norm: str, values: tuple) -> tuple[TrialSpec, np.ndarray, np.ndarray]:
    """(trial, measured stream mean square after each block over x_0's, one row per seed, and
    the attention logit std averaged over blocks, one per seed) of the trial with ``values``
    (dotted key, value pairs)."""
    cfg, structure, net, _, batch = _setup(256, 4, LIVE_DEPTH[norm], norm)
    changed = {"init.residual": LIVE_RULE[norm], **dict(values)}
    trial = TrialSpec.of_config(cfg).with_values(changed)
    hp = row_hparams(trial, net.layout, structure, DRAWS, 0)
    ratios, logit_stds = [], []
    for seed in LIVE_SEEDS:
        params = init_params(_units(net, seed), hp, net.layout)
        probe = _probe_fn(net)(params, hp, *batch)[0]
        stream = np.asarray(probe.stream_ms, np.float64)
        ratios.append(stream[1:] / stream[0])
        logit_stds.append(float(np.mean(np.asarray(probe.logit_std)[1:])))
    return trial, np.asarray(ratios), np.asarray(logit_stds)


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_stream_through_live_attention_matches_theory(norm):
    """Every block's stream ratio, mean of 3 draws, within LIVE_TOLERANCE of theory's, for the
    three logit scales (near-uniform to nearly one-hot attention) and depth_mup's branch
    multiplier. The tolerance covers the finite width (4 heads: each head's attention pattern is
    one random draw) and the exchangeable-positions approximation (recall's pairs of positions
    are correlated 1/2 or 0 at x_0, theory uses their mean)."""
    for values in LIVE_VARIANTS:
        trial, ratios, logit_stds = _live_ratios(norm, tuple(values.items()))
        stream = trial_transformer_stream(trial)
        predicted = stream.stream_var[1:] / stream.stream_var[0]
        error = np.abs(ratios.mean(axis=0) / predicted - 1)
        assert np.all(error <= LIVE_TOLERANCE), (values, ratios.mean(axis=0), predicted)
        theory = trial_prediction(trial)
        assert theory["theory.stream_var_ratio"] == predicted[-1]
        # Without a norm each block's logits see the grown stream (attention_in): the same 10%
        # as the logit-std test above.
        assert logit_stds.mean() == pytest.approx(theory["theory.logit_std"], rel=0.10), values


def test_live_attention_theory_rejects_the_mlp_only_and_uniform_attention_formulas():
    """Pre-norm: ignoring the attention branch (the residual MLP's 1 + 2 l alpha^2 / q_0) and,
    for the unscaled logits, taking the attention as uniform both miss the measurement by
    more than twice the tolerance."""
    from pipeline.core.theory import residual_stream, transformer_stream

    trial, ratios, _ = _live_ratios("pre", (("model.attention_scale", "none"),))
    measured = ratios.mean(axis=0)
    depth = LIVE_DEPTH["pre"]
    # q_0 = 2 (two unit tables), one MLP branch per block: 1 + l
    mlp_only = residual_stream(depth, "none", "pre", "relu", 2.0, q0=2.0).stream_var[1:] / 2.0
    assert np.all(np.abs(measured / mlp_only - 1) > 2 * LIVE_TOLERANCE)
    exact = trial_transformer_stream(trial)
    uniform = transformer_stream(
        depth, "none", "pre", "relu", 2.0, tokens=9, head_dim=64, scale=0.0, q0=2.0,
        c0=exact.stream_corr[0],
    )  # fmt: skip
    assert np.all(np.abs(measured / (uniform.stream_var[1:] / 2.0) - 1) > 2 * LIVE_TOLERANCE)


def test_theory_vs_measurement_draws_a_transformers_own_theory(tmp_path):
    """chi1 is one layer's gradient gain: the figure keeps it for plain networks and puts a
    transformer's stream ratio and logit std theory beside their measurement instead."""
    from pipeline.reports import plots

    cfg = _setup(16, 2, L, "pre")[0]
    transformer = TrialSpec.of_config(cfg)
    mlp = TrialSpec.of_config(load_config([*BASE, "model.depth=4"]))
    measured = {"diag.init.stream_var_ratio": 9.0, "diag.init.logit_std": 2.1}
    rows = [
        plots.Row(transformer, {**measured, "diag.init.backprop_ratio": 3.0}, {}),
        plots.Row(mlp, {"diag.init.backprop_ratio": 1.2}, {}),
    ]
    assert [r.config["model.kind"] for *_, r in plots._chi1_points(rows)] == ["mlp"]
    predicted = trial_prediction(transformer)
    pairs = {(p, m) for p, m, *_ in plots._residual_points(rows)}
    assert pairs == {
        (predicted["theory.stream_var_ratio"], 9.0),
        (predicted["theory.logit_std"], 2.1),
    }
    assert plots.theory_vs_measurement(rows, "t", tmp_path / "f.png").stat().st_size > 0
    assert plots.theory_vs_measurement(rows[:1], "t", tmp_path / "g.png").exists()


# Each rule's factor on a branch layer's std (Radford et al. 2019; Wang et al. 2022; Huang et al.
# 2020), L = 4 blocks; every leaf not named keeps the plain draw exactly.
FACTORS = {
    "gpt2": {"attn/out": (2 * L) ** -0.5, "mlp/fc2": (2 * L) ** -0.5},
    "deepnorm": {k: (8 * L) ** -0.25 for k in ("attn/value", "attn/out", "mlp/fc1", "mlp/fc2")},
    "t_fixup": {k: 0.67 * L**-0.25 for k in ("attn/value", "attn/out", "mlp/fc1", "mlp/fc2")},
}


@pytest.mark.parametrize("residual", sorted(FACTORS))
def test_residual_rules_scale_exactly_their_layers(residual):
    setup = _setup(16, 2, L, "pre")  # the init alone: the norm a rule needs changes nothing
    _, _, plain = _initial(setup, **{"init.bias": "normal"})
    _, _, ruled = _initial(setup, **{"init.bias": "normal", "init.residual": residual})
    plain, ruled = flatten(plain), flatten(ruled)
    factors = {f"blocks/{k}/kernel": v for k, v in FACTORS[residual].items()}
    if residual == "t_fixup":
        factors |= {t: (9 * L) ** -0.25 for t in ("embed/embedding", "pos/embedding")}
    for path, value in plain.items():
        np.testing.assert_allclose(ruled[path], factors.get(path, 1.0) * value, rtol=1e-6)
    # init.embedding_std is the tables' std: their own draw is N(0, 1).
    _, _, wide = _initial(setup, **{"init.embedding_std": 0.5})
    for table in ("embed/embedding", "pos/embedding"):
        np.testing.assert_allclose(flatten(wide)[table], 0.5 * plain[table], rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.width=30", "model.heads=4"], "model.width=30 is not divisible by model.heads=4"),
        (["model.kind=mlp"], "data.name=recall holds token sequences: model.kind=mlp"),
        (["model.kind=resmlp", "data.name=gaussian"], None),  # fine: the control
        (["data.name=gaussian"], "model.kind=transformer reads token sequences"),
        (["init.residual=fixup"], "init.residual=t_fixup"),
        (["init.residual=t_fixup"], "needs model.norm=none"),
        (["model.kind=resmlp", "data.name=gaussian", "init.residual=t_fixup"], "transformer"),
        (["data.pairs=5"], "data.pairs=5 distinct keys need data.key_vocab >= 5"),
        (["space.model.width={low: 16, high: 64}"], "give a list of widths"),
    ],
)
def test_bad_combinations_are_one_line_errors(overrides, message):
    if message is None:
        load_config([*TRANS, *overrides])
        return
    with pytest.raises(ConfigError, match=message) as error:
        load_config([*TRANS, *overrides])
    assert "\n" not in str(error.value)


def test_rules_and_forward_constants_export_to_each_framework():
    spec = TrialSpec.of_config(load_config([*TRANS, "model.depth=8"]))
    entry = spec.with_values(
        {"init.residual": "gpt2", "model.attention_scale": "1/d", "init.embedding_std": 0.02}
    ).nested()
    plain = export.init_spec(entry)
    assert export.init_spec(entry, "blocks/3/attn/out").gain == pytest.approx(plain.gain / 4)
    assert export.init_spec(entry, "blocks/3/attn/value").gain == pytest.approx(plain.gain)
    assert "embed/embedding" not in export.rule_layers(entry)  # drawn in the note instead
    for framework, table in (
        ("torch", "torch.nn.init.normal_(embedding.weight, mean=0.0, std=0.02)"),
        ("flax", "jax.nn.initializers.normal(0.02)"),
        ("keras", "RandomNormal(stddev=0.02)"),
    ):
        text = export.snippet(entry, framework)
        assert table in text and "logits = 0.125 * q.k" in text, framework
        assert '"blocks*/mlp/fc2"' in text and "alpha = 1, skip = 1" in text
    fixup = spec.with_values({"init.residual": "t_fixup", "model.norm": "none"}).nested()
    assert f"N(0, {72**-0.25:.6g}^2)" in export.snippet(fixup, "torch")  # (9 x 8)^(-1/4)


@pytest.mark.slow
def test_a_transformer_sweep_logs_attention_diagnostics_and_best_exports_it(tmp_path):
    runs = tmp_path / "runs"
    args = [*TRANS, "model.depth=2", "study.name=tr", "study.sampler=grid", "study.n_trials=2"]
    args += ["space.init.gain=1.0", "space.train.learning_rate=0.05"]  # BASE's ranges fixed
    space = "space={model: {attention_scale: [1/sqrt(d), none]}}"
    run_main(tmp_path, "sweep", *args, space, "tracking.figures=wait")
    best = tmp_path / "best.yaml"
    out = run_main(tmp_path, "best", "study.name=tr", "--out", str(best), "--format", "torch")
    report = run_main(tmp_path, "train", "--config", str(best), "--json").stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tr")
    children = client.search_runs([experiment.experiment_id], "tags.trial_number != ''")
    by_scale = {r.data.params["model.attention_scale"]: r.data.metrics for r in children}
    assert len(children) == 2 and set(by_scale) == {"1/sqrt(d)", "none"}
    assert (
        by_scale["none"]["diag.init.logit_std"] > 2 * by_scale["1/sqrt(d)"]["diag.init.logit_std"]
    )
    for metrics in by_scale.values():  # theory beside the measurement, in every child run
        assert metrics["theory.logit_std"] > 0 and 0 < metrics["diag.init.attention_entropy"] <= 1
    assert (runs / "tr" / "attention_scales.png").exists()
    assert "model.kind=transformer" in out.stdout and "embedding.weight" in out.stdout
    report = json.loads(report[report.index("{") :])
    assert 0 < report["diag.init.attention_entropy"] <= 1
    assert report["theory.logit_std"] > 0 and report["diag.init.logit_std"] > 0
