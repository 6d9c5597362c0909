"""Best configs in Flax, Keras and PyTorch: same distribution, scale and fan mode as ours.

Every check runs in Flax's kernel layout ``(*window, in, out)``; torch weights ``(out, in,
*window)`` are transposed back first. Tolerances (stated where used): the sample std within 5% of
``expected_std`` (its standard error is at most 1.1% for the smallest kernel here, 4608 values),
the mean within 5 standard errors of 0, the kurtosis within 0.35 of the draw's (normal 3,
truncated at 2 std 2.37, uniform 1.8: a normal/truncated/uniform mix-up fails). All shapes have
fan_in != fan_out (ratios 2, 3 and 2), so a fan-mode mistake moves the std by >= 41%.
"""

import importlib.util
import math
import os
import re

import jax
import numpy as np
import optuna
import pytest
import yaml
from conftest import TINY, run_main

from pipeline.config import load_config
from pipeline.core.initializers import (
    BIAS_INITS,
    INITIALIZERS,
    compute_fans,
    expected_std,
    make_initializer,
    torch_bias_std,
    weight_scale,
)
from pipeline.reuse import export
from pipeline.search.study import make_storage, trial_spec
from pipeline.tracking import run_name

os.environ.setdefault("KERAS_BACKEND", "jax")

SHAPES = [(64, 128), (300, 100), (3, 3, 16, 32)]
PARAMS = {"mode": "fan_in", "std": 0.05, "limit": 0.1, "value": 0.2}
GAIN = 1.3
STD_RTOL = 0.05
KURTOSIS_ATOL = 0.35
KURTOSIS = {"normal": 3.0, "truncated_normal": 2.3655, "uniform": 1.8}
FRAMEWORKS = ["ours", "flax", "keras", "torch"]
HAS = {
    "keras": importlib.util.find_spec("keras") is not None,
    "torch": importlib.util.find_spec("torch") is not None,
}


def need(framework: str) -> None:
    if framework in HAS and not HAS[framework]:
        pytest.skip(f"{framework} is not installed (pip install -e '.[{framework}]')")


def make_cfg(weights, gain=GAIN, activation="relu", negative_slope=0.01, **init):
    return load_config(
        [
            f"init.weights={weights}",
            f"init.gain={gain}",
            f"model.activation={activation}",
            f"model.negative_slope={negative_slope}",
            *(f"init.{k}={v}" for k, v in {**PARAMS, **init}.items()),
        ]
    )


def torch_module(shape):
    import torch.nn as nn

    *window, n_in, n_out = shape
    if not window:
        return nn.Linear(n_in, n_out)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(window)]
    return conv(n_in, n_out, tuple(window))


def from_torch(weight) -> np.ndarray:
    """torch's (out, in, *window) -> Flax's (*window, in, out)."""
    w = weight.detach().numpy()
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def sample(framework: str, cfg, shape, seed: int = 0) -> np.ndarray:
    """A kernel of ``shape`` (Flax layout) drawn by ``framework`` for ``cfg``."""
    key = jax.random.key(seed)
    if framework == "ours":
        s = export.init_spec(cfg)
        params = {"mode": s.mode, "std": s.std, "limit": s.limit, "value": s.value}
        return np.asarray(make_initializer(s.weights, s.gain, params)(key, shape))
    if framework == "flax":
        kernel_init, _ = export.to_flax(cfg)
        return np.asarray(kernel_init(key, shape, np.float32))
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(seed)
        return np.asarray(export.to_keras(cfg)(shape, dtype="float32"))
    import torch

    torch.manual_seed(seed)
    module = export.to_torch(cfg)(torch_module(shape))
    return from_torch(module.weight)


def kurtosis(w: np.ndarray) -> float:
    z = (w - w.mean()) / w.std()
    return float(np.mean(z**4))


