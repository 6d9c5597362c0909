"""Best-config files: ``conf/best/<study>.yaml`` written from the study's stored specs, and read
back as initializers (``load_initializer``) or as the configuration ``train --config`` retrains.

A best-config file holds, per rank, the trial's whole spec (every ``data``, ``model``, ``init``,
``train`` and ``metrics`` key, so ``python -m pipeline train --config`` reproduces the trial), the
measured metrics and where they came from (study, trial number, MLflow run ids); under an
``init.parametrization`` other than sp also its per-layer learning-rate and weight-decay
multipliers (``lr_multipliers``, ``weight_decay_multipliers``: parameter-path glob -> number).

The answer comes first: one entry per network for the arm ``recommend`` recommends
(``pipeline.reports.recommend``), the trial at that arm's best learning rate, so
``train.learning_rate`` is LR*, with ``source: recommendation`` and an ``answer`` block (the
network, the arm and its tie set, LR* and its basin, the steps and P(best), the sentence); then
the study's fastest single trials, ``source: top trial``, ranks continuing. Rank 0 is thus the
first network's answer. A network with nothing to recommend is named in ``not_recommended``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline.config import RUN_SECTIONS
from pipeline.core.initializers import make_bias_initializer, make_initializer, resolve_gain


def best_document(
    study,
    top_k: int,
    run_ids: dict[int, str | None],
    parent_run_id: str | None,
    storage: str,
    answers: dict | None = None,
    baseline: str = "torch_default",
    margin: float | None = None,
) -> dict:
    """The YAML document of a study: first the answer, one entry per network for its
    recommended arm (``recommended[0]`` of ``answers``, the ``recommend --json`` document,
    computed here with ``baseline`` and ``margin`` when not given) at its best learning rate,
    ``source: recommendation`` with an ``answer`` block; then the study's top ``top_k`` single
    trials, ``source: top trial``, ranks continuing. Networks with nothing to recommend are
    listed in ``not_recommended``."""
    from pipeline.search.study import ranked_trials

    if answers is None:
        from pipeline.reports.recommend import recommendations

        kwargs = {} if margin is None else {"margin": margin}
        answers = recommendations(study, baseline, **kwargs)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    configs, not_recommended = [], []
    for network in answers.get("networks", []):
        picked = answer_trial(network)
        if picked is None:
            not_recommended.append({"network": network["network"], "summary": network["summary"]})
            continue
        arm, number = picked
        trial = by_number[number]
        entry = _entry(study, trial, len(configs), run_ids, parent_run_id, storage)
        configs.append(
            {
                "rank": entry.pop("rank"),
                "source": "recommendation",
                "answer": answer_block(network, arm, entry["train"]["learning_rate"]),
                **entry,
            }
        )
    for trial in ranked_trials(study)[:top_k]:
        entry = _entry(study, trial, len(configs), run_ids, parent_run_id, storage)
        configs.append({"rank": entry.pop("rank"), "source": "top trial", **entry})
    return {
        "study": study.study_name,
        "objectives": [str(d.name).lower() for d in study.directions],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "recommend": {
            k: answers.get(k) for k in ("design", "level", "tie_margin", "baseline") if k in answers
        },
        "not_recommended": not_recommended,
        "configs": configs,
    }


def answer_trial(network: dict) -> tuple[str, int] | None:
    """(arm, trial number) of a network's answer: its recommended arm (``recommended[0]``) and
    the first trial measured at that arm's best learning rate; None when nothing is
    recommended."""
    if not network.get("recommended"):
        return None
    arm = network["recommended"][0]
    entry = next((a for a in network["arms"] if a["arm"] == arm), None)
    if entry is None or not entry.get("trials_at_best_lr"):
        return None
    return arm, int(entry["trials_at_best_lr"][0])


def answer_block(network: dict, arm: str, learning_rate: float) -> dict:
    """What a best file says about the answer it exports: the network, the arm and its tie set,
    the learning rate (the trial's own, LR*) with its basin, the steps and how sure."""
    a = next(x for x in network["arms"] if x["arm"] == arm)
    return {
        "network": network["network"],
        "arm": arm,
        "recommended": list(network["recommended"]),
        "learning_rate": float(learning_rate),
        "lr_basin": a.get("basin"),
        "lr_within_1_5x": a.get("within_1_5x"),
        "best_lr_at_edge": bool(a.get("best_lr_at_edge")),
        "steps": a.get("steps"),
        "steps_ci": a.get("steps_ci"),
        "p_best": a.get("p_best"),
        "summary": network["summary"],
    }


def _entry(study, trial, rank: int, run_ids: dict, parent_run_id: str | None, storage: str) -> dict:
    """One trial as a best-file entry: its whole spec, measured metrics and provenance."""
    from pipeline.search.study import trial_metrics, trial_spec

    nested = trial_spec(study, trial).nested()
    init = nested["init"]
    init["gain_value"] = resolve_gain(
        init["weights"],
        init["gain"],
        nested["model"]["activation"],
        nested["model"]["negative_slope"],
    )
    return {
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


def parametrization_entry(nested: dict) -> dict:
    """What a reader of the best file needs to apply ``init.parametrization`` without running
    code (its name, ``model.base_width`` and ``model.base_depth`` are in the spec itself): per
    parameter-path glob of the built-in network, the multipliers of train.learning_rate and
    train.weight_decay (``pipeline.reuse.rates.rate_table``, the engine's own rule). Empty for
    sp and for a user's module (its multipliers need the module: docs/mup.md)."""
    if nested["init"]["parametrization"] == "sp" or nested["model"]["kind"] == "custom":
        return {}
    from pipeline.reuse.rates import lr_multipliers

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
    """``document`` as YAML at ``path``, whole or not at all: written beside it under a temporary
    name and renamed over it; on any failure (or Ctrl-C) the old file stays and no temporary
    is left."""
    from pipeline.writing import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def read_best(path: str | Path, rank: int = 0) -> dict:
    """Config ``rank`` of a best-config file; a ``LookupError`` names what is missing."""
    path = Path(path)
    if not path.exists():
        raise LookupError(f"no best-config file at {path}: run `make best` first")
    document = yaml.safe_load(path.read_text("utf-8")) or {}
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

    >>> import flax.nnx as nnx
    >>> layer = nnx.Linear(64, 64, kernel_init=load_initializer("conf/best/default.yaml"),
    ...                    rngs=nnx.Rngs(0))
    """
    entry = read_best(path, rank)
    init = entry["init"]
    if param is None:
        params = {k: init[k] for k in ("mode", "std", "limit", "value")}
        return make_initializer(init["weights"], float(init["gain_value"]), params)
    from pipeline.reuse.resolve import init_spec  # the rules resolved as every export does

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
    >>> sorted(params)
    ['Dense_0', 'Dense_1', 'Dense_2']
    """
    import jax
    import jax.numpy as jnp

    from pipeline.config import TrialSpec
    from pipeline.core.initializers import (
        INITIALIZERS,
        bias_draw,
        bias_moments,
        bias_unit,
        unit_draw,
    )
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
            draw = bias_draw(r["bias"], r["weights"])  # PyTorch's bias: uniform
            units = [bias_unit(draw, jax.random.normal(kk, leaf.layer_shape)) for kk in keys]
            layers = [r["scale"] * (mean + std * u) for u in units]
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
