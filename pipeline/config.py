"""Typed configuration: YAML defaults + experiment preset + ``key=value`` overrides, validated.

Every error is a ``ConfigError`` whose message is one line naming the key, the bad value and what
is allowed; the CLI prints it and exits non-zero before anything is written.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.activations import ACTIVATIONS
from pipeline.initializers import BIAS_INITS, FAN_MODES, INITIALIZERS
from pipeline.model import KINDS

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DATASETS = ("gaussian", "digits")
OPTIMIZERS = ("sgd", "momentum", "adam")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsgaii")
PRUNERS = ("none", "median", "hyperband")
OBJECTIVES = ("steps_to_target", "explosion_count")
# The sections that define one training run (what best-config files store and `train` reads).
RUN_SECTIONS = ("data", "model", "init", "train", "metrics")


class ConfigError(ValueError):
    """Bad configuration input; ``str(error)`` is the one line shown to the user."""


# The schema: types only. Defaults live in conf/config.yaml, the one place a reader looks.
@dataclass
class DataConfig:
    name: str = MISSING
    classes: int = MISSING
    features: int = MISSING
    samples: int = MISSING
    val_samples: int = MISSING
    separation: float = MISSING
    clusters_per_class: int = MISSING
    val_fraction: float = MISSING
    seed: int = MISSING


@dataclass
class ModelConfig:
    kind: str = MISSING
    depth: int = MISSING
    width: int = MISSING
    activation: str = MISSING
    negative_slope: float = MISSING
    dropout: float = MISSING


@dataclass
class InitConfig:
    weights: str = MISSING
    gain: Any = MISSING
    mode: str = MISSING
    std: float = MISSING
    limit: float = MISSING
    value: float = MISSING
    bias: str = MISSING
    bias_value: float = MISSING
    bias_std: float = MISSING


@dataclass
class TrainConfig:
    optimizer: str = MISSING
    learning_rate: float = MISSING
    momentum: float = MISSING
    clip_norm: float | None = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    steps: int = MISSING
    seeds: int = MISSING
    seed: int = MISSING
    target_loss: float = MISSING
    eval_every_steps: int = MISSING


@dataclass
class MetricsConfig:
    smoothing: float = MISSING
    explode_threshold: float = MISSING
    vanish_threshold: float = MISSING
    curve_every_steps: int = MISSING
    diagnostics: bool = MISSING


@dataclass
class StudyConfig:
    name: str = MISSING
    n_trials: int = MISSING
    batch_size: int = MISSING
    sampler: str = MISSING
    seed: int = MISSING
    pruner: str = MISSING
    objectives: list[str] = MISSING
    storage: str | None = MISSING
    top_k: int = MISSING
    lease_s: float = MISSING


@dataclass
class TrackingConfig:
    uri: str | None = MISSING
    enabled: bool = MISSING
    figures: str = MISSING


@dataclass
class EngineConfig:
    memory_gb: float | None = MISSING
    depth_buckets: Any = MISSING
    compilation_cache: bool = MISSING
    cache_dir: str | None = MISSING
    cpu_devices: Any = MISSING
    unroll: int = MISSING
    stall_timeout_s: Any = MISSING


@dataclass
class Config:
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    space: Any = field(default_factory=dict)


# Keys a study may search. Structural ones pick the executable (trials are grouped by them); the
# others are traced numbers inside one executable.
STRUCTURAL_KEYS = (
    "model.kind",
    "model.depth",
    "model.width",
    "model.activation",
    "train.optimizer",
)
TRACED_KEYS = (
    "model.negative_slope",
    "init.weights",
    "init.gain",
    "init.mode",
    "init.std",
    "init.limit",
    "init.value",
    "init.bias",
    "init.bias_value",
    "init.bias_std",
    "train.learning_rate",
    "train.momentum",
    "train.clip_norm",
    "train.weight_decay",
    "model.dropout",
)
SEARCHABLE_KEYS = STRUCTURAL_KEYS + TRACED_KEYS


# --- value rules: (check, what is expected) per dotted key -------------------------------------

Rule = tuple[Callable[[Any], bool], str]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(lo: int, hi: int | None = None) -> Rule:
    text = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def ok(v: Any) -> bool:
        is_int = isinstance(v, int) and not isinstance(v, bool)
        return is_int and v >= lo and (hi is None or v <= hi)

    return ok, text


def _float(lo: float | None = None, hi: float | None = None, lo_open=True, hi_open=False) -> Rule:
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
    return ok, "a number " + " and ".join(parts) if parts else "a finite number"


def _one_of(names: Iterable[str]) -> Rule:
    names = tuple(names)
    return (lambda v: v in names), "one of " + ", ".join(names)


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

MAX_DEPTH = 1024
RULES: dict[str, Rule] = {
    "runs_dir": ((lambda v: isinstance(v, str) and v.strip() != ""), "a folder path"),
    "data.name": _one_of(DATASETS),
    "data.classes": _int_in(2, 10_000),
    "data.features": _int_in(1, 100_000),
    "data.samples": _int_in(2, 10_000_000),
    "data.val_samples": _int_in(1, 10_000_000),
    "data.separation": _float(0.0),
    "data.clusters_per_class": _int_in(1),
    "data.val_fraction": _float(0.0, 1.0, hi_open=True),
    "data.seed": _int_in(0),
    "model.kind": _one_of(KINDS),
    "model.depth": _int_in(1, MAX_DEPTH),
    "model.width": _int_in(1, 8192),
    "model.activation": _one_of(ACTIVATIONS),
    "model.negative_slope": _float(0.0, lo_open=False),
    "model.dropout": _float(0.0, 1.0, lo_open=False, hi_open=True),
    "init.weights": _one_of(INITIALIZERS),
    "init.gain": (
        lambda v: v == "auto" or (_number(v) and v > 0),
        "a number > 0 or auto",
    ),
    "init.mode": _one_of(FAN_MODES),
    "init.std": _float(0.0),
    "init.limit": _float(0.0),
    "init.value": _float(),
    "init.bias": _one_of(BIAS_INITS),
    "init.bias_value": _float(),
    "init.bias_std": _float(0.0, lo_open=False),
    "train.optimizer": _one_of(OPTIMIZERS),
    "train.learning_rate": _float(0.0),
    "train.momentum": _float(0.0, 1.0, lo_open=False, hi_open=True),
    "train.clip_norm": (
        lambda v: v is None or (_number(v) and v > 0),
        "null (off) or a number > 0",
    ),
    "train.weight_decay": _float(0.0, lo_open=False),
    "train.batch_size": _int_in(1),
    "train.steps": _int_in(1),
    "train.seeds": _int_in(1, 64),
    "train.seed": _int_in(0),
    "train.target_loss": _float(0.0),
    "train.eval_every_steps": _int_in(1),
    "metrics.smoothing": _float(0.0, 1.0, lo_open=False, hi_open=True),
    "metrics.explode_threshold": _float(0.0),
    "metrics.vanish_threshold": _float(0.0),
    "metrics.curve_every_steps": _int_in(1),
    "metrics.diagnostics": ((lambda v: isinstance(v, bool)), "true or false"),
    "study.name": (
        lambda v: (
            isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v) is not None
        ),
        "a name of letters, digits, '_', '.' or '-'",
    ),
    "study.n_trials": _int_in(1),
    "study.batch_size": _int_in(1),
    "study.sampler": _one_of(SAMPLERS),
    "study.seed": _int_in(0),
    "study.pruner": _one_of(PRUNERS),
    "study.objectives": (
        lambda v: (
            isinstance(v, list | ListConfig)
            and 0 < len(v) == len(set(v))
            and all(o in OBJECTIVES for o in v)
        ),
        "a non-empty list of distinct names from " + ", ".join(OBJECTIVES),
    ),
    "study.storage": (
        lambda v: (
            v is None
            or (isinstance(v, str) and v.strip() != "" and "://" not in v and "\0" not in v)
            or (isinstance(v, str) and _storage_url(v))
        ),
        "null, a journal file path, or a storage URL (sqlite:///file.db, "
        "postgresql://user:password@host:port/db, mysql://...)",
    ),
    "study.top_k": _int_in(1),
    "study.lease_s": _float(0.0),
    "tracking.uri": (
        lambda v: v is None or (isinstance(v, str) and _tracking_url(v)),
        "null or a tracking URI (sqlite:///file.db, http://host:port, file:///folder, "
        "postgresql://...)",
    ),
    "tracking.enabled": ((lambda v: isinstance(v, bool)), "true or false"),
    "tracking.figures": ((lambda v: v in ("background", "wait")), "background or wait"),
    "engine.memory_gb": (
        lambda v: v is None or (_number(v) and v > 0),
        "null (auto) or a number > 0",
    ),
    "engine.depth_buckets": (
        lambda v: (
            v == "auto"
            or (
                isinstance(v, list | ListConfig)
                and len(v) > 0
                and all(isinstance(d, int) and d >= 1 for d in v)
                and list(v) == sorted(set(v))
            )
        ),
        "auto or a non-empty increasing list of positive integers",
    ),
    "engine.cache_dir": (
        lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
        "null (<runs_dir>/jax_cache) or a folder path",
    ),
    "engine.compilation_cache": ((lambda v: isinstance(v, bool)), "true or false"),
    "engine.cpu_devices": (
        lambda v: (
            v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024)
        ),
        "auto (one per core) or an integer from 1 to 1024",
    ),
    "engine.unroll": _int_in(1),
    "engine.stall_timeout_s": (
        lambda v: v == "auto" or (_number(v) and v > 0),
        "auto (20x the measured time of a call like it, at least 60 s; 300 s before any call was "
        "measured) or a number of seconds > 0",
    ),
}


def _close(key: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not prefix and not node:
        return {}
    if isinstance(node, dict | DictConfig) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _is_leaf_spec(node: Any) -> bool:
    """A space entry: a list, a scalar, or a {low, high[, log, step]} range (an empty mapping
    too, so that validation refuses it instead of the entry silently vanishing)."""
    if isinstance(node, dict | DictConfig):
        return "low" in node or "high" in node or len(node) == 0
    return True


def flatten_space(space: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.depth": [2, 4], "init.gain": {"low": ..., ...}}`` from the nested space."""
    out: dict[str, Any] = {}
    for k, v in (space or {}).items():
        if _is_leaf_spec(v):
            out[f"{prefix}{k}"] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
        else:
            out.update(flatten_space(v, f"{prefix}{k}."))
    return out