def check_kernel(w: np.ndarray, weights: str, shape, gain: float, params: dict) -> None:
    """Our definition of ``weights``: std, mean, distribution, limits; orthogonality."""
    assert w.shape == tuple(shape)
    draw = INITIALIZERS[weights].draw
    scale = weight_scale(weights, compute_fans(shape), gain, params)
    if draw == "constant":
        np.testing.assert_allclose(w, scale, rtol=1e-6)
        return
    if draw == "orthogonal":
        m = w.reshape(-1, shape[-1]).astype(np.float64)
        gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-4 * gain**2)
        return
    want = expected_std(weights, shape, gain, params)
    assert w.std() == pytest.approx(want, rel=STD_RTOL)
    assert abs(w.mean()) < 5 * want / math.sqrt(w.size)
    assert kurtosis(w) == pytest.approx(KURTOSIS[draw], abs=KURTOSIS_ATOL)
    if draw == "uniform":  # U(-scale, scale): inside the limit and reaching it
        assert np.abs(w).max() <= scale * (1 + 1e-6) and np.abs(w).max() > 0.98 * scale
    if draw == "truncated_normal":  # cut at 2 std of the untruncated normal
        assert np.abs(w).max() <= 2 * scale * (1 + 1e-6) and np.abs(w).max() > 1.9 * scale


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weights", sorted(export.EXPORTABLE))
def test_every_initializer_matches_ours(weights, shape, framework):
    need(framework)
    cfg = make_cfg(weights)
    if weights not in export.EXPORTABLE:
        with pytest.raises(ValueError, match=weights):
            sample(framework, cfg, shape)
        return
    check_kernel(sample(framework, cfg, shape), weights, shape, GAIN, PARAMS)


FAN_DEPENDENT = sorted(w for w, (_, fan) in export.VARIANCE_SCALING.items() if fan is None)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weights", FAN_DEPENDENT)
def test_fan_out_mode(weights, shape, framework):
    need(framework)
    params = {**PARAMS, "mode": "fan_out"}
    w = sample(framework, make_cfg(weights, mode="fan_out"), shape)
    check_kernel(w, weights, shape, GAIN, params)
    # The planted alternative: the fan_in std is at least sqrt(2) away, far outside 5%.
    wrong = expected_std(weights, shape, GAIN, PARAMS)
    assert abs(w.std() / wrong - 1) > 3 * STD_RTOL


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "weights, activation",
    [
        ("he_normal", "tanh"),
        ("he_uniform", "leaky_relu"),
        ("kaiming_normal", "selu"),
        ("lecun_normal", "relu"),
        ("he_normal", "gelu"),
        ("glorot_uniform", "tanh"),
        ("orthogonal", "relu"),
    ],
)
def test_gain_auto_matches_the_activation(weights, activation, framework):
    need(framework)
    cfg = make_cfg(weights, gain="auto", activation=activation, negative_slope=0.2)
    spec = export.init_spec(cfg)
    shape = (300, 100)
    check_kernel(sample(framework, cfg, shape), weights, shape, spec.gain, PARAMS)


@pytest.mark.parametrize("shape", [(300, 100), (3, 3, 16, 32)], ids=["dense", "conv"])
@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
def test_framework_defaults_are_what_the_framework_draws(framework, shape):
    """``<framework>_default`` at gain 1 has the std and distribution of the framework's own
    untouched layer (PyTorch's kaiming_uniform_(a=sqrt(5)) and U(+-1/sqrt(fan_in)) bias; Flax's
    lecun_normal; Keras' glorot_uniform), read from a layer built with no initializer given."""
    need(framework)
    name = f"{framework}_default"
    *window, n_in, n_out = shape
    if framework == "torch":
        import torch

        torch.manual_seed(0)
        module = torch_module(shape)
        w, b = from_torch(module.weight), module.bias.detach().numpy()
        fan_in = compute_fans(shape).fan_in
        assert b.std() == pytest.approx(torch_bias_std(fan_in), rel=0.25)  # few biases
    elif framework == "flax":
        import flax.linen as nn

        layer = nn.Conv(n_out, tuple(window)) if window else nn.Dense(n_out)
        x = np.zeros((1, *([5] * len(window)), n_in), np.float32)
        params = layer.init(jax.random.key(0), x)["params"]
        w = np.asarray(params["kernel"])
        assert not np.asarray(params["bias"]).any()
    else:
        import keras

        keras.utils.set_random_seed(0)
        layer = keras.layers.Conv2D(n_out, tuple(window)) if window else keras.layers.Dense(n_out)
        layer.build((None, *([5] * len(window)), n_in))
        w = np.asarray(layer.kernel)
        assert not np.asarray(layer.bias).any()
    check_kernel(w, name, shape, 1.0, {**PARAMS, "mode": "fan_out"})


