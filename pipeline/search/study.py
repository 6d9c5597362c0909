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

from pipeline.config import RUN_KEYS, SPEC_ATTR, Space, TrialSpec, redacted
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
    if so_far or worker is not None:
        entropy = [cfg.study.seed, so_far]
        if worker is not None:
            entropy += [worker + 1, zlib.crc32(socket.gethostname().encode())]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        study.sampler = samplers.make_sampler(cfg.study.sampler, seed, space)
    # Nothing of the config is stored on the study: each trial stores its own spec, so a resumed
    # study with other settings never rewrites what earlier trials were.
    return study
