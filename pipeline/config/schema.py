"""The schema: every config key declared once, with its type, default, allowed values, doc and role.

Validation (``pipeline.config.load``), ``python -m pipeline keys``, docs/configuration.md's table,
the ``TrialSpec`` and the engine's per-row traced numbers are all derived from the dataclasses
below; nothing else lists keys. A key is one field::

    depth: int = key(8, int_in(1, MAX_DEPTH), "hidden layers", STRUCTURAL)

Roles say what a value does to the engine:

- ``structural``: searchable; a new value is a new executable (trials are grouped by them);
- ``traced``: searchable; a per-row number inside one executable (``row=True``: handed to the
  core as it is, as ``hp.values[<dotted key>]``; else the engine derives numbers from it);
- ``setting``: the same for every trial of a study, part of each trial's spec (steps, data, ...);
- ``bookkeeping``: how the study runs (storage, tracking, engine), not part of a trial.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pipeline.core.names import (
    ACTIVATION_NAMES,
    ATTENTION_SCALES,
    BIAS_INITS,
    FAN_MODES,
    FRAMEWORK_DEFAULTS,
    INITIALIZER_NAMES,
    KINDS,
    OPTIMIZERS,
)
from pipeline.core.parametrization import PARAMETRIZATIONS
from pipeline.core.residual import INIT_RESIDUALS, NORMS
from pipeline.core.rules import OVERRIDES, rules_problem

STRUCTURAL, TRACED, SETTING, BOOKKEEPING = "structural", "traced", "setting", "bookkeeping"
DATASETS = ("gaussian", "digits", "recall", "npz", "custom")
DATA_FILES = ("npz", "custom")  # a user's data: hashed into data.sha256 when loaded
TASKS = ("classification", "regression")
# Optuna's samplers and pruners by name; pipeline.search.samplers holds one factory per name.
SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsgaii")
DESIGNS = ("grid", "search")
PRUNERS = ("none", "median", "hyperband")
OBJECTIVES = ("steps_to_target", "explosion_count")
FIGURES = ("background", "wait", "off")
READOUTS = ("default", "zero")
MAX_DEPTH = 1024


class ConfigError(ValueError):
    """Bad configuration input; ``str(error)`` is the one line shown to the user."""


class Rule(NamedTuple):
    """A value check and the words that say what it accepts (shown in every error)."""

    ok: Callable[[Any], bool]
    expected: str
    explain: Callable[[Any], str | None] | None = None  # the specific problem of a bad value


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_in(lo: int, hi: int | None = None) -> Rule:
    text = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
    return Rule(lambda v: _int(v) and v >= lo and (hi is None or v <= hi), text)


def number(lo: float | None = None, hi: float | None = None, lo_open=True, hi_open=False) -> Rule:
    def ok(v: Any) -> bool:
        if not _number(v):
            return False
        above = lo is None or (v > lo if lo_open else v >= lo)
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below

    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return Rule(ok, "a number " + " and ".join(parts) if parts else "a finite number")


class Choice(Rule):
    """``one_of``'s rule; it keeps its ``names`` so that an error can say which one was meant."""

    names: tuple[str, ...] = ()  # set by one_of (a NamedTuple's fields are fixed)


def one_of(names: Iterable[str]) -> Rule:
    names = tuple(names)
    expected = "one of " + ", ".join(names)
    # the space's errors read explain (they name the key before it); check_value adds the key
    rule = Choice(
        lambda v: v in names,
        expected,
        lambda v: f"{v!r} is invalid: expected {expected}{did_you_mean(v, names)}",
    )
    rule.names = names
    return rule


def did_you_mean(word: Any, names: Iterable[str], prefixes: bool = True) -> str:
    """``"; did you mean a, b?"`` for a mistyped name, or ``""``: the names ``word`` begins
    (``he`` for he_normal, he_uniform; with ``prefixes``), then spellings close to it."""
    if not isinstance(word, str) or not word:
        return ""
    names = list(names)
    begun = [n for n in names if n.lower().startswith(word.lower())] if prefixes else []
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    matches = list(dict.fromkeys(begun + close))[: max(3, len(begun))]
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def or_null(rule: Rule, meaning: str) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null ({meaning}) or {rule.expected}")


def or_auto(rule: Rule, meaning: str = "") -> Rule:
    said = f"auto ({meaning})" if meaning else "auto"
    return Rule(lambda v: v == "auto" or rule.ok(v), f"{rule.expected} or {said}")


BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
FOLDER = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a folder path")
FILE = Rule(lambda v: isinstance(v, str) and v.strip() != "" and "\0" not in v, "a file path")
SHA256 = Rule(
    lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
    "64 lowercase hex digits",
)


def _url(schemes: tuple[str, ...]) -> Callable[[str], bool]:
    """A URL of one of ``schemes`` (``+driver`` allowed) with what that scheme needs after it."""

    def ok(v: str) -> bool:
        parts = urlsplit(v)
        scheme = parts.scheme.split("+")[0]
        if scheme not in schemes or any(c.isspace() for c in v):
            return False
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            return False
        if scheme in ("sqlite", "file"):
            return parts.path not in ("", "/")
        return parts.hostname is not None or (scheme == "postgresql" and "host=" in parts.query)

    return ok


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "http", "https", "file")
_storage_url, _tracking_url = _url(STORAGE_SCHEMES), _url(TRACKING_SCHEMES)

STORAGE = Rule(
    lambda v: (
        v is None
        or (isinstance(v, str) and v.strip() != "" and "://" not in v and "\0" not in v)
        or (isinstance(v, str) and _storage_url(v))
    ),
    "null, a journal file path, or a storage URL (sqlite:///file.db, "
    "postgresql://user:password@host:port/db, mysql://...)",
)
TRACKING_URI = Rule(
    lambda v: v is None or (isinstance(v, str) and _tracking_url(v)),
    "null or a tracking URI (sqlite:///file.db, http://host:port, file:///folder, "
    "postgresql://...)",
)
STUDY_NAME = Rule(
    lambda v: (
        isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v) is not None
    ),
    "a name of letters, digits, '_', '.' or '-'",
)
OBJECTIVE_LIST = Rule(
    lambda v: (
        isinstance(v, list | tuple)
        and 0 < len(v) == len(set(v))
        and all(o in OBJECTIVES for o in v)
    ),
    "a non-empty list of distinct names from " + ", ".join(OBJECTIVES),
)
DEPTH_BUCKETS = or_auto(
    Rule(
        lambda v: (
            isinstance(v, list | tuple)
            and len(v) > 0
            and all(_int(d) and d >= 1 for d in v)
            and list(v) == sorted(set(v))
        ),
        "a non-empty increasing list of positive integers",
    )
)


def function_ref(example: str) -> Rule:
    """``<module>:<function>``, imported as Python would from the current folder."""
    return Rule(
        lambda v: (
            isinstance(v, str) and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v) is not None
        ),
        f"<module>:<function>, e.g. {example}",
    )


FACTORY, LOADER = function_ref("examples.resnet:make_model"), function_ref("examples.loaders:wine")


def _override_problem(name: str, value: Any) -> str | None:
    """The problem of one rule override's value, by the rule of ``init.<name>``."""
    rule = RULES[f"init.{name}"]
    if rule.ok(value):
        return None
    hint = did_you_mean(value, rule.names) if isinstance(rule, Choice) else ""
    return f"{name}={value!r} is invalid: expected {rule.expected}{hint}"


RULE_SET = Rule(
    lambda v: rules_problem(v, _override_problem) is None,
    "a list of {match: <glob over parameter paths>, <override>: value} mappings, overrides: "
    + ", ".join(OVERRIDES),
    lambda v: rules_problem(v, _override_problem),
)


def key(default: Any, rule: Rule, doc: str, role: str = BOOKKEEPING, row: bool = False) -> Any:
    """One config key: a dataclass field whose metadata carries what the schema knows of it.
    ``row``: a traced number the core reads per row as it is (``hp.values[<dotted key>]``)."""
    meta = {"rule": rule, "doc": doc, "role": role, "row": row}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# --- the keys, by section ------------------------------------------------------------------------
# Sections of a trial are frozen: the typed config is read-only once loaded.