def test_torch_nonlinearity_names_have_our_gains():
    need("torch")
    import torch

    from pipeline.core.activations import recommended_gain

    for ours, theirs in export.TORCH_NONLINEARITY.items():
        param = 0.2 if theirs == "leaky_relu" else None
        assert torch.nn.init.calculate_gain(theirs, param) == pytest.approx(
            recommended_gain(ours, 0.2), rel=1e-12
        ), ours


def test_he_with_gain_auto_is_torch_kaiming_with_the_activation():
    cfg = make_cfg("he_normal", gain="auto", activation="leaky_relu", negative_slope=0.2)
    call, multiplier = export.torch_kernel(export.init_spec(cfg))
    assert call.kwargs == {"a": 0.2, "mode": "fan_in", "nonlinearity": "leaky_relu"}
    assert multiplier == 1.0
    call, multiplier = export.torch_kernel(export.init_spec(make_cfg("he_normal", gain=1.5)))
    assert call.kwargs["nonlinearity"] == "relu" and multiplier == 1.5


@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
@pytest.mark.parametrize("weights", ["he_normal", "torch_default"])
@pytest.mark.parametrize("bias", BIAS_INITS)
def test_bias(bias, weights, framework):
    need(framework)
    cfg = make_cfg(weights, bias=bias, bias_value=0.3, bias_std=0.02)
    n, fan_in = 8192, 4
    if framework == "flax":
        b = np.asarray(export.to_flax(cfg, fan_in=fan_in)[1](jax.random.key(0), (n,), np.float32))
    elif framework == "keras":
        b = np.asarray(export.to_keras(cfg, bias=True, fan_in=fan_in)((n,), dtype="float32"))
    else:
        b = export.to_torch(cfg)(torch_module((fan_in, n))).bias.detach().numpy()
    torch_bias = bias == "torch_default" or (bias == "auto" and weights == "torch_default")
    if bias == "normal" or torch_bias:
        # PyTorch's default bias is exactly U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in).
        std = torch_bias_std(fan_in) if torch_bias else 0.02
        assert b.std() == pytest.approx(std, rel=STD_RTOL)
        assert abs(b.mean()) < 5 * std / math.sqrt(n)
        want_kurtosis = KURTOSIS["uniform" if torch_bias else "normal"]
        assert kurtosis(b) == pytest.approx(want_kurtosis, abs=KURTOSIS_ATOL)
    else:
        np.testing.assert_allclose(b, 0.3 if bias == "constant" else 0.0, rtol=1e-6)


def test_to_torch_reaches_nested_layers_and_conv1d():
    need("torch")
    import torch.nn as nn

    cfg = make_cfg("lecun_uniform", gain=1.0, mode="fan_out")
    model = nn.Sequential(nn.Conv1d(16, 48, 5), nn.ReLU(), nn.Sequential(nn.Linear(300, 100)))
    export.to_torch(cfg)(model)
    check_kernel(from_torch(model[0].weight), "lecun_uniform", (5, 16, 48), 1.0, cfg.init)
    check_kernel(from_torch(model[2][0].weight), "lecun_uniform", (300, 100), 1.0, cfg.init)


