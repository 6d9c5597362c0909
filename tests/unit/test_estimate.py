"""What a study estimates per arm (``pipeline.core.estimate``): planted results with known
answers, and the bootstrap's coverage by simulation from a known model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.estimate import Point, describe_arm, estimate_network, open_sides

BUDGET = 300
LRS = [round(10 ** (k / 4), 4) for k in range(-10, 1)]  # 0.00316 ... 1, quarter decades
INF = math.inf


def arm(*per_point: tuple, lrs=LRS, diverged=None) -> list[Point]:
    """Points of one arm: per learning rate, the per-seed steps (INF = never)."""
    out = []
    for i, (lr, steps) in enumerate(zip(lrs, per_point)):
        div = diverged[i] if diverged else (False,) * len(steps)
        out.append(Point(lr, tuple(float(s) for s in steps), tuple(div)))
    return out


NEVER = (INF, INF, INF)
# A basin from 0.01 to 0.316 with its best point at 0.1.
GOOD = [
    NEVER,
    NEVER,
    (250, 260, 240),
    (150, 160, 140),
    (90, 95, 85),
    (60, 62, 58),
    (40, 42, 38),
    (55, 60, 50),
    (80, 85, 75),
    NEVER,
    NEVER,
]


def test_describe_arm_reads_the_best_point_the_basin_and_the_edges():
    e = describe_arm("he_normal", arm(*GOOD), BUDGET)
    assert e.best_lr == LRS[6] and e.steps == 40 and not e.fails and not e.best_lr_at_edge
    assert e.basin == [LRS[2], LRS[8]] and e.basin_decades == pytest.approx(1.5, abs=1e-3)
    assert e.within_1_5x == [LRS[5], LRS[7]]  # 62 <= 60 and 60 <= 60: 1.5 x 40 = 60
    assert e.divergence_lr is None
    # the best point at the top of what was tried is flagged
    edge = describe_arm("x", arm(*GOOD[:7], lrs=LRS[:7]), BUDGET)
    assert edge.best_lr == LRS[6] and edge.best_lr_at_edge


def test_a_rate_that_loses_a_seed_is_not_the_best_rate():
    points = [(INF, INF, INF), (100, 110, 105), (60, 58, INF), (INF, INF, INF)]
    e = describe_arm("a", arm(*points, lrs=LRS[:4]), BUDGET)
    assert e.best_lr == LRS[1] and e.steps == 105  # not 60 at LR[2], where a seed failed
    assert e.basin == [LRS[1], LRS[1]] and e.basin_two_thirds == [LRS[1], LRS[2]]


def test_an_arm_that_never_reaches_fails_and_has_no_ratio():
    arms = {"good": arm(*GOOD), "never": arm(*([NEVER] * 11))}
    net = estimate_network(arms, BUDGET, "never")
    never = net.arms["never"]
    assert never.fails and never.steps is None and never.ratio_to_best is None
    assert never.ratio_ci is None and never.p_best is None
    assert net.recommended == ["good"]
    assert net.baseline["fails"] and net.baseline["ratio_own_lr"] is None


def test_a_censored_arm_is_a_lower_bound_and_never_in_the_tie_set():
    mostly_never = [NEVER] * 6 + [(290, INF, INF)] + [NEVER] * 4  # one seed once, in time
    arms = {"good": arm(*GOOD), "slow": arm(*mostly_never)}
    net = estimate_network(arms, BUDGET, "slow")
    slow = net.arms["slow"]
    assert not slow.fails and slow.steps_censored and slow.steps == BUDGET + 1
    assert slow.ratio_censored and slow.ratio_to_best == pytest.approx(301 / 40)
    assert net.recommended == ["good"]
    base = net.baseline
    assert base["steps_censored"] and base["ratio_own_lr_censored"]
    assert base["ratio_own_lr"] == pytest.approx(301 / 40)
    assert base["ratio_at_recommended_lr_censored"]


def test_three_identical_arms_tie_and_share_p_best():
    arms = {name: arm(*GOOD) for name in ("a", "b", "c")}
    net = estimate_network(arms, BUDGET)
    assert sorted(net.recommended) == ["a", "b", "c"]
    shares = [net.arms[n].p_best for n in "abc"]
    assert sum(shares) == pytest.approx(1.0)
    assert all(s == pytest.approx(1 / 3, abs=0.05) for s in shares)
    assert all(net.arms[n].ratio_to_best == 1.0 for n in "abc")


def test_two_identical_arms_have_p_best_about_a_half():
    net = estimate_network({"a": arm(*GOOD), "b": arm(*GOOD)}, BUDGET)
    assert net.arms["a"].p_best == pytest.approx(0.5, abs=0.05)
    assert net.arms["a"].p_best + net.arms["b"].p_best == pytest.approx(1.0)


def test_a_clearly_slower_arm_is_out_of_the_tie_set_and_the_widest_basin_leads_a_tie():
    slower = [tuple(2 * s for s in p) for p in GOOD]  # twice the steps everywhere
    narrow = [NEVER] * 5 + [(41, 43, 39), (40, 42, 38), (45, 47, 43)] + [NEVER] * 3
    net = estimate_network(
        {"good": arm(*GOOD), "slower": arm(*slower), "narrow": arm(*narrow)}, BUDGET, "slower"
    )
    assert net.arms["slower"].ratio_ci[0] > 1.5
    assert net.recommended == ["good", "narrow"]  # a tie, the wider basin first
    assert net.baseline["ratio_own_lr"] == pytest.approx(2.0)
    assert net.baseline["ratio_at_recommended_lr"] == pytest.approx(2.0)
    assert net.baseline["ratio_own_lr_ci"][0] > 1.5


def test_open_sides_say_where_a_grid_should_grow():
    assert open_sides(arm(*GOOD)) == (False, False)
    assert open_sides(arm(*GOOD[4:8], lrs=LRS[4:8])) == (True, True)  # reached at both ends
    never = arm(*([NEVER] * 4), lrs=LRS[:4])
    assert open_sides(never) == (False, True)  # stuck: a larger rate may move it
    exploding = arm(*([NEVER] * 4), lrs=LRS[:4], diverged=[(True,) * 3] * 4)
    assert open_sides(exploding) == (True, False)  # diverging: a smaller rate may tame it


def test_one_seed_gives_no_interval_and_ties_within_the_margin():
    one = {"a": arm(*[(p[0],) for p in GOOD]), "b": arm(*[(p[0] * 1.05,) for p in GOOD])}
    net = estimate_network(one, BUDGET)
    assert net.arms["a"].steps_ci is None and net.arms["a"].p_best is None
    assert net.recommended == ["a", "b"]  # 5% apart: within the 10% margin


# --- coverage by simulation ----------------------------------------------------------------------


def synthetic_network(rng, seeds: int, sigma: float, rho: float, arms: int = 3):
    """One network drawn from a known model: per arm, the log of the median steps is a parabola
    in log10(lr) (three times steeper above its optimum), a seed's log steps add
    sigma * (rho * shared_seed_effect + sqrt(1 - rho^2) * own noise), rounded to whole steps,
    never past the budget. Returns the arms' points and each arm's true T* (the lowest true
    median on the grid)."""
    lrs = np.arange(11) / 4.0
    shared = rng.standard_normal(seeds)
    t0 = rng.uniform(25, 120)
    out, truth = {}, {}
    for a in range(arms):
        top, optimum, curve = t0 * rng.uniform(1.0, 1.6), rng.uniform(0.5, 2.0), rng.uniform(0.5, 2)
        d = lrs - optimum
        mu = np.log(top) + np.where(d < 0, curve * d**2, 3 * curve * d**2)
        noise = rho * shared + math.sqrt(1 - rho**2) * rng.standard_normal((len(lrs), seeds))
        steps = np.round(np.exp(mu[:, None] + sigma * noise))
        steps = np.where(steps > BUDGET, np.inf, steps)
        out[f"arm{a}"] = [
            Point(float(10 ** (lr - 2)), tuple(s), (False,) * seeds) for lr, s in zip(lrs, steps)
        ]
        medians = np.exp(mu)
        truth[f"arm{a}"] = float(medians[medians <= BUDGET].min())
    return out, truth


def coverage(seeds: int, studies: int, sigma: float = 0.1, rho: float = 0.5):
    """Share of arms whose T* interval holds the true T*, and of arms slower than the best
    whose ratio interval holds the true ratio (the best arm's true ratio, 1, is always in)."""
    rng = np.random.default_rng(2026)
    hits_t = n_t = hits_r = n_r = 0
    for study in range(studies):
        arms, truth = synthetic_network(rng, seeds, sigma, rho)
        net = estimate_network(arms, BUDGET, seed=study)
        best = min(truth.values())
        for name, e in net.arms.items():
            lo, hi = e.steps_ci
            hits_t += lo <= truth[name] <= (INF if hi is None else hi)
            n_t += 1
            if truth[name] > best * 1.0001:
                lo, hi = e.ratio_ci
                hits_r += lo <= truth[name] / best <= (INF if hi is None else hi)
                n_r += 1
    return hits_t / n_t, hits_r / n_r


@pytest.mark.parametrize("seeds,studies", [(3, 300), (5, 150)])
def test_the_intervals_cover_the_truth_in_90_to_98_percent_of_synthetic_studies(seeds, studies):
    # Measured (2026-12-07, deterministic: fixed seeds): 3 seeds, 300 studies: T* 0.911,
    # ratio 0.977; 5 seeds, 150 studies: T* 0.947, ratio 0.973 (printed with -s).
    t_cover, r_cover = coverage(seeds, studies)
    print(f"seeds={seeds} studies={studies}: T* {t_cover:.3f}, ratio {r_cover:.3f}")
    assert 0.90 <= t_cover <= 0.98
    assert 0.90 <= r_cover <= 0.98


def test_the_coverage_check_can_fail():
    # Without smoothing, three seeds' medians can only be resampled into their own values: the
    # interval is too short and the same check rejects it.
    import pipeline.core.estimate as est

    original = est.bandwidth
    est.bandwidth = lambda arms: 0.0
    try:
        t_cover, _ = coverage(3, 100)
    finally:
        est.bandwidth = original
    assert t_cover < 0.90
