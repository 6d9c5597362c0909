"""``TrialSpec``: the fully resolved configuration of one trial, built once, stored whole.

defaults ⊕ preset ⊕ command-line overrides ⊕ the values the space fixes ⊕ the values Optuna
sampled. The sweep builds it when it asks the trial, trains from it, stores it on the Optuna trial
(one user attribute, ``spec``) and logs it as the MLflow child run's params; `make best`, the
report, the plots, recovery and `train --config` read that stored spec and nothing else, so a
trial's configuration is never rebuilt (a rebuild from the study's base config is how a value the
space fixed was once lost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, get_type_hints

from pipeline.config.schema import (
    DEFAULTS,
    RULES,
    RUN_KEYS,
    RUN_SECTIONS,
    ConfigError,
    Data,
    Init,
    Metrics,
    Model,
    Train,
)

SPEC_ATTR = "spec"  # the Optuna user attribute that holds a trial's spec


@dataclass(frozen=True)
class TrialSpec:
    """One trial, typed and read-only: ``spec.model.depth``, ``spec["model.depth"]``."""

    data: Data
    model: Model
    init: Init
    train: Train
    metrics: Metrics

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], fill_defaults: bool = False) -> TrialSpec:
        """From dotted keys: every run key, each valid; else a one-line ``ConfigError``.
        ``fill_defaults``: take a missing key's default (a study written before specs)."""
        unknown = [k for k in flat if k not in RULES or k not in RUN_KEYS]
        if unknown:
            raise ConfigError(f"unknown trial key {unknown[0]!r}")
        missing = [k for k in RUN_KEYS if k not in flat]
        if missing and not fill_defaults:
            raise ConfigError(f"a trial spec needs {missing[0]!r}")
        values = {k: flat.get(k, DEFAULTS[k]) for k in RUN_KEYS}
        for k, v in values.items():
            ok, expected = RULES[k][:2]
            if not ok(v):
                raise ConfigError(f"{k}={v!r} in a trial spec is invalid: expected {expected}")
        sections = {s: {} for s in RUN_SECTIONS}
        for k, v in values.items():
            section, name = k.split(".")
            sections[section][name] = v
        types = get_type_hints(cls)  # the section dataclasses (annotations are strings here)
        return cls(**{s: types[s](**sections[s]) for s in RUN_SECTIONS})

    @classmethod
    def of_config(cls, cfg: Any) -> TrialSpec:
        """The trial a loaded config describes without its space (``train``, tests)."""
        from pipeline.config.load import to_flat_dict

        return cls.from_flat(to_flat_dict(cfg, RUN_SECTIONS))

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values: what Optuna stores, MLflow logs and the engine reads."""
        return {f"{s}.{k}": v for s in RUN_SECTIONS for k, v in asdict(getattr(self, s)).items()}

    def nested(self) -> dict[str, dict[str, Any]]:
        return {s: asdict(getattr(self, s)) for s in RUN_SECTIONS}

    def __getitem__(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except (AttributeError, ValueError):
            return default

    def with_values(self, values: Mapping[str, Any]) -> TrialSpec:
        """A copy with some dotted keys changed (validated like any spec)."""
        return TrialSpec.from_flat({**self.flat(), **values})
