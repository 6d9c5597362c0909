"""Configuration: the schema (every key declared once), loading and validation, the parsed search
space and the typed ``TrialSpec`` of one trial.

- ``schema``: each key's type, default, allowed values, doc and role;
- ``load``: conf/config.yaml + experiment preset + ``key=value`` overrides, validated (the config
  only: the checks that read data run in ``pipeline.engine.preflight``);
- ``space``: the search space, parsed once;
- ``spec``: ``TrialSpec``, the fully resolved configuration of one trial.
"""

from pipeline.config.load import (
    CONF_DIR,
    Loaded,
    check_value,
    experiments,
    load_config,
    load_with_space,
    read_yaml,
    redacted,
    to_flat_dict,
    validate,
)
from pipeline.config.schema import (
    DEFAULTS,
    MAX_DEPTH,
    OBJECTIVES,
    ROW_KEYS,
    RULES,
    RUN_KEYS,
    RUN_SECTIONS,
    SCHEMA,
    SEARCHABLE_KEYS,
    STRUCTURAL_KEYS,
    TRACED_KEYS,
    Config,
    ConfigError,
    markdown_table,
)
from pipeline.config.space import Space
from pipeline.config.spec import SPEC_ATTR, TrialSpec

__all__ = [
    "CONF_DIR",
    "DEFAULTS",
    "MAX_DEPTH",
    "OBJECTIVES",
    "ROW_KEYS",
    "RULES",
    "RUN_KEYS",
    "RUN_SECTIONS",
    "SCHEMA",
    "SEARCHABLE_KEYS",
    "SPEC_ATTR",
    "STRUCTURAL_KEYS",
    "TRACED_KEYS",
    "Config",
    "ConfigError",
    "Loaded",
    "Space",
    "TrialSpec",
    "check_value",
    "experiments",
    "load_config",
    "load_with_space",
    "markdown_table",
    "read_yaml",
    "redacted",
    "to_flat_dict",
    "validate",
]