@dataclass(frozen=True)
class Data:
    name: str = key(
        "gaussian",
        one_of(DATASETS),
        "gaussian clusters, 8x8 digits, associative recall (token sequences, for "
        "model.kind=transformer), your .npz file, or your loader (data.loader)",
        SETTING,
    )
    classes: int = key(10, int_in(2, 10_000), "gaussian: number of classes", SETTING)
    features: int = key(32, int_in(1, 100_000), "gaussian: input dimensions", SETTING)
    samples: int = key(2048, int_in(2, 10_000_000), "gaussian, recall: training samples", SETTING)
    val_samples: int = key(
        512, int_in(1, 10_000_000), "gaussian, recall: validation samples", SETTING
    )
    separation: float = key(
        6.0, number(0.0), "gaussian: distance between cluster means, in noise stds", SETTING
    )
    clusters_per_class: int = key(
        4, int_in(1), "gaussian: >1 makes classes not linearly separable", SETTING
    )
    pairs: int = key(
        3,
        int_in(1, 512),
        "recall: key-value pairs before the query (sequence length 2 pairs + 1)",
        SETTING,
    )
    key_vocab: int = key(
        8, int_in(1, 100_000), "recall: distinct key tokens (>= data.pairs)", SETTING
    )
    value_vocab: int = key(
        8, int_in(2, 100_000), "recall: value tokens, the classes (chance 1/value_vocab)", SETTING
    )
    val_fraction: float = key(
        0.2, number(0.0, 1.0, hi_open=True), "digits: held-out share, stratified", SETTING
    )
    seed: int = key(0, int_in(0), "data generation and split", SETTING)
    path: str | None = key(
        None,
        or_null(FILE, "no file"),
        "npz: x_train, y_train and x_val, y_val or neither (then val_fraction is held out); "
        "resolved to an absolute path",
        SETTING,
    )
    loader: str | None = key(
        None,
        or_null(LOADER, "none"),
        "custom: a function returning {x_train, y_train[, x_val, y_val]} (it may take seed)",
        SETTING,
    )
    sha256: str | None = key(
        None,
        or_null(SHA256, "computed when loaded"),
        "npz, custom: SHA-256 of the file or of the loader's arrays, recorded in each trial's "
        "spec; set it to refuse changed data",
        SETTING,
    )
    task: str = key(
        "classification",
        one_of(TASKS),
        "npz, custom: integer labels and cross-entropy, or float targets and mean squared error",
        SETTING,
    )
    standardize_targets: bool = key(
        True,
        BOOL,
        "regression: targets standardized with training statistics (target_loss then reads as "
        "1 - R^2); false: the loss in the targets' own squared units",
        SETTING,
    )


@dataclass(frozen=True)
class Model:
    kind: str = key(
        "mlp",
        one_of(KINDS),
        "cnn: 3x3 convolutions, needs data.name=digits; resmlp: residual blocks (model.norm, "
        "init.residual); transformer: an encoder on data.name=recall (model.heads, "
        "model.attention_scale); custom: your module (model.factory)",
        STRUCTURAL,
    )
    factory: str | None = key(
        None,
        or_null(FACTORY, "none"),
        "model.kind=custom: the function that returns your Flax module",
        STRUCTURAL,
    )
    depth: int = key(8, int_in(1, MAX_DEPTH), "hidden layers (resmlp: residual blocks)", STRUCTURAL)
    width: int = key(
        64,
        int_in(1, 8192),
        "units (or channels) per hidden layer; transformer: d_model",
        STRUCTURAL,
    )
    base_width: int | None = key(
        None,
        or_null(int_in(1, 8192), "model.width"),
        "init.parametrization: the proxy width its multipliers are relative to (docs/mup.md)",
        TRACED,
    )
    base_depth: int | None = key(
        None,
        or_null(int_in(1, MAX_DEPTH), "model.depth"),
        "init.parametrization=depth_mup: the proxy depth its multipliers are relative to",
        TRACED,
    )
    heads: int = key(
        4, int_in(1, 1024), "transformer: attention heads (model.width divisible by it)", STRUCTURAL
    )
    attention_scale: str = key(
        "1/sqrt(d)",
        one_of(ATTENTION_SCALES),
        "transformer: attention logits = scale q.k, d = width / heads; init.parametrization=mup "
        "or depth_mup sets it (sqrt(d_base)/d: 1/d relative to model.base_width)",
        TRACED,
    )
    activation: str = key("relu", one_of(ACTIVATION_NAMES), "hidden-layer nonlinearity", STRUCTURAL)
    norm: str = key(
        "none",
        one_of(NORMS),
        "resmlp, transformer: LayerNorm on each branch's input (pre), RMSNorm there (rmsnorm), "
        "or LayerNorm after each sum (post)",
        STRUCTURAL,
    )
    negative_slope: float = key(
        0.01, number(0.0, lo_open=False), "leaky_relu only", TRACED, row=True
    )
    dropout: float = key(
        0.0,
        number(0.0, 1.0, lo_open=False, hi_open=True),
        "dropout rate after each hidden layer while training (a remedy)",
        TRACED,
        row=True,
    )