def test_best_entry_and_run_config_give_the_same_spec(tiny_cfg):
    cfg = tiny_cfg("init.weights=he_uniform", "init.gain=auto", "model.activation=tanh")
    entry = {
        "init": {**dict(cfg.init), "gain_value": 5 / 3 / math.sqrt(2)},
        "model": dict(cfg.model),
    }
    from_run, from_entry = export.init_spec(cfg), export.init_spec(entry)
    assert from_run.gain == pytest.approx(from_entry.gain, rel=1e-12)
    assert from_run._replace(gain=0.0) == from_entry._replace(gain=0.0)
    # A partial dict takes the conf/config.yaml defaults for what it leaves out.
    partial = {"init": {"weights": "he_uniform", "gain": "auto"}, "model": {"activation": "tanh"}}
    full = load_config(["init.weights=he_uniform", "init.gain=auto", "model.activation=tanh"])
    assert export.init_spec(partial) == export.init_spec(full)


def test_every_data_free_initializer_but_delta_orthogonal_is_exportable():
    # Neither Keras nor torch.nn.init has delta-orthogonal (Xiao et al. 2018) built in.
    data_free = {n for n, spec in INITIALIZERS.items() if not spec.data_dependent}
    assert data_free - {"delta_orthogonal"} == set(export.EXPORTABLE)


def test_an_initializer_without_equivalent_is_named():
    # A data-dependent initializer (LSUV, Mishkin & Matas 2016) has no framework equivalent.
    entry = {"init": {"weights": "lsuv", "gain_value": 1.0}, "model": {"activation": "relu"}}
    for framework in export.FORMATS:
        with pytest.raises(ValueError, match="'lsuv' has no exact equivalent"):
            export.snippet(entry, framework)
    for build in (export.to_flax, export.to_keras, export.to_torch):
        with pytest.raises(ValueError, match="'lsuv' has no exact equivalent"):
            build(entry)


# --- snippets -------------------------------------------------------------------------------


def run_snippet(code: str, framework: str, shape, seed: int = 0) -> np.ndarray:
    """exec() a snippet and draw one kernel with what it defines."""
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    if framework == "flax":
        return np.asarray(namespace["kernel_init"](jax.random.key(seed), shape, np.float32))
    if framework == "keras":
        return np.asarray(namespace["kernel_initializer"](shape, dtype="float32"))
    import torch

    torch.manual_seed(seed)
    return from_torch(namespace["init_weights"](torch_module(shape)).weight)


SNIPPET_CASES = [
    ("he_normal", "auto", "tanh", {}),
    ("he_uniform", 1.5, "relu", {"mode": "fan_out"}),
    ("lecun_uniform", 0.8, "selu", {}),
    ("glorot_normal", 2.0, "relu", {}),
    ("orthogonal", 1.2, "relu", {}),
    ("truncated_normal", 2.0, "relu", {}),
    ("uniform", 1.0, "relu", {}),
    ("constant", 1.0, "relu", {}),
    ("torch_default", 1.0, "relu", {"bias": "auto"}),
    ("flax_default", 1.4, "tanh", {"mode": "fan_out"}),  # the framework defaults ignore mode
    ("keras_default", 1.0, "relu", {}),
]


@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
@pytest.mark.parametrize("weights, gain, activation, init", SNIPPET_CASES)
def test_snippet_builds_the_same_weights(weights, gain, activation, init, framework):
    need(framework)
    cfg = make_cfg(weights, gain=gain, activation=activation, **init)
    code = export.snippet(cfg, framework, "a title")
    assert code.startswith("# a title\n")
    spec = export.init_spec(cfg)
    params = {**PARAMS, **init}
    shape = (3, 3, 16, 32)
    check_kernel(run_snippet(code, framework, shape), weights, shape, spec.gain, params)


