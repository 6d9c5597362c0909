"""Which initialization should this network use, at which learning rate, and how sure: the answer
per network of a finished study (``make recommend``, the end of ``make sweep``, the report).

The study is read as networks, arms and points (``pipeline.search.arms``); each network's arms
are estimated together (``pipeline.core.estimate``: T* at the tuned learning rate, its interval,
the ratio to the best arm, P(best), the basins). The recommendation is the set of arms that tie
with the best (widest basin first); the baseline is ``report.baseline``, a framework default as
it ships (gain 1, its own bias), at its own tuned learning rate and at the recommendation's.

``recommendations(study)`` returns the ``recommend --json`` document (docs/recommendations.md
states the contract): ``{"study", "design", "level", "tie_margin", "networks": [...]}``, each
network ``{network, keys, recommended, summary, baseline, arms, ...}``.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from pipeline.core.estimate import LEVEL, TIE_MARGIN, ArmEstimate, estimate_network
from pipeline.core.initializers import resolve_gain
from pipeline.reports.cells import scale_to_critical
from pipeline.search.arms import LR, Network, network_label, study_networks
from pipeline.search.study import QUESTION_ATTR

__all__ = ["LEVEL", "network_label", "recommendations", "summary_sentence"]

FRAMEWORK_WORDS = {
    "torch_default": "PyTorch's default",
    "flax_default": "Flax's default",
    "keras_default": "Keras' default",
}


def _num(v: float | None) -> float | None:
    """JSON numbers: 4 significant digits; None for a missing or infinite value."""
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.4g}")


def _span(v: list | None) -> list | None:
    return None if v is None else [_num(x) if x is not None else None for x in v]


def arm_entry(e: ArmEstimate, network: Network) -> dict[str, Any]:
    """One arm of the ``recommend --json`` contract (docs/recommendations.md)."""
    spec = network.specs[e.arm]
    best = e.best_point
    gain = spec.init.gain
    if best is not None and best.extra:  # a gain drawn from a range: the best point's
        gain = dict(best.extra).get("init.gain", gain)
    activation, slope = spec.model.activation, spec.model.negative_slope
    return {
        "arm": e.arm,
        "weights": spec.init.weights,
        "gain": _num(resolve_gain(spec.init.weights, gain, activation, slope)),
        "bias": spec.init.bias,
        "sigma_w2_over_critical": _num(scale_to_critical(spec.with_values({"init.gain": gain}))),
        "lrs_tried": [_num(x) for x in e.lrs_tried],
        "best_lr": _num(e.best_lr),
        "best_lr_at_edge": e.best_lr_at_edge,
        "steps": _num(e.steps),
        "steps_ci": _span(e.steps_ci),
        "steps_censored": e.steps_censored,
        "ratio_to_best": _num(e.ratio_to_best),
        "ratio_ci": _span(e.ratio_ci),
        "ratio_censored": e.ratio_censored,
        "p_best": _num(e.p_best),
        "basin": _span(e.basin),
        "basin_decades": _num(e.basin_decades),
        "basin_two_thirds": _span(e.basin_two_thirds),
        "within_1_5x": _span(e.within_1_5x),
        "divergence_lr": _num(e.divergence_lr),
        "fails": e.fails,
        "seeds_reached_at_best_lr": None
        if best is None
        else int(sum(map(math.isfinite, best.steps))),
        "trials_at_best_lr": [] if best is None else list(best.trials),
    }


def _order(e: ArmEstimate) -> tuple:
    return (e.fails, e.steps_censored, e.steps if e.steps is not None else math.inf, e.arm)


def network_answer(network: Network, baseline: str, margin: float = TIE_MARGIN) -> dict:
    """One network's answer: its arms estimated together, the tie set, the baseline, the
    sentence."""
    est = estimate_network(network.arms, network.budget, baseline, margin=margin)
    tuned_beyond_lr = [k for k in network.tuned if k != LR]
    if tuned_beyond_lr:  # each point is one trial of a random box: no basin to speak of
        for e in est.arms.values():
            e.basin = e.basin_two_thirds = e.within_1_5x = None
            e.basin_decades = None
    arms = [arm_entry(e, network) for e in sorted(est.arms.values(), key=_order)]
    lrs = sorted({x for e in est.arms.values() for x in e.lrs_tried})
    base = {
        k: (_num(v) if isinstance(v, float) else _span(v) if isinstance(v, list) else v)
        for k, v in (est.baseline or {}).items()
    }
    notes = []
    if tuned_beyond_lr:
        notes.append(
            f"each arm was tuned over a random box of ({', '.join(tuned_beyond_lr)}, "
            "learning rate), not one shared grid: T* is its best trial, and arms were not tried "
            "at the same points (study.design=grid compares them equally)"
        )
    if est.seeds < 2:
        notes.append("one seed per point: no interval, and ties are the arms within the margin")
    if not base.get("measured", True):
        notes.append(f"{baseline} was not measured: add it to space.init.weights")
    answer = {
        "network": network.label,
        "keys": dict(network.values),
        "recommended": list(est.recommended),
        "summary": "",
        "baseline": base,
        "arms": arms,
        "budget": network.budget,
        "seeds": est.seeds,
        "lrs_tried": [_num(x) for x in lrs],
        "notes": notes,
        "bandwidth": _num(est.bandwidth),
        "tie_margin": margin,
    }
    answer["summary"] = summary_sentence(answer)
    return answer


def recommendations(
    study: optuna.Study, baseline: str = "torch_default", margin: float = TIE_MARGIN
) -> dict:
    """The ``recommend --json`` document: one answer per network the study covers."""
    question = study.user_attrs.get(QUESTION_ATTR) or {}
    design = (question.get("settings") or {}).get("study.design", "search")
    networks = [network_answer(n, baseline, margin) for n in study_networks(study)]
    return {
        "study": study.study_name,
        "design": design,
        "level": LEVEL,
        "tie_margin": margin,
        "baseline": baseline,
        "networks": networks,
    }


# --- the answer in words -------------------------------------------------------------------------


def lr_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def span_text(span: list | None) -> str:
    if not span:
        return "-"
    lo, hi = span
    return lr_text(lo) if lo == hi else f"{lr_text(lo)}–{lr_text(hi)}"


def ratio_text(value: float | None, ci: list | None = None, censored: bool = False) -> str:
    """``2.4× (1.9–2.7)``, ``≥4.2×`` for a lower bound; ``-`` for none."""
    if value is None:
        return "-"
    text = f"{'≥' if censored else ''}{value:.2g}×"
    if ci and not censored:
        lo, hi = ci
        text += f" ({'?' if lo is None else f'{lo:.2g}'}–{'∞' if hi is None else f'{hi:.2g}'})"
    return text


def who(arm: str) -> str:
    return FRAMEWORK_WORDS.get(arm, arm)


def _basin_words(arm: dict) -> str:
    decades = arm["basin_decades"]
    if decades is None:
        return "no rate where every seed reached it"
    width = "narrow basin" if decades <= 0.75 else "wide basin" if decades >= 1.5 else "basin"
    unit = "decade" if f"{decades:.2g}" == "1" else "decades"
    return f"{width}, {decades:.2g} {unit}"


def _list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def summary_sentence(answer: dict) -> str:
    """One sentence per network: what to use at which learning rate, how sure, what fails, and
    the framework default beside it."""
    label, arms = answer["network"], {a["arm"]: a for a in answer["arms"]}
    tried = (
        span_text([answer["lrs_tried"][0], answer["lrs_tried"][-1]]) if answer["lrs_tried"] else "-"
    )
    rec = answer["recommended"]
    if not rec:
        if all(a["fails"] for a in answer["arms"]):
            return (
                f"{label}: nothing to recommend: no initializer reached the target at any "
                f"learning rate tried ({tried}) within {answer['budget']} steps."
            )
        close = next(a for a in answer["arms"] if not a["fails"])
        return (
            f"{label}: nothing to recommend: no initializer reached the target in most seeds at "
            f"any learning rate tried ({tried}); closest: {close['arm']} "
            f"({close['seeds_reached_at_best_lr']} of {answer['seeds']} seeds at LR "
            f"{lr_text(close['best_lr'])})."
        )
    lead = arms[rec[0]]
    where = span_text(lead["basin"]) if lead["basin"] else lr_text(lead["best_lr"])
    gain = "gain 1" if lead["gain"] == 1 else f"gain {lead['gain']:.3g}"
    parts = []
    if len(rec) == 1:
        sure = f"P(best) {lead['p_best']:.2f}" if lead["p_best"] is not None else "one seed"
        parts.append(
            f"{label}: use {lead['arm']} ({gain}) at LR {where} ({_basin_words(lead)}; best "
            f"{lr_text(lead['best_lr'])}, {lead['steps']:.0f} steps, {sure})"
        )
    else:
        parts.append(
            f"{label}: {_list(rec)} tie (inside the noise or within "
            f"{answer['tie_margin']:.0%}); {lead['arm']} ({gain}) has the widest basin: LR {where} "
            f"({_basin_words(lead)})"
        )
    if lead["best_lr_at_edge"]:
        parts.append("its best LR is at the edge of those tried")
    base = answer["baseline"]
    base_arm = base.get("arm") if base.get("measured") else None
    name = who(base_arm or "")
    others = [a for a in arms if a not in rec]
    failing = [a for a in others if arms[a]["fails"] and a != base_arm]
    base_fails = base_arm is not None and base["fails"]
    if others and len(failing) + base_fails == len(others):
        included = f", {name} included" if base_fails else ""
        parts.append(f"no other initializer trained at any LR tried ({tried}){included}")
        base_arm = None  # said
    elif failing:
        verb = "fails" if len(failing) == 1 else "fail"
        parts.append(f"{_list(failing)} {verb} at every LR tried ({tried})")
    if base_arm is None:
        pass
    elif base_fails:
        parts.append(f"{name} fails at every LR tried")
    elif base_arm in rec:
        parts.append(f"{name} is among the ties")
    elif base["ratio_own_lr"] is not None:
        ratio = ratio_text(
            base["ratio_own_lr"], base["ratio_own_lr_ci"], base["ratio_own_lr_censored"]
        )
        parts.append(
            f"{name} takes {ratio} the steps at its own best LR ({lr_text(base['best_lr'])})"
        )
    return "; ".join(parts) + "."
