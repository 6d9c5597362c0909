"""The LR x arm heatmap (``lr_heatmap.png``): what it plots, on a planted grid study whose every
cell, basin and best learning rate is known, and that it is drawn (through ``sweep_plots``, as
the sweep's figures process and the report draw it)."""

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import TINY, add_planted_trial

from pipeline.config import TrialSpec, load_config
from pipeline.reports import heatmap, plots
from pipeline.reports.heatmap import DIVERGED, NEVER, heatmap_panels, network_panel
from pipeline.reports.recommend import recommendations
from pipeline.search.arms import study_networks

BUDGET = 60
X = BUDGET + 1  # a seed that never reached the target, as a sweep stores it
LRS = tuple(10 ** (-2 + k / 2) for k in range(5))  # 0.01 .. 1, half-decade grid
# Per arm, per learning rate: the seeds' steps and whether each diverged (None: not tried).
# he_normal: every seed reaches at 0.01-0.1 (its basin), fastest at 0.1; two of three at 0.316
# (outside the basin); all diverge at 1. torch_default: never at 0.01, a basin 0.0316-0.316
# with its best at 0.316 (the grid's edge for it), not tried at 1. orthogonal: one seed reaches
# at 0.1, the median never (T* only bounded). zeros: never anywhere.
PLANTED = {
    "he_normal": [
        ([40, 42, 44], [0, 0, 0]),
        ([20, 22, 24], [0, 0, 0]),
        ([10, 11, 12], [0, 0, 0]),
        ([30, 32, X], [0, 0, 0]),
        ([X, X, X], [1, 1, 1]),
    ],
    "torch_default": [
        ([X, X, X], [0, 0, 0]),
        ([50, 52, 54], [0, 0, 0]),
        ([30, 31, 33], [0, 0, 0]),
        ([25, 26, 27], [0, 0, 0]),
        None,
    ],
    "orthogonal": [([X, X, X], [0, 0, 0])] * 2
    + [([55, X, X], [0, 0, 0])]
    + [([X, X, X], [0, 0, 0])] * 2,
    "zeros": [([X, X, X], [0, 0, 0])] * 5,
}


def _add(study, base, distributions, depth, weights, lr, steps, diverged):
    params = {"model.depth": depth, "init.weights": weights, "train.learning_rate": lr}
    median = float(np.median(steps))
    metrics = {
        "steps_to_target": median,
        "objective": median,
        "explosion_count": 0,
        "final_val_accuracy": 0.5,
    }
    trace = {"loss_steps": [0, 20, 40], "loss": [2.3, 1.5, 1.0]}
    add_planted_trial(
        study, base.with_values(params), params, distributions, steps, diverged,
        metrics=metrics, trace=trace,
    )  # fmt: skip


