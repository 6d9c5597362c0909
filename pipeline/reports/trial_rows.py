"""The finished trials of a study as every figure and the HTML report read them: one ``Row`` per
trial (its stored spec, metrics, curves and theory's prediction), grouped per network, and the
per-layer profile of each initializer's traces.

Read from what the study stores alone (Optuna's trials and their user attributes), so a report
can be drawn at any time; nothing here draws.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import optuna

from pipeline.config import TrialSpec
from pipeline.core import predict
from pipeline.reports import cells
from pipeline.reports.cells import group_name, network_label
from pipeline.search.study import trial_spec, trial_theory


class Row(NamedTuple):
    """One finished trial: its stored spec, its metrics, its stored curves, theory's stored
    prediction (None where the study has none: read it through ``prediction``)."""

    config: TrialSpec
    metrics: dict
    trace: dict
    theory: dict | None = None


def trial_row(study: optuna.Study, t: optuna.trial.FrozenTrial) -> Row:
    """A trial as the figures and the report's tables read it, from its user attributes."""
    return Row(
        trial_spec(study, t),
        t.user_attrs.get("metrics", {}),
        t.user_attrs.get("trace", {}),
        trial_theory(t),
    )


def study_rows(study: optuna.Study) -> list[Row]:
    return [
        trial_row(study, t)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "metrics" in t.user_attrs
    ]


def prediction(r: Row) -> dict[str, float]:
    """Theory's prediction for a row's trial: as the sweep stored it, else computed from the
    spec (a trial without diagnostics, a study written before it was stored): the same numbers."""
    return predict.trial_prediction(r.config) if r.theory is None else r.theory


def network_keys(specs) -> tuple[str, ...]:
    """The keys that name a network in the figures (``cells.network_keys``): kind, activation
    and depth, plus width, norm, heads and attention scale where the trials differ in them."""
    return cells.network_keys(specs)


def networks(rows: list[Row], keys: tuple[str, ...] | None = None) -> dict[str, list[Row]]:
    """Rows per network, labelled like a recommendation row (``mlp·relu·d16``), in key order;
    ``keys`` defaults to ``network_keys`` of the rows."""
    keys = keys or network_keys([r.config for r in rows])
    groups: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: [r.config[k] for k in keys]):
        groups.setdefault(network_label({k: r.config[k] for k in keys}), []).append(r)
    return groups


class Profile(NamedTuple):
    """A per-layer trace of one initializer's trials on one network."""

    median: np.ndarray  # per layer, over the trials (each trial's trace is its seeds' median)
    low: np.ndarray  # 25th percentile
    high: np.ndarray  # 75th percentile
    trials: int
    zero: bool  # every value exactly zero: nothing a log axis can draw


def layer_profiles(rows: list[Row], key: str) -> dict[str, Profile]:
    """Per initializer (``cells.group_name``): median and interquartile band of the trace
    ``key`` (e.g. ``init_backprop_norm``) over the rows' trials, layer by layer. A value that is
    not positive is NaN in the result: a log axis has no place for it."""
    traces: dict[str, list[np.ndarray]] = {}
    for r in rows:
        if key in r.trace:
            traces.setdefault(group_name(r.config.init.weights), []).append(
                np.asarray(r.trace[key], float)
            )
    profiles = {}
    for name, arrays in sorted(traces.items()):
        table = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
        for i, a in enumerate(arrays):
            table[i, : len(a)] = np.where(np.isfinite(a), a, np.nan)
        finite = table[np.isfinite(table)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a layer no trial has
            low, median, high = np.nanpercentile(table, [25, 50, 75], axis=0)
        profiles[name] = Profile(
            *(np.where(v > 0, v, np.nan) for v in (median, low, high)),
            len(arrays),
            bool(finite.size) and not finite.any(),
        )
    return profiles