def test_snippet_reads_like_the_framework_api():
    cfg = make_cfg("he_normal", gain=1.0)
    assert 'variance_scaling(scale=2.0, mode="fan_in", distribution="normal")' in export.snippet(
        cfg, "flax"
    )
    assert (
        'VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")'
        in export.snippet(cfg, "keras")
    )
    assert 'kaiming_normal_(m.weight, a=0.0, mode="fan_in", nonlinearity="relu")' in export.snippet(
        cfg, "torch"
    )
    with pytest.raises(ValueError, match="allowed: flax, keras, torch"):
        export.snippet(cfg, "jaxlib")


# --- end to end: a tiny study, `best --format`, the sweep's verdict ------------------------


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    args = [
        *TINY,
        "model.depth=2",
        "space.model.depth=[2]",
        "space.model.activation=[relu, tanh]",
        "space.init.weights=[he_normal, glorot_uniform, lecun_uniform, orthogonal, normal]",
        "study.batch_size=4",
        "study.n_trials=8",
        "study.top_k=3",
        "study.name=export",
        "tracking.enabled=false",
        "train.learning_rate=0.2",  # some trials reach the target in 60 steps, some do not
        "train.target_loss=2.2",
    ]
    out = run_main(tmp, "sweep", *args)
    return tmp, out