@dataclass(frozen=True)
class Init:
    weights: str = key("he_normal", one_of(INITIALIZER_NAMES), "the weight initializer", TRACED)
    gain: Any = key(
        1.0,
        or_auto(
            number(0.0),
            "torch's calculate_gain for the activation; 1 for the framework defaults and the "
            "absolute initializers",
        ),
        "multiplies the initializer's scale",
        TRACED,
    )
    mode: str = key("fan_in", one_of(FAN_MODES), "he_* and lecun_*: which fan", TRACED)
    std: float = key(0.01, number(0.0), "normal, truncated_normal: the std", TRACED)
    limit: float = key(0.05, number(0.0), "uniform: U(-limit, limit)", TRACED)
    value: float = key(0.0, number(), "constant: the value", TRACED)
    bias: str = key("zeros", one_of(BIAS_INITS), "the bias initializer", TRACED)
    bias_value: float = key(0.0, number(), "bias=constant: the value", TRACED)
    bias_std: float = key(0.01, number(0.0, lo_open=False), "bias=normal: the std", TRACED)
    rules: list = key(
        [],
        RULE_SET,
        "per-parameter overrides, in order: [{match: '*/out_proj/kernel', weights: zeros}]",
        TRACED,
    )
    residual: str = key(
        "none",
        one_of(INIT_RESIDUALS),
        "resmlp, transformer: the residual rule (docs/residual_mlp.md): branch "
        "multiplier, branch variances, learnable gate; t_fixup: transformer only",
        TRACED,
    )
    readout: str = key(
        "default",
        one_of(READOUTS),
        "zero: read-out kernel and bias at 0 (loss ln(classes))",
        TRACED,
    )
    parametrization: str = key(
        "sp",
        one_of(PARAMETRIZATIONS),
        "per-layer init and learning-rate multipliers relative to model.base_width (and "
        "base_depth): standard, muP, NTK, depth-muP (docs/mup.md)",
        TRACED,
    )
    embedding_std: float = key(
        1.0,
        number(0.0, lo_open=False),
        "transformer: std of the token and position tables (1: PyTorch's nn.Embedding; GPT-2's "
        "0.02 stalls with He-scaled branches: docs/transformer.md)",
        TRACED,
    )


@dataclass(frozen=True)
class Train:
    optimizer: str = key("sgd", one_of(OPTIMIZERS), "the optimizer", STRUCTURAL)
    learning_rate: float = key(0.05, number(0.0), "step size", TRACED, row=True)
    warmup_steps: int = key(
        0,
        int_in(0),
        "linear learning-rate warmup: step k uses lr min(1, (k+1)/warmup_steps); 0 = off",
        TRACED,
        row=True,
    )
    momentum: float = key(
        0.9, number(0.0, 1.0, lo_open=False, hi_open=True), "optimizer=momentum", TRACED, row=True
    )
    clip_norm: float | None = key(
        None, or_null(number(0.0), "off"), "gradient clipping by global norm", TRACED
    )
    weight_decay: float = key(
        0.0,
        number(0.0, lo_open=False),
        "L2 weight decay added to the gradient (for adam: L2, not AdamW)",
        TRACED,
        row=True,
    )
    batch_size: int = key(128, int_in(1), "mini-batch size", SETTING)
    steps: int = key(300, int_in(1), "training steps per trial", SETTING)
    seeds: int = key(
        1, int_in(1, 64), "seeds per trial; its metrics are medians over them", SETTING
    )
    seed: int = key(0, int_in(0), "base seed of initial weights and mini-batch order", SETTING)
    target_loss: float = key(
        0.7, number(0.0), "steps_to_target: first step whose smoothed loss is at most this", SETTING
    )
    eval_every_steps: int = key(
        50, int_in(1), "chunk length: validation, pruning and progress between chunks", SETTING
    )


