"""Optuna storage and study handles: embedded journal file by default, any Optuna URL otherwise.

The default is ``<runs_dir>/optuna.journal`` (Optuna's JournalStorage, file backend): measured
here with TPE and batches of 64 it cost about 9 ms per trial against 57 ms for SQLite, and it is
safe for several worker processes on one host.
"""

from __future__ import annotations

import math
import socket
import zlib
from pathlib import Path

import numpy as np
import optuna
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import RUN_KEYS, SPEC_ATTR, ConfigError, Space, TrialSpec, redacted
from pipeline.core.metrics import SUMMARY_KEYS
from pipeline.search import samplers


def storage_spec(cfg) -> str:
    return cfg.study.storage or str(Path(cfg.runs_dir) / "optuna.journal")


def make_storage(spec: str):
    """An Optuna storage from a URL (``sqlite:///``, ``postgresql://``, ...) or a journal path."""
    if "://" in spec:
        return _with_driver(spec)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3; the ``postgres`` extra installs
    psycopg2, so name it when psycopg 3 is missing."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def directions(cfg) -> list[str]:
    return ["minimize"] * len(cfg.study.objectives)


def objective_values(cfg, metrics: dict[str, float]) -> list[float]:
    """What a trial tells Optuna: the shaped objective for steps_to_target, counts as they are."""
    return [
        metrics["objective"] if o == "steps_to_target" else metrics[o] for o in cfg.study.objectives
    ]


