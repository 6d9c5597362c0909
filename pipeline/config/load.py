"""Typed configuration: YAML defaults + experiment preset + ``key=value`` overrides, validated.

Every error is a ``ConfigError`` whose message is one line naming the key, the bad value and what
is allowed; the CLI prints it and exits non-zero before anything is written. Loading reads the
config only (schema and cross-field checks, no JAX); the checks that read the data or need the
engine run after it, in ``pipeline.engine.preflight``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.schema import (
    DATA_FILES,
    RULES,
    SCHEMA,
    SEARCHABLE_KEYS,
    Choice,
    Config,
    ConfigError,
    did_you_mean,
)
from pipeline.config.space import Space
from pipeline.core.names import RESIDUAL_KINDS

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
# Data files the project writes on request: where a preset expects one, the command that makes it.
MADE_BY = {CONF_DIR.parent / "examples" / "breast_cancer.npz": "make example-data"}


def _close(key: str, candidates: Iterable[str]) -> str:
    return did_you_mean(key, candidates, prefixes=False)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not prefix and not node:
        return {}
    if isinstance(node, dict | DictConfig) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


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
    for key in Space.parse(space):
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
    rule = RULES[key]
    ok, expected, explain = rule
    try:
        good = ok(value)
    except (TypeError, ValueError):  # e.g. a list where a number belongs
        good = False
    if good:
        return
    if explain is not None and not isinstance(rule, Choice):
        raise ConfigError(explain(value))
    hint = did_you_mean(value, rule.names) if isinstance(rule, Choice) else ""
    raise ConfigError(f"{key}={redacted(value)!r} is invalid: expected {expected}{hint}")


class Loaded(NamedTuple):
    """A loaded configuration and its search space, parsed once."""

    cfg: DictConfig
    space: Space


def validate(cfg: DictConfig) -> Space:
    """Value and cross-field checks (the config only); raises ``ConfigError`` on the first
    problem. Returns the parsed space."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    for key in RULES:
        check_value(key, flat.get(key, OmegaConf.select(cfg, key)))
    d = cfg.data
    for given, value, names in (
        ("data.path", d.path, ("npz",)),
        ("data.loader", d.loader, ("custom",)),
        ("data.sha256", d.sha256, DATA_FILES),
    ):
        if value is not None and d.name not in names:
            allowed = " or ".join(f"data.name={n}" for n in names)
            raise ConfigError(f"{given} is read with {allowed} only (data.name={d.name})")
    if d.task == "regression" and d.name not in DATA_FILES:
        raise ConfigError(
            f"data.task=regression needs real-valued targets: data.name=npz or custom (data.name="
            f"{d.name} holds class labels)"
        )
    _check_data_file(d.name, d.path)
    space = Space.parse(cfg.space)
    space.check()
    # The base values count too: `train` uses them, and a sweep whose space fixes neither.
    kinds = {*space.values("model.kind", cfg.model.kind), cfg.model.kind}
    if "cnn" in kinds and d.name != "digits":
        raise ConfigError(
            "model.kind=cnn needs images: set data.name=digits (8x8 handwritten digits)"
        )
    if kinds - {"mlp"} and "lsuv" in {
        *space.values("init.weights", cfg.init.weights),
        cfg.init.weights,
    }:
        raise ConfigError(
            "init.weights=lsuv is implemented for model.kind=mlp only: drop one of them"
        )
    _check_transformer(cfg, space)
    _check_residual(cfg, space)
    _check_parametrization(cfg, space)
    if "custom" in kinds and not cfg.model.factory:
        raise ConfigError(
            "model.kind=custom needs model.factory=<module>:<function>, a function that returns "
            "your Flax module"
        )
    if cfg.study.sampler == "gp" and importlib.util.find_spec("torch") is None:
        # Optuna's GPSampler fits its Gaussian process with PyTorch.
        raise ConfigError("study.sampler=gp needs PyTorch: pip install torch==2.13.0")
    if cfg.study.design == "grid":
        _check_grid(cfg, space)
    if cfg.study.sampler == "grid" and space.ranges():
        raise ConfigError(
            f"study.sampler=grid needs lists, but {', '.join('space.' + k for k in space.ranges())}"
            " is a range: give a list of values"
        )
    return space