@dataclass(frozen=True)
class Metrics:
    smoothing: float = key(
        0.9,
        number(0.0, 1.0, lo_open=False, hi_open=True),
        "EMA factor of the training loss",
        SETTING,
    )
    explode_threshold: float = key(
        1000.0, number(0.0), "a step explodes if its gradient norm is above (or NaN/Inf)", SETTING
    )
    vanish_threshold: float = key(
        1.0e-6, number(0.0), "a step vanishes if its first-layer gradient norm is below", SETTING
    )
    curve_every_steps: int = key(5, int_in(1), "points of the curves logged to MLflow", SETTING)
    diagnostics: bool = key(
        True, BOOL, "per-layer signal diagnostics and theory's prediction per trial", SETTING
    )


LR_LIMITS = Rule(
    lambda v: (
        isinstance(v, list | tuple)
        and len(v) == 2
        and all(_number(x) and x > 0 for x in v)
        and v[0] < v[1]
    ),
    "[low, high]: two positive numbers, low < high",
)


@dataclass(frozen=True)
class Study:
    name: str = key("default", STUDY_NAME, "the study (Optuna) and experiment (MLflow) name")
    design: str = key(
        "search",
        one_of(DESIGNS),
        "grid: every combination of the space's lists at every point of a log-spaced "
        "learning-rate grid over space.train.learning_rate (the same for every arm, common "
        "seeds), extended until each arm's basin has a failing edge on both sides "
        "(docs/recommendations.md); search: Optuna's sampler draws each trial from the space",
    )
    grid_per_decade: int = key(
        4, int_in(1, 20), "design=grid: learning rates per decade (4: quarter-decade steps)"
    )
    grid_limits: list[float] = key(
        [1.0e-4, 10.0],
        LR_LIMITS,
        "design=grid: the learning rates the grid may be extended to, no further",
    )
    n_trials: int = key(256, int_in(1), "finished trials the study runs up to (grid: a cap)")
    batch_size: int = key(64, int_in(1), "trials asked from Optuna and trained together")
    sampler: str = key("tpe", one_of(SAMPLERS), "Optuna's sampler")
    seed: int = key(0, int_in(0), "the sampler's seed")
    pruner: str = key("none", one_of(PRUNERS), "intermediate values are reported only to a pruner")
    objectives: list[str] = key(
        ["steps_to_target"], OBJECTIVE_LIST, "add explosion_count for a multi-objective study"
    )
    storage: str | None = key(
        None, STORAGE, "null = the journal file <runs_dir>/optuna.journal; or any Optuna URL"
    )
    top_k: int = key(5, int_in(1), "rows of the final table and of `make best`")
    lease_s: float = key(
        60.0, number(0.0), "a worker silent this long loses its RUNNING trials (re-enqueued)"
    )


@dataclass(frozen=True)
class Tracking:
    uri: str | None = key(None, TRACKING_URI, "null = sqlite:///<runs_dir>/mlflow.db")
    enabled: bool = key(True, BOOL, "log every trial to MLflow")
    figures: str = key(
        "background",
        one_of(FIGURES),
        "figures drawn by a process of their own after the command returns "
        "(runs/<study>/figures.pending while it works), before it ends, or not at all "
        "(make report draws them)",
    )


@dataclass(frozen=True)
class Engine:
    memory_gb: float | None = key(
        None,
        or_null(number(0.0), "auto"),
        "budget per compiled call (rows are split to fit); auto: a quarter of RAM (at most 8) "
        "on CPU, 60% of device memory on GPU",
    )
    depth_buckets: Any = key(
        "auto",
        DEPTH_BUCKETS,
        "trials are padded to the next bucket depth; auto: the space's depth list, else 2^k",
    )
    compilation_cache: bool = key(True, BOOL, "JAX's persistent compilation cache")
    cache_dir: str | None = key(
        None,
        or_null(FOLDER, "$JAX_COMPILATION_CACHE_DIR if set, else <runs_dir>/jax_cache"),
        "its folder",
    )
    cpu_devices: Any = key(
        "auto",
        or_auto(int_in(1, 1024), "one per core"),
        "on CPU: XLA devices the rows are sharded over",
    )
    unroll: int = key(1, int_in(1), "lax.scan unroll of the hidden-layer stack")
    merge_activations: str = key(
        "off",
        one_of(("call", "row", "off")),
        "the space's activations share one executable per depth bucket (mlp, cnn, resmlp), "
        "picked by a traced index: call = one activation per call (a branch), row = mixed in "
        "a call (every activation computed, the row's selected); off = an executable per "
        "activation, the default: measured at width 64 on a CPU, the switch cost more "
        "training CPU than the compiles it saved (workload W: -32 s of compiles, +66% training)",
    )
    stall_timeout_s: Any = key(
        "auto",
        or_auto(
            number(0.0),
            "20x the measured time of a call like it, at least 60 s; 300 s "
            "before any call was measured",
        ),
        "a compiled call with no result after this long is a stall: its trials fail and are "
        "re-enqueued, the command exits 3",
    )


