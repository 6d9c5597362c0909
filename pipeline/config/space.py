"""The search space, parsed once: dotted searchable keys to a list, a range or a fixed value.

A list is a categorical choice; ``{low, high[, log, step]}`` a range (of ints: an integer range);
a scalar fixes the value (it is part of every trial's spec, not an Optuna parameter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import RULES, ConfigError

RANGE_KEYS = {"low", "high", "log", "step"}


def encode_choice(v: Any) -> Any:
    """Optuna's categorical choices are None, bool, int, float or str: a list or mapping is
    stored as its canonical JSON text."""
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return v


def number_like(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_leaf_spec(node: Any) -> bool:
    """A space entry: a list, a scalar, or a {low, high[, log, step]} range (an empty mapping
    too, so that validation refuses it instead of the entry silently vanishing)."""
    if isinstance(node, dict | DictConfig):
        return "low" in node or "high" in node or len(node) == 0
    return True


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (node or {}).items():
        if is_leaf_spec(v):
            out[f"{prefix}{k}"] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
        else:
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


@dataclass(frozen=True)
class Space:
    """The parsed ``space`` section: ``entries`` maps each dotted key to its spec."""

    entries: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, node: Any) -> Space:
        """From the nested ``space`` mapping of a config (or an already flat one)."""
        return cls(MappingProxyType(_flatten(node)))

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def items(self):
        return self.entries.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self.entries.get(key, default)

    def fixed(self) -> dict[str, Any]:
        """The values the space fixes (scalars): part of every trial, not Optuna parameters."""
        return {k: s for k, s in self.entries.items() if not isinstance(s, list | dict)}

    def lists(self) -> dict[str, list]:
        """The categorical entries (GridSampler's search space)."""
        return {k: s for k, s in self.entries.items() if isinstance(s, list)}

    def choices(self, key: str) -> list:
        """A categorical entry as Optuna stores it: a structured choice (a rule set of
        ``init.rules``) as its canonical JSON text, the others as they are."""
        return [encode_choice(v) for v in self.entries[key]]

    def decode(self, key: str, picked: Any) -> Any:
        """The value of the choice Optuna picked (``choices``' inverse)."""
        return self.entries[key][self.choices(key).index(picked)]

    def ranges(self) -> list[str]:
        return [k for k, s in self.entries.items() if isinstance(s, dict)]

    def searched(self) -> set[str]:
        """The keys Optuna draws for each trial: a list or a range here."""
        return set(self.lists()) | set(self.ranges())

    def values(self, key: str, base: Any) -> list[Any]:
        """Every value ``key`` can take in a sweep: its list, its fixed value, or ``base``."""
        spec = self.entries.get(key, base)
        if isinstance(spec, dict):  # a range: its ends
            return [spec["low"], spec["high"]]
        return list(spec) if isinstance(spec, list) else [spec]

    def largest(self, key: str, base: Any) -> Any:
        return max(self.values(key, base))

    def check(self) -> None:
        """Each entry's values against its key's rule; a one-line ``ConfigError`` otherwise."""
        for key, spec in self.entries.items():
            where = f"space.{key}"
            if isinstance(spec, list):
                if not spec:
                    raise ConfigError(f"{where} is an empty list: give at least one value")
                for v in spec:
                    _check_in_space(key, v, where)
            elif isinstance(spec, dict):
                if set(spec) - RANGE_KEYS or "low" not in spec or "high" not in spec:
                    raise ConfigError(
                        f"{where}={spec} is invalid: a range needs low and high (optional log, "
                        "step)"
                    )
                low, high = spec["low"], spec["high"]
                if not (number_like(low) and number_like(high) and low < high):
                    raise ConfigError(f"{where}: low ({low}) must be a number below high ({high})")
                if spec.get("log") and low <= 0:
                    raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
                _check_in_space(key, low, where)
                _check_in_space(key, high, where)
            else:
                _check_in_space(key, spec, where)


def _check_in_space(key: str, value: Any, where: str) -> None:
    ok, expected, explain = RULES[key]
    if not ok(value):
        if explain is not None:
            raise ConfigError(f"{where}: {explain(value)}")
        raise ConfigError(f"{where} has {value!r}: {key} must be {expected}")