def _check_data_file(name: str, path: str | None) -> None:
    """A data file that is not there, named before anything reads it (with the command that
    writes it, for the project's example data)."""
    if name != "npz" or path is None or Path(path).is_file():
        return
    make = MADE_BY.get(Path(path).resolve())
    hint = f"; write it with `{make}`" if make else ""
    raise ConfigError(f"data.path={str(path)!r}: no such file{hint}")


def _check_grid(cfg: DictConfig, space: Space) -> None:
    """study.design=grid: the space's lists are the factors, its one range the learning rates
    the grid starts from (log-spaced), inside study.grid_limits."""
    lr = space.get("train.learning_rate")
    example = "space.train.learning_rate={low: 0.003, high: 1.0, log: true}"
    if not isinstance(lr, dict):
        raise ConfigError(
            f"study.design=grid tunes every arm on one learning-rate grid: give {example}, or "
            "study.design=search"
        )
    others = [k for k in space.ranges() if k != "train.learning_rate"]
    if others:
        raise ConfigError(
            f"study.design=grid takes lists, but {', '.join('space.' + k for k in others)} is a "
            "range: give a list of values (a scale is a labelled factor), or study.design=search"
        )
    low, high = lr["low"], lr["high"]
    if not lr.get("log"):
        raise ConfigError(
            f"study.design=grid: space.train.learning_rate needs log: true ({example})"
        )
    limits = list(cfg.study.grid_limits)
    if low < limits[0] or high > limits[1]:
        raise ConfigError(
            f"space.train.learning_rate=[{low:g}, {high:g}] is outside study.grid_limits="
            f"[{limits[0]:g}, {limits[1]:g}]: widen the limits or narrow the range"
        )


def _check_parametrization(cfg: DictConfig, space: Space) -> None:
    """depth_mup scales residual branches (docs/mup.md), which only the built-in residual
    networks have (a user's module cannot be given the branch multiplier)."""
    used = set(space.values("init.parametrization", cfg.init.parametrization))
    kinds = set(space.values("model.kind", cfg.model.kind))
    other = sorted(kinds - set(RESIDUAL_KINDS))
    if "depth_mup" in used and other:
        raise ConfigError(
            "init.parametrization=depth_mup scales residual branches: it needs model.kind="
            f"{' or '.join(RESIDUAL_KINDS)}, not model.kind={other[0]} (use mup)"
        )


def _check_residual(cfg: DictConfig, space: Space) -> None:
    """model.norm and init.residual shape the residual MLP's blocks, which no other kind has; a
    zero read-out needs a built-in read-out; DeepNorm is a post-LN rule (Wang et al. 2022).
    Checked on every value a trial can take (the space's, else the base's)."""

    def values(key: str) -> set:
        return set(space.values(key, OmegaConf.select(cfg, key)))

    kinds, norms, residuals = values("model.kind"), values("model.norm"), values("init.residual")
    for key, used in (("model.norm", norms), ("init.residual", residuals)):
        other = sorted(kinds - set(RESIDUAL_KINDS))
        if used - {"none"} and other:
            raise ConfigError(
                f"{key}={sorted(used - {'none'})[0]} is for model.kind=resmlp or transformer "
                f"(residual blocks); model.kind={other[0]} has none"
            )
    if "deepnorm" in residuals and norms - {"post"}:
        raise ConfigError(
            f"init.residual=deepnorm needs model.norm=post (DeepNorm is post-LN), not "
            f"model.norm={sorted(norms - {'post'})[0]}"
        )
    if "fixup" in residuals and "transformer" in kinds:
        raise ConfigError(
            "init.residual=fixup is for model.kind=resmlp; for the transformer use "
            "init.residual=t_fixup (Huang et al. 2020)"
        )
    if "t_fixup" in residuals and kinds - {"transformer"}:
        raise ConfigError(
            f"init.residual=t_fixup is for model.kind=transformer (it scales the embeddings and "
            f"attention projections), not model.kind={sorted(kinds - {'transformer'})[0]}"
        )
    if "t_fixup" in residuals and norms - {"none"}:
        raise ConfigError(
            f"init.residual=t_fixup needs model.norm=none (T-Fixup removes LayerNorm), not "
            f"model.norm={sorted(norms - {'none'})[0]}"
        )
    if "zero" in values("init.readout") and "custom" in kinds:
        raise ConfigError(
            "init.readout=zero zeroes the built-in read-out; for model.kind=custom write a rule: "
            "init.rules=[{match: <your read-out>/kernel, scale: 0}]"
        )