def load_study(cfg) -> optuna.Study:
    """An existing study, or a one-line ``LookupError`` naming the storage."""
    spec = storage_spec(cfg)
    if "://" not in spec and not Path(spec).exists():
        raise LookupError(f"no study storage at {spec}: run `make sweep` first")
    try:
        return optuna.load_study(study_name=cfg.study.name, storage=make_storage(spec))
    except KeyError:
        names = optuna.get_all_study_names(make_storage(spec))
        raise LookupError(
            f"no study named {cfg.study.name!r} in {redacted(spec)} "
            f"(studies: {', '.join(names) or 'none'})"
        ) from None


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first (Pareto front first for several objectives)."""
    done = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    if len(study.directions) == 1:
        return sorted(done, key=lambda t: t.value)
    front = {t.number for t in study.best_trials}
    return sorted(done, key=lambda t: (t.number not in front, *t.values))


def trial_spec(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> TrialSpec:
    """The spec a trial trained with, as the sweep stored it (``spec`` user attribute).

    A study written before specs were stored (December 2026) has only its base config and the
    sampled params; that rebuild misses values its space fixed, and its keys' defaults stand in
    for keys it did not store."""
    stored = trial.user_attrs.get(SPEC_ATTR)
    if stored is not None:  # a key added since the study was written: its default is the old way
        return TrialSpec.from_flat(stored, fill_defaults=True)
    legacy = {**study.user_attrs.get("config", {}), **trial.params}
    return TrialSpec.from_flat({k: v for k, v in legacy.items() if k in RUN_KEYS}, True)


def trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    stored = trial.user_attrs.get("metrics", {})
    return {k: stored[k] for k in SUMMARY_KEYS if k in stored}


SEED_STEPS_ATTR = "seed_steps"  # a trial's steps to target, one per seed


def trial_seed_steps(trial: optuna.trial.FrozenTrial) -> list[float]:
    """A trial's steps to target per seed; its median alone for a study written before they
    were stored (January 2027)."""
    stored = trial.user_attrs.get(SEED_STEPS_ATTR)
    if stored:
        return [float(v) for v in stored]
    return [float(trial_metrics(trial).get("steps_to_target", math.inf))]


SEED_DIVERGED_ATTR = "seed_diverged"  # per seed: 1 if it diverged (``seed_diverged``)
# A seed whose final smoothed loss ends above this many times its initial loss diverged, NaN or
# not (a tanh network at too large a rate climbs to 5-20x ln 10 on digits; one that is merely
# stuck stays within a percent of its start).
DIVERGED_LOSS_FACTOR = 1.5


def seed_diverged(seeds: list[dict[str, float]]) -> list[int]:
    """Per seed of a result: whether it diverged, its loss NaN/Inf or its final (smoothed)
    training loss above ``DIVERGED_LOSS_FACTOR`` times its initial one (what ``recommend``
    calls the divergence rate)."""
    return [
        int(
            bool(s["diverged"])
            or not s["final_train_loss"] <= DIVERGED_LOSS_FACTOR * s["initial_train_loss"]
        )
        for s in seeds
    ]


def trial_seed_diverged(trial: optuna.trial.FrozenTrial, seeds: int) -> list[int]:
    """A trial's per-seed divergence; for a study written before it was stored, the trial's
    ``diverged`` metric (any seed) for every seed."""
    stored = trial.user_attrs.get(SEED_DIVERGED_ATTR)
    if stored is not None and len(stored) == seeds:
        return [int(v) for v in stored]
    return [int(bool(trial_metrics(trial).get("diverged", 0)))] * seeds


# Theory's prediction for a trial (``predict.trial_prediction``: ``theory.*`` keys), stored when
# the trial ran with ``metrics.diagnostics`` (the sweep computes it then, for MLflow), so the
# reports read it instead of computing it again; ``{}`` where theory does not apply.
THEORY_ATTR = "theory"


def stored_theory(prediction: dict[str, float]) -> dict[str, float | str]:
    """A prediction as JSON: an infinite depth scale (exactly critical) or a NaN as its name,
    ``"inf"`` or ``"nan"``, which ``float`` reads back (strict JSON has no such numbers)."""
    return {k: float(v) if math.isfinite(v) else str(float(v)) for k, v in prediction.items()}


def trial_theory(trial: optuna.trial.FrozenTrial) -> dict[str, float] | None:
    """A trial's stored prediction; None where it was not stored (a trial without diagnostics,
    or a study written before it was stored, issue 25): compute it from the spec then."""
    stored = trial.user_attrs.get(THEORY_ATTR)
    return None if stored is None else {k: float(v) for k, v in stored.items()}


# The study's question: the settings it was asked with (every run key but the few that change
# nothing measured, the space, the design), stored once when the study is created.
QUESTION_ATTR = "question"
NOT_THE_QUESTION = ("metrics.curve_every_steps", "metrics.diagnostics")
DESIGN_KEYS = ("study.design", "study.grid_per_decade", "study.grid_limits", "study.objectives")


def question(cfg, space: Space) -> dict:
    """What a study asks: ``settings`` (dotted run keys and the design keys) and ``space``."""
    from omegaconf import OmegaConf

    from pipeline.config import to_flat_dict

    flat = to_flat_dict(cfg)
    settings = {k: v for k, v in flat.items() if k in RUN_KEYS and k not in NOT_THE_QUESTION}
    for k in DESIGN_KEYS:
        value = OmegaConf.select(cfg, k)
        settings[k] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return {"settings": settings, "space": dict(space.entries)}


def stored_question(cfg) -> dict | None:
    """The question stored with ``cfg``'s study (None: no such study yet, or one written
    before questions were stored); reads only, so nothing is written when it differs."""
    spec = storage_spec(cfg)
    if "://" not in spec and not Path(spec).exists():
        return None
    try:
        study = optuna.load_study(study_name=cfg.study.name, storage=make_storage(spec))
    except KeyError:
        return None
    except (ImportError, OSError, SQLAlchemyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LookupError(
            f"cannot open study.storage={redacted(spec)}: {redacted(reason)}"
        ) from None
    return study.user_attrs.get(QUESTION_ATTR)


def check_question(cfg, space: Space) -> None:
    """A study is its question: a sweep whose settings differ from those stored under its study
    name is refused in one line before anything is written (``sweep --resume`` continues the
    stored study as it was asked)."""
    stored = stored_question(cfg)
    if stored is None:
        return
    changes = question_changes(stored, question(cfg, space))
    if changes:
        name = cfg.study.name
        shown = ", ".join(changes[:3]) + (
            f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        raise ConfigError(
            f"study {name!r} was asked with other settings: {shown}; give this question its "
            f"own name (study.name={name}-2) or add --resume to continue {name!r} as it was asked"
        )


def resume_config(cfg, space: Space):
    """``sweep --resume``: ``cfg`` with the question stored under its study name in place of
    its own (the bookkeeping it names, n_trials, storage, tracking, engine, stays); and the
    changes from what was asked that this ignores."""
    from omegaconf import OmegaConf

    from pipeline.config import load_config

    stored = stored_question(cfg)
    if stored is None:
        raise LookupError(
            f"no study {cfg.study.name!r} with stored settings in {redacted(storage_spec(cfg))} "
            "to resume: run it without --resume"
        )
    layer: dict = {}
    for key, value in stored["settings"].items():
        section, name = key.split(".")
        layer.setdefault(section, {})[name] = value
    for key, value in stored["space"].items():
        node = layer.setdefault("space", {})
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    layer.setdefault("space", {})
    kept = {s: OmegaConf.to_container(cfg[s]) for s in ("study", "tracking", "engine", "report")}
    for key in DESIGN_KEYS:
        kept["study"].pop(key.split(".")[1], None)
    kept["runs_dir"] = cfg.runs_dir
    name = cfg.study.name
    resumed = load_config([], None, [(layer, f"study {name!r}"), (kept, "the command line")])
    return resumed, question_changes(stored, question(cfg, space))


def question_changes(stored: dict, asked: dict) -> list[str]:
    """``key (stored -> asked)`` for every setting or space entry that differs."""
    out = []
    for part, prefix in (("settings", ""), ("space", "space.")):
        old, new = stored.get(part, {}), asked.get(part, {})
        for k in sorted(set(old) | set(new)):
            if part == "settings" and k not in old:
                continue  # a key added to the schema since: its default is the old behaviour
            if _canonical(old.get(k)) != _canonical(new.get(k)):
                out.append(f"{prefix}{k} ({_short(old.get(k))} -> {_short(new.get(k))})")
    return out


def _canonical(v):
    import json

    return json.dumps(v, sort_keys=True, default=str)


def _short(v) -> str:
    text = "unset" if v is None else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def open_study(cfg, space: Space, worker: int | None = None) -> optuna.Study:
    """Create the study, or load it to continue up to ``study.n_trials``.

    A fresh study's sampler is seeded with ``study.seed``. A resumed one's is seeded from
    (study.seed, trials so far), and worker ``i`` of ``sweep --workers N`` adds ``i`` and the host
    name: with the seed alone a rerun would draw the same random trials again, and so would every
    worker.
    """
    spec = storage_spec(cfg)
    try:
        study = optuna.create_study(
            study_name=cfg.study.name,
            storage=make_storage(spec),
            sampler=samplers.make_sampler(cfg.study.sampler, cfg.study.seed, space),
            pruner=samplers.make_pruner(cfg.study.pruner),
            directions=directions(cfg),
            load_if_exists=True,
        )
    except (ImportError, OSError, SQLAlchemyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"study.storage={redacted(spec)}"
        raise LookupError(f"cannot open {where}: {redacted(reason)}") from None
    so_far = len(study.get_trials(deepcopy=False))
    if not so_far and QUESTION_ATTR not in study.user_attrs:
        study.set_user_attr(QUESTION_ATTR, question(cfg, space))
    if so_far or worker is not None:
        entropy = [cfg.study.seed, so_far]
        if worker is not None:
            entropy += [worker + 1, zlib.crc32(socket.gethostname().encode())]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        study.sampler = samplers.make_sampler(cfg.study.sampler, seed, space)
    # Nothing of the config is stored on the study: each trial stores its own spec, so a resumed
    # study with other settings never rewrites what earlier trials were.
    return study
