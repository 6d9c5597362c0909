"""The HTML report (`make report`): the numbers behind its figures, the static figures' zero
panels, that the page leads with the answer (per network, then the LR x arm heatmap) before the
evidence, and the page itself in headless Chromium on a planted study (numbers with closed forms,
no training: a real sweep's report is `test_end_to_end`'s): what it shows before any click, that
nothing is fetched, and that a filter redraws its tables and figures to counts computed from the
study."""

import html
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, TINY, add_planted_trial
from test_heatmap import grid_study

from pipeline.config import TrialSpec, load_config
from pipeline.core import predict
from pipeline.reports import html_report, plots, plots_signal
from pipeline.reports.cells import group_name
from pipeline.reports.html_report import write_report
from pipeline.search.study import THEORY_ATTR, ranked_trials, trial_spec

SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


def _row(weights: str, trace: list[float], depth: int = 3) -> plots.Row:
    spec = TrialSpec.of_config(load_config(TINY)).with_values(
        {"init.weights": weights, "model.depth": depth}
    )
    return plots.Row(spec, {"steps_to_target": 61}, {"init_backprop_norm": trace})


def test_layer_profiles_are_medians_and_quartiles_per_initializer():
    rng = np.random.default_rng(0)
    he = rng.lognormal(size=(7, 3))
    rows = [_row("he_normal", list(t)) for t in he[:4]] + [
        _row("he_uniform", list(t)) for t in he[4:]
    ]
    rows += [_row("zeros", [0.0, 0.0, 0.0]) for _ in range(2)]
    rows.append(_row("orthogonal", [1.0, 0.0, float("nan")]))
    profiles = plots.layer_profiles(rows, "init_backprop_norm")
    assert set(profiles) == {"he", "constant", "orthogonal"}  # he_normal and he_uniform: one line
    low, median, high = np.percentile(he, [25, 50, 75], axis=0)
    np.testing.assert_allclose(profiles["he"].median, median)
    np.testing.assert_allclose(profiles["he"].low, low)
    np.testing.assert_allclose(profiles["he"].high, high)
    assert profiles["he"].trials == 7 and not profiles["he"].zero
    assert profiles["constant"].zero and np.isnan(profiles["constant"].median).all()
    # One zero layer is a gap on the log axis, not "exactly zero"; NaN (exploded) is a gap too.
    ortho = profiles["orthogonal"]
    assert not ortho.zero and ortho.median[0] == 1.0 and np.isnan(ortho.median[1:]).all()


def test_static_gradient_figure_says_exactly_zero_instead_of_an_empty_log_axis(monkeypatch):
    monkeypatch.setattr(plots_signal, "save_figure", lambda fig, path: fig)  # the figure, unsaved
    rows = [_row("zeros", [0.0, 0.0, 0.0], depth=3), _row("he_normal", [1.0, 0.5, 0.2], depth=3)]
    rows += [_row("zeros", [0.0, 0.0], depth=2)]
    fig = plots.layer_gradients(rows, "t", Path("unused.png"))
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"mlp·relu·d2 (1 trials)", "mlp·relu·d3 (2 trials)"}  # one per network
    alone, mixed = axes["mlp·relu·d2 (1 trials)"], axes["mlp·relu·d3 (2 trials)"]
    assert alone.get_yscale() == "linear" and not alone.get_yticks().size
    assert "exactly zero at every layer" in " ".join(t.get_text() for t in alone.texts)
    assert mixed.get_yscale() == "log"
    assert [line.get_label() for line in mixed.get_lines()] == ["he (1)"]
    assert "constant (1)" in " ".join(t.get_text() for t in mixed.texts)