@pytest.mark.slow
def test_sweep_ends_with_the_answer_per_network(tiny_study):
    from pipeline.reports.answer_text import answer_text
    from pipeline.reports.recommend import recommendations

    tmp, out = tiny_study
    study = optuna.load_study(
        study_name="export", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    assert len(study.trials) == 8
    # The answer recomputed from the study's storage is what the sweep printed, whole.
    document = recommendations(study)
    assert [n["network"] for n in document["networks"]] == ["mlp·relu·d2", "mlp·tanh·d2"]
    assert answer_text(document) in out.stderr
    assert "verdict per initializer family" not in out.stderr  # pooled networks: gone


@pytest.mark.slow
def test_progress_shows_the_best_so_far_with_its_config(tiny_study):
    tmp, out = tiny_study
    study = optuna.load_study(
        study_name="export", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    best = min(t.user_attrs["metrics"]["steps_to_target"] for t in study.trials)
    assert best <= 60, "the fixture should reach its target"
    # The progress line's last state, e.g. "best 23 steps he_normal·tanh·d2·g1.41".
    steps, name = re.findall(r"best (\d+) steps (\S+)", out.stderr)[-1]
    assert int(steps) == best
    names = {
        run_name(trial_spec(study, t))
        for t in study.trials
        if t.user_attrs["metrics"]["steps_to_target"] == best
    }
    assert name in names


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
def test_best_format_prints_runnable_snippets(tiny_study, framework):
    need(framework)
    tmp, _ = tiny_study
    out = run_main(
        tmp,
        "best",
        "study.name=export",
        "tracking.enabled=false",
        "--top",
        "3",
        "--format",
        framework,
        "--out",
        str(tmp / f"best_{framework}.yaml"),
    )
    configs = yaml.safe_load((tmp / f"best_{framework}.yaml").read_text())["configs"]
    blocks = re.split(r"^(?=# --- rank )", out.stdout, flags=re.M)
    blocks = [b for b in blocks if b.strip()]
    # The answers first (one per network with a recommendation), then the top 3 trials.
    assert len(blocks) == len(configs)
    sources = [c["source"] for c in configs]
    assert sources.count("top trial") == 3 and sources[-3:] == ["top trial"] * 3
    shape = (300, 100)
    for rank, (code, entry) in enumerate(zip(blocks, configs)):
        assert code.startswith(f"# --- rank {rank}: {entry['init']['weights']}·")
        params = {k: entry["init"][k] for k in ("mode", "std", "limit", "value")}
        w = run_snippet(code, framework, shape)
        check_kernel(w, entry["init"]["weights"], shape, entry["init"]["gain_value"], params)


# init.rules: per-layer initializers in every framework, each the sweep's per-path init.
RULED = {
    "init": {
        "weights": "he_normal",
        "gain": 1.0,
        "rules": [
            {"match": "*/kernel", "weights": "glorot_uniform"},
            {"match": "head/kernel", "scale": 0},
            {"match": "blocks/*/out_proj/kernel", "scale": "1/sqrt(2*depth)"},
            {"match": "blocks/*/out_proj/bias", "bias": "constant", "bias_value": 0.3},
        ],
    },
    "model": {"activation": "relu", "negative_slope": 0.01, "depth": 8, "width": 128},
}
# layer path -> (Flax kernel shape, kernel multiplier, bias value)
RULED_LAYERS = {
    "embed": ((64, 128), 1.0, 0.0),
    "blocks/0/out_proj": ((128, 256), 0.25, 0.3),  # 1/sqrt(2 * 8)
    "head": ((256, 10), 0.0, 0.0),
}


def ruled_torch_module():
    import torch.nn as nn

    block = nn.Module()
    block.out_proj = nn.Linear(128, 256)
    model = nn.Module()
    model.embed, model.blocks, model.head = (
        nn.Linear(64, 128),
        nn.ModuleList([block]),
        nn.Linear(256, 10),
    )
    return model


def check_ruled(kernels: dict, biases: dict) -> None:
    for layer, (shape, multiplier, bias) in RULED_LAYERS.items():
        w = np.asarray(kernels[layer])
        if multiplier == 0.0:
            assert w.shape == shape and not w.any(), layer
        else:
            check_kernel(w, "glorot_uniform", shape, multiplier, PARAMS)
        np.testing.assert_allclose(np.asarray(biases[layer]), bias, atol=1e-7)


@pytest.mark.parametrize("framework", ["ours", "flax", "keras", "torch"])
def test_rules_give_each_layer_its_own_initializer_in_every_framework(framework):
    need(framework)
    import pipeline

    kernels, biases = {}, {}
    if framework == "torch":
        import torch

        torch.manual_seed(0)
        model = export.to_torch(RULED)(ruled_torch_module())
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                kernels[export.torch_path(name)] = from_torch(m.weight)
                biases[export.torch_path(name)] = m.bias.detach().numpy()
        return check_ruled(kernels, biases)
    for layer, (shape, _, _) in RULED_LAYERS.items():
        key = jax.random.key(1)
        if framework == "ours":
            entry_file = {"configs": [RULED]}
            path = pipeline.reuse.best.write_best(entry_file, _tmp() / "ruled.yaml")
            kernels[layer] = pipeline.load_initializer(path, param=f"{layer}/kernel")(key, shape)
            biases[layer] = export.to_flax(RULED, layer)[1](key, shape[-1:], np.float32)
        elif framework == "flax":
            kernel_init, bias_init = export.to_flax(RULED, layer)
            kernels[layer] = kernel_init(key, shape, np.float32)
            biases[layer] = bias_init(key, shape[-1:], np.float32)
        else:
            kernels[layer] = export.to_keras(RULED, layer=layer)(shape, dtype="float32")
            biases[layer] = export.to_keras(RULED, bias=True, layer=layer)(shape[-1:])
    check_ruled(kernels, biases)


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
def test_a_rule_bearing_snippet_builds_the_same_layers(framework):
    need(framework)
    code = export.snippet(RULED, framework, "rules")
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    kernels, biases = {}, {}
    if framework == "torch":
        import torch

        torch.manual_seed(0)
        model = namespace["init_weights"](ruled_torch_module())
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                kernels[export.torch_path(name)] = from_torch(m.weight)
                biases[export.torch_path(name)] = m.bias.detach().numpy()
        return check_ruled(kernels, biases)
    lookup = namespace["inits_for" if framework == "flax" else "initializers_for"]
    for layer, (shape, _, _) in RULED_LAYERS.items():
        kernel, bias = lookup(layer)
        if framework == "flax":
            kernels[layer] = kernel(jax.random.key(2), shape, np.float32)
            biases[layer] = bias(jax.random.key(2), shape[-1:], np.float32)
        else:
            kernels[layer], biases[layer] = kernel(shape, dtype="float32"), bias(shape[-1:])
    check_ruled(kernels, biases)
