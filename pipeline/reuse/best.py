"""Best-config files: ``conf/best/<study>.yaml`` written from the study's stored specs, and read
back as initializers (``load_initializer``) or as the configuration ``train --config`` retrains.

A best-config file holds, per rank, the trial's whole spec (every ``data``, ``model``, ``init``,
``train`` and ``metrics`` key, so ``python -m pipeline train --config`` reproduces the trial), the
measured metrics and where they came from (study, trial number, MLflow run ids).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline.config import RUN_SECTIONS
from pipeline.core.initializers import make_bias_initializer, make_initializer, resolve_gain


def best_document(
    study, top_k: int, run_ids: dict[int, str | None], parent_run_id: str | None, storage: str
) -> dict:
    """The YAML document of a study's top ``top_k`` trials."""
    from pipeline.search.study import ranked_trials, trial_metrics, trial_spec

    configs = []
    for rank, trial in enumerate(ranked_trials(study)[:top_k]):
        nested = trial_spec(study, trial).nested()
        init = nested["init"]
        init["gain_value"] = resolve_gain(
            init["weights"],
            init["gain"],
            nested["model"]["activation"],
            nested["model"]["negative_slope"],
        )
        configs.append(
            {
                "rank": rank,
                **nested,
                "measured": trial_metrics(trial),
                "provenance": {
                    "study": study.study_name,
                    "trial": trial.number,
                    "mlflow_run_id": run_ids.get(trial.number),
                    "mlflow_parent_run_id": parent_run_id,
                    "storage": storage,
                },
            }
        )
    return {
        "study": study.study_name,
        "objectives": [str(d.name).lower() for d in study.directions],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "configs": configs,
    }


def write_best(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False))
    tmp.replace(path)  # never a half-written file
    return path


def read_best(path: str | Path, rank: int = 0) -> dict:
    """Config ``rank`` of a best-config file; a ``LookupError`` names what is missing."""
    path = Path(path)
    if not path.exists():
        raise LookupError(f"no best-config file at {path}: run `make best` first")
    document = yaml.safe_load(path.read_text()) or {}
    configs = document.get("configs") or []
    if not 0 <= rank < len(configs):
        raise LookupError(f"{path} has {len(configs)} configs; rank {rank} is out of range")
    return configs[rank]


def config_overrides(best: dict) -> dict:
    """The config sections of a best entry, ready to merge as a config layer."""
    layer = {s: dict(best[s]) for s in RUN_SECTIONS if s in best}
    layer.get("init", {}).pop("gain_value", None)
    return layer


def load_initializer(path: str | Path, rank: int = 0):
    """The kernel initializer of best config ``rank``, for ``kernel_init`` in Flax.

    >>> import flax.nnx as nnx  # doctest: +SKIP
    >>> layer = nnx.Linear(64, 64, kernel_init=load_initializer("conf/best/default.yaml"),
    ...                    rngs=nnx.Rngs(0))  # doctest: +SKIP
    """
    init = read_best(path, rank)["init"]
    params = {k: init[k] for k in ("mode", "std", "limit", "value")}
    return make_initializer(init["weights"], float(init["gain_value"]), params)


def load_bias_initializer(path: str | Path, rank: int = 0):
    """The bias initializer of best config ``rank``, for ``bias_init`` in Flax."""
    init = read_best(path, rank)["init"]
    return make_bias_initializer(init["bias"], init["bias_value"], init["bias_std"])