def test_the_reports_read_theorys_stored_prediction_and_compute_only_a_missing_one():
    """Two trials of one spec: the first stores a prediction no computation gives (chi1 = 4,
    an infinite trainable depth written as ``"inf"``), the second none (a study written before
    predictions were stored, or a trial without diagnostics)."""
    from optuna.distributions import CategoricalDistribution

    spec = TrialSpec.of_config(load_config(TINY)).with_values({"model.depth": 3, "init.gain": 1.2})
    computed = predict.trial_prediction(spec)
    planted = {**computed, "theory.chi1": 4.0, "theory.max_trainable_depth": "inf"}
    assert computed["theory.chi1"] != 4.0 and computed["theory.max_trainable_depth"] < math.inf
    study = optuna.create_study(study_name="stored")
    params, distributions = {"model.depth": 3}, {"model.depth": CategoricalDistribution((3,))}
    for steps, stored in ((10, {THEORY_ATTR: planted}), (20, {})):
        metrics = {"steps_to_target": steps, "objective": steps, "diag.init.backprop_ratio": 8.0}
        add_planted_trial(study, spec, params, distributions, [steps], metrics=metrics, **stored)
    rows = plots.study_rows(study)
    assert rows[0].theory == {
        **computed,
        "theory.chi1": 4.0,
        "theory.max_trainable_depth": math.inf,
    }
    assert rows[1].theory is None and plots.prediction(rows[1]) == computed
    assert [chi1 for chi1, _, _ in plots._chi1_points(rows)] == [4.0, computed["theory.chi1"]]
    table = html_report._best_rows(study, ranked_trials(study))  # chi1, 6 xi_c, measured ratio
    assert [r[-3:-1] for r in table] == [
        [4.0, math.inf],
        [computed["theory.chi1"], computed["theory.max_trainable_depth"]],
    ]


def test_the_page_leads_with_the_answer_then_the_evidence(tmp_path):
    """The planted grid of ``test_heatmap``: network d2 has a winner, a baseline 2.4x slower, an
    arm whose T* is only a bound and one that fails everywhere; d3 one learning rate."""
    page = write_report(grid_study(), tmp_path).read_text()
    body = page[: page.index('<script type="application/json"')]
    headings = re.findall(r"<h[23][^>]*>(.*?)</h[23]>", body)
    assert headings[0] == "The answer: which initialization per network"
    assert headings[1:3] == [
        "The evidence",
        "Single fastest trials (for reference: the answer above compares arms at their tuned "
        "learning rate)",
    ]
    assert "pooled over every network" not in page  # the family verdict (Simpson's trap) is gone
    # One <tbody> per network, each led by its sentence; then the heatmap, right after the table.
    table_at = body.index('<table id="recommend-table"')
    table_end = body.index("</table>", table_at) + len("</table>")
    bodies = re.findall(r"<tbody>(.*?)</tbody>", body[table_at:table_end])
    assert len(bodies) == 2
    d2, d3 = (html.unescape(b) for b in bodies)
    assert "mlp·relu·d2: use he_normal (gain 1) at LR 0.01–0.1" in d2
    cells = [
        re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in re.findall(r'<tr class="(?:rec|arm)">(.*?)</tr>', d2)
    ]
    rows = {row[0]: row[1:] for row in cells}
    assert list(rows) == ["★ he_normal", "torch_default", "orthogonal", "zeros"]
    # best LR, steps [CI], ×best [CI], P(best), basin, divergence LR
    he = rows["★ he_normal"]
    assert he[0] == "0.1" and he[1].startswith("11 (") and he[2].startswith("1× (")
    assert he[3:] == ["1.00", "0.01–0.1 (1 dec.)", "1"]
    assert rows["torch_default"][0] == "0.316 (edge)"  # its best is the last rate it tried
    # Most seeds never got there: T* only bounded, 61 / 11 = 5.5 at least.
    assert rows["orthogonal"][1] == "≥61" and re.fullmatch("≥5.5[45]×", rows["orthogonal"][2])
    assert rows["zeros"] == ["fails at every LR tried (0.01–1)", "-"]
    assert "Baseline PyTorch's default (torch_default, gain 1, its own bias): 26 steps at its" in d2
    assert "2.36× (" in d2 and "the steps of he_normal; at he_normal's best LR (0.1): 2.82×" in d2
    assert "mlp·relu·d3" in d3
    after = body[table_end:]
    assert after.startswith('<figure id="lr-heatmap"><img alt="lr_heatmap"')
    assert "median over the seeds of the steps" in after[: after.index("</figure>")]
    assert body.count('alt="lr_heatmap"') == 1  # not again among the static figures
    assert body.index('id="recommend-table"') < body.index('id="best-table"')
    # The filters hide a network's <tbody>: DATA.recommend names each one's network.
    raw = re.search(r'id="report-data">(.*?)</script>', page).group(1)
    data = json.loads(raw.replace("<\\/", "</"))
    labels = [data["networks"][i]["label"] for i in data["recommend"]]
    assert labels == ["mlp·relu·d2", "mlp·relu·d3"]