@dataclass(frozen=True)
class Report:
    baseline: str = key(
        "torch_default",
        one_of(FRAMEWORK_DEFAULTS),
        "the framework default `recommend` compares each recommendation with, at gain 1 with "
        "its own bias, at its own tuned learning rate and at the recommendation's "
        "(space.init.weights must include it to be measured)",
    )
    tie_margin: float = key(
        0.1,
        number(0.0, 1.0, lo_open=False),
        "an arm ties with the best when the interval of its steps ratio to the best reaches 1, "
        "or the ratio is at most 1 + this (0.1: within 10%)",
    )


@dataclass
class Config:
    """The whole typed configuration (``load_config``); ``space`` is parsed into a ``Space``."""

    runs_dir: str = key("runs", FOLDER, "everything a run writes goes under here")
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    init: Init = field(default_factory=Init)
    train: Train = field(default_factory=Train)
    metrics: Metrics = field(default_factory=Metrics)
    study: Study = field(default_factory=Study)
    tracking: Tracking = field(default_factory=Tracking)
    engine: Engine = field(default_factory=Engine)
    report: Report = field(default_factory=Report)
    space: Any = field(default_factory=dict)


# The sections that define one training run: a TrialSpec, a best-config entry, what `train` reads.
RUN_SECTIONS = ("data", "model", "init", "train", "metrics")


class KeyInfo(NamedTuple):
    name: str  # the dotted key, e.g. "model.depth"
    type: Any
    default: Any
    rule: Rule
    doc: str
    role: str
    row: bool


def _keys() -> dict[str, KeyInfo]:
    out = {}
    for section in fields(Config):
        if section.name == "space":
            continue
        if section.metadata:  # a top-level key (runs_dir)
            out[section.name] = _info(section.name, section)
            continue
        for f in fields(
            section.type if isinstance(section.type, type) else globals()[section.type]
        ):
            out[f"{section.name}.{f.name}"] = _info(f"{section.name}.{f.name}", f)
    return out


def _info(name: str, f) -> KeyInfo:
    default = f.default_factory() if f.default is MISSING else f.default
    m = f.metadata
    return KeyInfo(name, f.type, default, m["rule"], m["doc"], m["role"], m["row"])


SCHEMA: dict[str, KeyInfo] = _keys()
RULES: dict[str, Rule] = {k: v.rule for k, v in SCHEMA.items()}
DEFAULTS: dict[str, Any] = {k: v.default for k, v in SCHEMA.items()}
STRUCTURAL_KEYS = tuple(k for k, v in SCHEMA.items() if v.role == STRUCTURAL)
TRACED_KEYS = tuple(k for k, v in SCHEMA.items() if v.role == TRACED)
SEARCHABLE_KEYS = STRUCTURAL_KEYS + TRACED_KEYS
ROW_KEYS = tuple(k for k, v in SCHEMA.items() if v.row)  # handed to the core as they are
RUN_KEYS = tuple(k for k in SCHEMA if k.split(".")[0] in RUN_SECTIONS)


def describe(k: KeyInfo) -> str:
    """``doc; default; allowed``: one key as ``keys`` and the docs' config table show it."""
    default = "null" if k.default is None else k.default
    if isinstance(default, bool):
        default = str(default).lower()
    return f"{k.doc} (default {default}; {k.rule.expected})"


def markdown_table() -> str:
    """The config table of docs/configuration.md, one row per key, from the schema."""
    rows = ["| key | role | default | allowed | what it does |", "|---|---|---|---|---|"]
    for k in SCHEMA.values():
        default = "null" if k.default is None else k.default
        if isinstance(default, bool):
            default = str(default).lower()
        allowed = k.rule.expected.replace("|", "\\|")
        rows.append(f"| `{k.name}` | {k.role} | `{default}` | {allowed} | {k.doc} |")
    return "\n".join(rows)