def grid_study(grid: bool = True) -> optuna.Study:
    """Network d2: the ``PLANTED`` grid (left out with ``grid=False``). Network d3: every arm at
    one learning rate (0.1), so it has no heatmap panel."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    base = TrialSpec.of_config(
        load_config([*TINY, f"train.steps={BUDGET}", "train.seeds=3", "init.bias=auto"])
    )
    distributions = {
        "model.depth": CategoricalDistribution((2, 3)),
        "init.weights": CategoricalDistribution(tuple(PLANTED)),
        "train.learning_rate": FloatDistribution(1e-3, 10.0, log=True),
    }
    study = optuna.create_study(study_name="grid")
    for weights, row in PLANTED.items():
        for lr, cell in zip(LRS, row):
            if cell is not None and grid:
                _add(study, base, distributions, 2, weights, lr, *cell)
        _add(study, base, distributions, 3, weights, 0.1, *row[2])
    return study


@pytest.fixture(scope="module")
def planted():
    study = grid_study()
    return study, study_networks(study), recommendations(study)


def test_panels_hold_the_medians_markers_basins_and_best_rates_of_the_answer(planted):
    study, networks, document = planted
    [panel] = heatmap_panels(networks, document)  # d3 has one learning rate: no panel
    [d2, _] = document["networks"]
    assert panel.network == d2["network"] == "mlp·relu·d2"
    # Rows in the answer's order, the recommendation its tie set.
    assert panel.arms == [a["arm"] for a in d2["arms"]]
    assert panel.arms == ["he_normal", "torch_default", "orthogonal", "zeros"]
    assert panel.recommended == d2["recommended"] == ["he_normal"]
    np.testing.assert_allclose(panel.lrs, LRS)
    assert panel.budget == BUDGET and panel.seeds == 3 and not panel.binned
    rows = dict(zip(panel.arms, panel.cells))

    def show(cell):
        return None if cell is None else cell.mark or cell.median

    assert [show(c) for c in rows["he_normal"]] == [42, 22, 11, 32, DIVERGED]
    assert [show(c) for c in rows["torch_default"]] == [NEVER, 52, 31, 26, None]  # not tried
    assert [show(c) for c in rows["orthogonal"]] == [NEVER] * 5  # one seed of three at 0.1
    assert [show(c) for c in rows["zeros"]] == [NEVER] * 5
    assert rows["he_normal"][3].reached == pytest.approx(2 / 3)
    assert math.isinf(rows["zeros"][0].median) and rows["zeros"][0].seeds == 3
    # Basins and best rates are the answer's, as columns.
    arms = {a["arm"]: a for a in d2["arms"]}
    assert arms["he_normal"]["basin"] == pytest.approx([0.01, 0.1])
    assert arms["torch_default"]["basin"] == pytest.approx([0.03162, 0.3162], rel=1e-3)
    basins = dict(zip(panel.arms, panel.basins))
    assert basins == {
        "he_normal": (0, 2),
        "torch_default": (1, 3),
        "orthogonal": None,
        "zeros": None,
    }
    best = dict(zip(panel.arms, panel.best))
    assert arms["orthogonal"]["steps_censored"] and arms["zeros"]["fails"]
    assert best == {"he_normal": 2, "torch_default": 3, "orthogonal": 2, "zeros": None}
    for arm, j in best.items():
        if j is not None:
            assert panel.lrs[j] == pytest.approx(arms[arm]["best_lr"], rel=1e-3)
    assert dict(zip(panel.arms, panel.fails)) == {
        "he_normal": False,
        "torch_default": False,
        "orthogonal": False,
        "zeros": True,
    }
    assert sorted(panel.finite_medians()) == [11, 22, 26, 31, 32, 42, 52]


def test_a_search_with_many_rates_is_binned_by_quarter_decades(planted):
    _, networks, document = planted
    network = networks[0]
    rng = np.random.default_rng(0)
    from pipeline.core.estimate import Point

    lrs = 10 ** rng.uniform(-3, 0, 80)
    network.arms = {"he_normal": [Point(float(v), (20.0, 21.0, 22.0)) for v in sorted(lrs)]}
    answer = {"arms": [], "recommended": [], "seeds": 3}
    panel = network_panel(network, answer)
    assert panel.binned and len(panel.lrs) <= 3 * 4 + 1
    assert all(c is not None for c in panel.cells[0][1:-1])  # 80 draws fill the inner bins
    assert np.all(np.diff(np.log10(panel.lrs)) == pytest.approx(0.25))


def test_the_heatmap_is_drawn_by_sweep_plots(planted, tmp_path, monkeypatch):
    study, _, document = planted
    monkeypatch.setattr(plots, "FIGURES", {})  # the other figures: not this test's
    monkeypatch.setattr(plots, "_optuna_figure", lambda *a, **k: None)
    [path] = plots.sweep_plots(study, tmp_path, answer=document)
    assert path == tmp_path / "lr_heatmap.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    # Without the answer it computes its own.
    assert heatmap.lr_heatmap(study, tmp_path / "again.png") == tmp_path / "again.png"


def test_no_heatmap_without_two_learning_rates(tmp_path):
    study = grid_study(grid=False)
    assert heatmap.lr_heatmap(study, tmp_path / "none.png") is None
    assert not Path(tmp_path / "none.png").exists()


def test_a_basin_is_named_by_its_width_in_decades():
    from pipeline.reports.recommend import _basin_words

    assert _basin_words({"basin_decades": 1.0}) == "basin, 1 decade"
    assert _basin_words({"basin_decades": 0.75}) == "narrow basin, 0.75 decades"
    assert _basin_words({"basin_decades": 2.5}) == "wide basin, 2.5 decades"
    assert _basin_words({"basin_decades": None}) == "no rate where every seed reached it"