def _check_keys(layer: dict, origin: str) -> None:
    """Unknown keys in a preset or override layer fail with their close matches."""
    for key in _flatten({k: v for k, v in layer.items() if k != "space"}):
        if key not in RULES:
            shown = redacted(key)  # a mangled URL override can land in a key
            raise ConfigError(f"unknown key {shown!r} in {origin}{_close(shown, RULES)}")
    space = layer.get("space")
    if space is not None and not isinstance(space, dict | DictConfig):
        raise ConfigError(
            f"space={space!r} in {origin} is invalid: expected a mapping of searchable keys to "
            "lists, {low, high} ranges or fixed values"
        )
    for key in flatten_space(space or {}):
        if key not in SEARCHABLE_KEYS:
            raise ConfigError(
                f"space.{key} in {origin}: {key!r} cannot be searched{_close(key, SEARCHABLE_KEYS)}"
                f" (searchable: {', '.join(SEARCHABLE_KEYS)})"
            )


def redacted(value: Any) -> Any:
    """``value`` with the password of every ``scheme://user:password@host`` in it replaced by
    ``***`` (strings, and the values of a dict); what is logged, printed or stored of a config."""
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, str):
        return _PASSWORD.sub(r"\1***@", value)
    return value


_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def check_value(key: str, value: Any) -> None:
    ok, expected = RULES[key]
    try:
        good = ok(value)
    except (TypeError, ValueError):  # e.g. a list where a number belongs
        good = False
    if not good:
        raise ConfigError(f"{key}={redacted(value)!r} is invalid: expected {expected}")