def _check_transformer(cfg: DictConfig, space: Space) -> None:
    """The transformer reads token sequences (data.name=recall) and every other model float
    features; its width splits into model.heads heads. Checked on every value a trial can take."""

    def values(key: str) -> list:
        return space.values(key, OmegaConf.select(cfg, key))

    kinds, d = set(values("model.kind")), cfg.data
    if d.name == "recall" and kinds - {"transformer"}:
        other = sorted(kinds - {"transformer"})[0]
        raise ConfigError(
            f"data.name=recall holds token sequences: model.kind={other} reads float features "
            "(allowed with recall: model.kind=transformer)"
        )
    if "transformer" in kinds and d.name != "recall":
        raise ConfigError(
            f"model.kind=transformer reads token sequences: set data.name=recall (data.name="
            f"{d.name} holds float features)"
        )
    if d.name == "recall" and d.pairs > d.key_vocab:
        raise ConfigError(
            f"data.pairs={d.pairs} distinct keys need data.key_vocab >= {d.pairs} (it is "
            f"{d.key_vocab})"
        )
    if "transformer" not in kinds:
        return
    heads = values("model.heads")
    if isinstance(space.get("model.width"), dict) and max(heads) > 1:
        raise ConfigError(
            "space.model.width is a range, but model.width must be divisible by model.heads: "
            "give a list of widths"
        )
    for width in values("model.width"):
        for h in heads:
            if width % h:
                raise ConfigError(
                    f"model.width={width} is not divisible by model.heads={h} (each head gets "
                    "width / heads dimensions)"
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
        if _is_text_key(key) and parsed is not None and not isinstance(parsed, str):
            parsed = value  # a name, a path or a hash is text, even "0123" or "1e10"
        if key.startswith("space."):
            space[key.removeprefix("space.")] = parsed
        else:
            try:
                OmegaConf.update(layer, key, parsed, force_add=True)
            except (OmegaConfBaseException, TypeError, ValueError):
                raise ConfigError(f"override {item!r} conflicts with another override") from None
    return OmegaConf.to_container(layer), space


def _is_text_key(key: str) -> bool:
    info = SCHEMA.get(key)
    return info is not None and str(info.type) in ("str", "str | None")


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
    """The schema's defaults, then the default study ``conf/config.yaml`` or, in its place, the
    preset ``conf/experiment/<experiment>.yaml``; extra layers; then overrides. Validated; the
    data is read later (``pipeline.engine.preflight``)."""
    return load_with_space(overrides, experiment, extra_layers).cfg


def load_with_space(
    overrides: Iterable[str] = (),
    experiment: str | None = None,
    extra_layers: Iterable[tuple[dict, str]] = (),
) -> Loaded:
    """``load_config``'s config with its space, parsed once."""
    layers: list[tuple[dict, str]] = []
    if not experiment:
        layers.append((_read_yaml(CONF_DIR / "config.yaml"), "conf/config.yaml"))
    else:
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
        cfg.space = _nest_dotted({**Space.parse(cfg.space).entries, **space_overrides})
    return Loaded(cfg, validate(cfg))


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
