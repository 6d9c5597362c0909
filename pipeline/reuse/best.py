"""Best-config files: ``conf/best/<study>.yaml`` written from the study's stored specs, and read
back as initializers (``load_initializer``) or as the configuration ``train --config`` retrains.

A best-config file holds, per rank, the trial's whole spec (every ``data``, ``model``, ``init``,
``train`` and ``metrics`` key, so ``python -m pipeline train --config`` reproduces the trial), the
measured metrics and where they came from (study, trial number, MLflow run ids); under an
``init.parametrization`` other than sp also its per-layer learning-rate and weight-decay
multipliers (``lr_multipliers``, ``weight_decay_multipliers``: parameter-path glob -> number).
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
                "structure": _data_structure(nested["data"]),
                **parametrization_entry(nested),
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


def parametrization_entry(nested: dict) -> dict:
    """What a reader of the best file needs to apply ``init.parametrization`` without running
    code (its name, ``model.base_width`` and ``model.base_depth`` are in the spec itself): per
    parameter-path glob of the built-in network, the multipliers of train.learning_rate and
    train.weight_decay (``pipeline.reuse.export.rate_table``, the engine's own rule). Empty for
    sp and for a user's module (its multipliers need the module: docs/mup.md)."""
    if nested["init"]["parametrization"] == "sp" or nested["model"]["kind"] == "custom":
        return {}
    from pipeline.reuse.export import lr_multipliers

    rates = lr_multipliers(nested)
    return {"lr_multipliers": rates["lr"], "weight_decay_multipliers": rates["weight_decay"]}


def _data_structure(data: dict) -> dict[str, int]:
    """The data sizes a rule's scale formula may read (``n_features``, ``n_classes``); empty
    when the data cannot be read any more (a moved ``.npz``)."""
    from omegaconf import OmegaConf

    from pipeline.config import ConfigError
    from pipeline.engine.datasets import sizes

    try:
        n = sizes(OmegaConf.create(data))
    except (ConfigError, OSError):
        return {}
    return {"n_features": int(n.n_features), "n_classes": int(n.n_classes)}


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


def load_initializer(path: str | Path, rank: int = 0, param: str | None = None):
    """The kernel initializer of best config ``rank``, for ``kernel_init`` in Flax; with
    ``param`` (a parameter path such as ``"blocks/0/out_proj/kernel"``), the one the config's
    ``init.rules`` (and those ``init.residual`` and ``init.readout`` generate) give that
    parameter (its initializer, gain and scale).

    >>> import flax.nnx as nnx  # doctest: +SKIP
    >>> layer = nnx.Linear(64, 64, kernel_init=load_initializer("conf/best/default.yaml"),
    ...                    rngs=nnx.Rngs(0))  # doctest: +SKIP
    """
    entry = read_best(path, rank)
    init = entry["init"]
    if param is None:
        params = {k: init[k] for k in ("mode", "std", "limit", "value")}
        return make_initializer(init["weights"], float(init["gain_value"]), params)
    from pipeline.reuse.export import init_spec  # the rules resolved as every export does

    s = init_spec(entry, param.removesuffix("/kernel"))
    params = {"mode": s.mode, "std": s.std, "limit": s.limit, "value": s.value}
    return make_initializer(s.weights, s.gain, params)


def init_params(best: str | Path | dict, module, key, x, rank: int = 0) -> dict:
    """Initialize a whole Flax module (linen or NNX) as best config ``rank`` says, rules
    included: every kernel and bias, per parameter path, exactly as the sweep did (fans from
    each layer's shape; a stacked leaf per layer; norm scales and other leaves the module's own
    values times their rule's scale). ``x``: a batch of inputs (shapes only). Returns the
    parameter dict; an NNX module is also updated in place.

    >>> params = pipeline.init_params("conf/best/my_study.yaml", model, jax.random.key(0), x)
    ... # doctest: +SKIP
    """
    import jax
    import jax.numpy as jnp

    from pipeline.config import TrialSpec
    from pipeline.core.initializers import INITIALIZERS, bias_moments, unit_draw
    from pipeline.core.model import Structure
    from pipeline.core.net import as_net, flatten, unflatten
    from pipeline.engine.rows import bias_fan_ins, kernel_scale, leaf_inits

    entry = read_best(best, rank) if isinstance(best, str | Path) else best
    trial = TrialSpec.from_flat(
        {f"{s}.{k}": v for s in RUN_SECTIONS for k, v in config_overrides(entry)[s].items()},
        fill_defaults=True,
    )
    x = jnp.asarray(x)
    net = as_net(module, x)
    n_classes = (entry.get("structure") or {}).get("n_classes") or 0
    structure = Structure(trial["model.activation"], 0, 0, x.shape[-1], n_classes)
    inits = leaf_inits(trial, net.layout, structure)
    own = flatten(net.own(key)) if net.own is not None else {}
    activation, slope = trial["model.activation"], trial["model.negative_slope"]
    out = {}
    for leaf in net.layout.leaves:
        r, k = inits[leaf.path], jax.random.fold_in(key, leaf.tag)
        keys = [jax.random.fold_in(k, i) for i in range(leaf.layers)]
        if leaf.role == "kernel":
            if INITIALIZERS[r["weights"]].data_dependent:
                raise ValueError("init.weights=lsuv is data-dependent: see pipeline.core.lsuv")
            draw = INITIALIZERS[r["weights"]].draw
            scale = kernel_scale(r, leaf.fan_shape, activation, slope)
            layers = [
                scale * unit_draw(draw, kk, leaf.fan_shape).reshape(leaf.layer_shape) for kk in keys
            ]
        elif leaf.role == "bias":
            fan_in = bias_fan_ins(net.layout)[leaf.path]
            mean, std = bias_moments(
                r["bias"], r["bias_value"], r["bias_std"], fan_in, r["weights"]
            )
            normal = [jax.random.normal(kk, leaf.layer_shape) for kk in keys]
            layers = [r["scale"] * (mean + std * n) for n in normal]
        else:
            out[leaf.path] = r["scale"] * own[leaf.path]
            continue
        out[leaf.path] = jnp.stack(layers).reshape(leaf.shape)
    params = unflatten(out)
    from flax import nnx

    if isinstance(module, nnx.Module):
        state = nnx.state(module, nnx.Param)
        nnx.replace_by_pure_dict(state, params)
        nnx.update(module, state)
    return params


def load_bias_initializer(path: str | Path, rank: int = 0, fan_in: float | None = None):
    """The bias initializer of best config ``rank``, for ``bias_init`` in Flax (``fan_in``: the
    layer's, which PyTorch's default bias, ``init.bias=torch_default``, scales with)."""
    init = read_best(path, rank)["init"]
    return make_bias_initializer(
        init["bias"], init["bias_value"], init["bias_std"], fan_in, init["weights"]
    )