def _check_space(space: dict[str, Any]) -> None:
    for key, spec in space.items():
        where = f"space.{key}"
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{where} is an empty list: give at least one value")
            for v in spec:
                _check_in_space(key, v, where)
        elif isinstance(spec, dict):
            extra = set(spec) - {"low", "high", "log", "step"}
            if extra or "low" not in spec or "high" not in spec:
                raise ConfigError(
                    f"{where}={spec} is invalid: a range needs low and high (optional log, step)"
                )
            low, high = spec["low"], spec["high"]
            if not (_number(low) and _number(high) and low < high):
                raise ConfigError(f"{where}: low ({low}) must be a number below high ({high})")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
            _check_in_space(key, low, where)
            _check_in_space(key, high, where)
        else:
            _check_in_space(key, spec, where)


def _check_in_space(key: str, value: Any, where: str) -> None:
    ok, expected = RULES[key]
    if not ok(value):
        raise ConfigError(f"{where} has {value!r}: {key} must be {expected}")


def validate(cfg: DictConfig) -> None:
    """Value and cross-field checks; raises ``ConfigError`` on the first problem."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    for key in RULES:
        check_value(key, flat.get(key, OmegaConf.select(cfg, key)))
    t = cfg.train
    if t.steps % t.eval_every_steps:
        raise ConfigError(
            f"train.steps={t.steps} must be a multiple of train.eval_every_steps="
            f"{t.eval_every_steps} (training runs in chunks of that many steps)"
        )
    n_train = cfg.data.samples if cfg.data.name == "gaussian" else 1437
    if t.batch_size > n_train:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is larger than the {n_train} training samples"
        )
    space = flatten_space(cfg.space)
    _check_space(space)
    # The base values count too: `train` uses them, and a sweep whose space fixes neither.
    kinds = {*possible_values(cfg, "model.kind"), cfg.model.kind}
    if "cnn" in kinds and cfg.data.name != "digits":
        raise ConfigError(
            "model.kind=cnn needs images: set data.name=digits (8x8 handwritten digits)"
        )
    if "cnn" in kinds and "lsuv" in {*possible_values(cfg, "init.weights"), cfg.init.weights}:
        raise ConfigError(
            "init.weights=lsuv is implemented for model.kind=mlp only: drop one of them"
        )
    if cfg.study.sampler == "gp" and importlib.util.find_spec("torch") is None:
        # Optuna's GPSampler fits its Gaussian process with PyTorch.
        raise ConfigError("study.sampler=gp needs PyTorch: pip install torch==2.13.0")
    if cfg.study.sampler == "grid":
        ranges = [k for k, s in space.items() if isinstance(s, dict)]
        if ranges:
            raise ConfigError(
                f"study.sampler=grid needs lists, but {', '.join('space.' + k for k in ranges)}"
                " is a range: give a list of values"
            )


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid YAML: it is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def read_yaml(path: Path) -> dict:
    """A YAML file holding a mapping, or a one-line ``ConfigError``."""
    return _read_yaml(path)


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _parse_overrides(overrides: Iterable[str]) -> tuple[dict, dict[str, Any]]:
    """(config layer, space entries): ``space.*`` overrides replace their entry whole."""
    layer, space = OmegaConf.create(), {}
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            parsed = value
        if "://" in value:  # a URL is a string, even one YAML would read as a mapping ("...:")
            parsed = value
        if key.startswith("space."):
            space[key.removeprefix("space.")] = parsed
        else:
            try:
                OmegaConf.update(layer, key, parsed, force_add=True)
            except (OmegaConfBaseException, TypeError, ValueError):
                raise ConfigError(f"override {item!r} conflicts with another override") from None
    return OmegaConf.to_container(layer), space


def _merge(cfg: DictConfig, layer: dict, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        bad = OmegaConf.select(OmegaConf.create(layer), key, default=None) if key != "?" else None
        expected = RULES.get(key, (None, "a value of the right type"))[1]
        raise ConfigError(f"{key}={bad!r} in {origin} is invalid: expected {expected}") from None


def load_config(
    overrides: Iterable[str] = (),
    experiment: str | None = None,
    extra_layers: Iterable[tuple[dict, str]] = (),
) -> DictConfig:
    """Defaults, then ``conf/experiment/<experiment>.yaml``, extra layers, then overrides."""
    layers: list[tuple[dict, str]] = [(_read_yaml(CONF_DIR / "config.yaml"), "conf/config.yaml")]
    if experiment:
        path = CONF_DIR / "experiment" / f"{experiment}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown experiment {experiment!r}{_close(experiment, experiments())}"
                f" (available: {', '.join(experiments())})"
            )
        layers.append((_read_yaml(path), f"conf/experiment/{experiment}.yaml"))
    layers.extend(extra_layers)
    override_layer, space_overrides = _parse_overrides(overrides)
    layers.append((override_layer, "the command-line overrides"))

    cfg = OmegaConf.structured(Config)
    for layer, origin in layers:
        _check_keys(layer, origin)
        if "space" in layer:
            cfg.space = {}  # a preset's space replaces the default one whole
        cfg = _merge(cfg, layer, origin)
    if space_overrides:
        _check_keys({"space": _nest_dotted(space_overrides)}, "the command-line overrides")
        space = flatten_space(cfg.space)
        space.update(space_overrides)
        cfg.space = _nest_dotted(space)
    validate(cfg)
    return cfg


def _nest_dotted(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def to_flat_dict(cfg: DictConfig, sections: Iterable[str] | None = None) -> dict[str, Any]:
    """Dotted-key view of the config (the names Optuna and MLflow use too)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if sections is not None:
        container = {k: container[k] for k in sections}
    container.pop("space", None)
    return _flatten(container)


def possible_values(cfg: DictConfig, key: str) -> list[Any]:
    """Every value ``key`` can take in a sweep: its space list, its fixed value, or the default."""
    spec = flatten_space(cfg.space).get(key, OmegaConf.select(cfg, key))
    return list(spec) if isinstance(spec, list) else [spec]