# The planted study: 2 activations x 2 depths x 3 initializers x 2 gains, 2 seeds each, stored
# as a sweep stores a trial (spec, metrics, steps per seed, trace), with numbers chosen so that
# every figure's content has a closed form.
GAINS = (0.5, 2.0)
STEPS = 60
SPEED = {"he_normal": 20, "torch_default": 40, "zeros": STEPS + 1}  # zeros never trains


def _planted_profile(weights: str, gain: float, depth: int) -> list[float]:
    """||dL/dh_l||: he grows by ``gain`` per layer towards the input, torch's default shrinks
    by 10x per layer, zeros is exactly zero."""
    if weights == "zeros":
        return [0.0] * depth
    if weights == "he_normal":
        return [gain ** (depth - layer) for layer in range(1, depth + 1)]
    return [10.0 ** -(depth - layer) for layer in range(1, depth + 1)]


def planted_study() -> optuna.Study:
    from optuna.distributions import CategoricalDistribution

    base = TrialSpec.of_config(load_config([*TINY, f"train.steps={STEPS}"]))
    study = optuna.create_study(study_name="planted")
    space = {
        "model.activation": ("relu", "tanh"),
        "model.depth": (2, 3),
        "init.weights": tuple(SPEED),
        "init.gain": GAINS,
    }
    distributions = {k: CategoricalDistribution(v) for k, v in space.items()}
    for activation in space["model.activation"]:
        for depth in space["model.depth"]:
            for weights, speed in SPEED.items():
                for gain in GAINS:
                    params = {
                        "model.activation": activation,
                        "model.depth": depth,
                        "init.weights": weights,
                        "init.gain": gain,
                    }
                    spec = base.with_values(params)
                    seeds = [min(speed + k, STEPS + 1) for k in (0, 2)]
                    median = float(np.median(seeds))
                    profile = _planted_profile(weights, gain, depth)
                    metrics = {
                        "steps_to_target": median,
                        "explosion_count": 0,
                        "final_val_accuracy": 0.5,
                        "objective": median,
                        "diag.init.backprop_ratio": profile[0] / profile[-1] if profile[-1] else 0,
                    }
                    trace = {
                        "loss_steps": [0, 20, 40],
                        "loss": [2.3, 2.3 * 20 / speed, 2.3 * 10 / speed],
                        "init_backprop_norm": profile,
                        "init_grad_norm": [*profile, 1.0],
                        "init_act_var": [1.0] * depth,
                    }
                    add_planted_trial(
                        study, spec, params, distributions, seeds, metrics=metrics, trace=trace
                    )
    return study


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
def test_report_filters_redraw_tables_and_figures_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    study = planted_study()
    path = write_report(study, tmp_path / "report", top_k=10)
    assert path.stat().st_size < 5e6  # Plotly inlined (compressed), the PNGs, the data
    specs = [trial_spec(study, t) for t in ranked_trials(study)]

    def trials(activation=None, depth=None, without=()):
        return [
            s
            for s in specs
            if activation in (None, s["model.activation"])
            and depth in (None, s["model.depth"])
            and group_name(s.init.weights) not in without
        ]

    assert len(trials()) == 24
    requests, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_function("document.body.dataset.drawn >= 1", timeout=60_000)

            def visible(selector: str) -> int:
                return page.locator(f"{selector}:not([hidden])").count()

            def traces(panels: str) -> list[list[dict]]:
                """Each panel's Plotly traces: name, mode, x, y."""
                return page.evaluate(
                    f"""[...document.querySelectorAll('{panels} .panel')].map(d => d.data.map(
                    t => ({{name: t.name || '', mode: t.mode, x: t.x, y: t.y}})))"""
                )

            def points(panels: str) -> list[int]:
                return [
                    sum(len(t["x"]) for t in panel if t["mode"] == "markers")
                    for panel in traces(panels)
                ]

            # Before any click: every network, the top 10 trials, both figures drawn.
            assert visible("#best-table tbody tr") == 10
            assert visible("#recommend-table tbody") == 4  # the answer: a <tbody> per network
            assert page.locator("#recommend-count").inner_text() == "4 of 4 networks shown"
            assert page.locator("h2").first.inner_text().startswith("The answer")
            assert page.locator("#profile-panels .panel .scatterlayer .trace").count() == 4 * 6
            assert points("#steps-panels") == [6, 6, 6, 6]  # every trial of each network
            # The median line of he over its two gains, layer by layer (depth 2 first).
            [he] = [t for t in traces("#profile-panels")[0] if t["name"].startswith("he ")]
            assert he["name"] == "he (2)"
            expected = [(0.5 ** (2 - layer) + 2.0 ** (2 - layer)) / 2 for layer in (1, 2)]
            np.testing.assert_allclose(he["y"], expected, rtol=1e-3)
            # zeros (family "constant") is exactly zero at every layer: said in words.
            notes = page.locator("#profile-panels .annotation-text").all_text_contents()
            assert sum("exactly zero at every layer: constant (2)" in t for t in notes) == 4
            # Theory's critical gain (chi1 = 1 at sigma_b^2 = 0): he_normal has sigma_w^2 =
            # 2 g^2, torch's default g^2 / 3; relu's edge of chaos is sigma_w^2 = 2, tanh's 1.
            lines = [
                sorted(t["x"][0] for t in panel if t["mode"] == "lines" and t["x"][0])
                for panel in traces("#steps-panels")
            ]
            relu, tanh = [1.0, 6**0.5], [0.5**0.5, 3**0.5]
            np.testing.assert_allclose(lines, [relu, relu, tanh, tanh], rtol=1e-3)
            page.screenshot(path=str(tmp_path / "report.png"))

            # One network, then one initializer less: rows and figures follow.
            page.locator('[id="filter-model.activation"]').select_option("tanh")
            page.locator('[id="filter-model.depth"]').select_option("3")
            page.wait_for_function("document.body.dataset.drawn >= 3", timeout=30_000)
            assert visible("#best-table tbody tr") == len(trials("tanh", 3)) == 6
            assert visible("#recommend-table tbody") == 1
            [shown] = page.locator("#recommend-table tbody:not([hidden]) tr.net").all_inner_texts()
            assert shown.startswith("mlp·tanh·d3")
            assert page.locator("#profile-panels .panel").count() == 1
            assert points("#steps-panels") == [6]
            page.locator('[id="init-he"]').uncheck()
            page.wait_for_function("document.body.dataset.drawn >= 4", timeout=30_000)
            assert visible("#best-table tbody tr") == len(trials("tanh", 3, ["he"])) == 4
            assert points("#steps-panels") == [4]
            names = [t["name"] for t in traces("#profile-panels")[0]]
            assert not any(n.startswith("he") for n in names), names
            page.locator('[id="init-he"]').check()
            page.wait_for_function("document.body.dataset.drawn >= 5", timeout=30_000)
            page.locator("#steps-panels").screenshot(path=str(tmp_path / "report_filtered.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("report.png", "report_filtered.png"):
        shutil.copyfile(tmp_path / name, SCREENSHOTS / name)
