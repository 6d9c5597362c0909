"""The MLflow UI in a real browser: a real `mlflow server`, a tiny sweep logged to it over HTTP,
and headless Chromium on the address `make ui` prints, checked as it opens, before any click.

The address names the study's shared view (``viewStateShareKey``; the sweep writes it as the
experiment tag MLflow 3.17's "Share" button writes), so the runs table opens sorted by
steps_to_target with the key metric and searched parameter columns. MLflow's Assistant panel,
which opens on a browser's first visit, is client state no server setting controls: it is left
open here, as a newcomer meets it.
"""

import re
import shutil
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, TINY, mlflow_server, run_cli

from pipeline.tracking import runs_table_url

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parents[2] / "runs" / "screenshots" / "mlflow_runs.png"
METRICS = ("steps_to_target", "explosion_count")
PARAMS = ("init.weights", "model.activation")  # the keys the test's sweep searches


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path) as url_port:
        yield url_port


def cell(page, run_id: str, col_id: str) -> str:
    return page.locator(f'[role=row][row-id="{run_id}"] [col-id="{col_id}"]').first.inner_text()


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
def test_mlflow_ui_shows_the_runs_table_with_parent_children_and_metrics(tmp_path, server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from mlflow.tracking import MlflowClient

    url, port = server
    run_cli(
        tmp_path,
        "sweep",
        *TINY,
        "model.depth=2",
        "space.model.depth=[2]",
        "space.model.activation=[relu, tanh]",
        "space.init.weights=[he_normal, glorot_uniform, orthogonal]",
        "study.batch_size=4",
        "study.n_trials=4",
        "study.name=browser",
        f"tracking.uri={url}",
    )
    out = run_cli(
        tmp_path,
        "ui",
        "--print-url",
        "--port",
        str(port),
        "study.name=browser",
        f"tracking.uri={url}",
    )
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("browser")
    address = re.search(r"http://\S+", out.stdout)[0]
    assert address == runs_table_url("127.0.0.1", port, experiment.experiment_id)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(address)
            rows = page.locator(".ag-pinned-left-cols-container [role=row]")
            rows.nth(4).wait_for(timeout=120_000)  # the parent and its 4 trials
            # The runs table of this experiment, not the GenAI overview or traces.
            assert re.search(rf"#/experiments/{experiment.experiment_id}/runs\b", page.url)
            headers = page.locator(".ag-header-cell").evaluate_all(
                "cells => cells.map(c => c.getAttribute('col-id'))"
            )
            wanted = [f"metrics.`{m}`" for m in METRICS] + [f"params.`{k}`" for k in PARAMS]
            assert set(wanted) <= set(headers), headers
            assert {"attributes.`Dataset`", "attributes.`Source`"}.isdisjoint(headers), headers
            # Sorted by steps_to_target, fastest first: the trials flat, the parent (no metric)
            # last.
            names = rows.all_inner_texts()
            assert len(names) == 5 and parent.info.run_name in names[-1], names
            ranked = sorted(children, key=lambda r: r.data.metrics["steps_to_target"])
            shown_steps = []
            for name in names[:-1]:
                [child] = [c for c in children if c.info.run_name in name]
                for metric in METRICS:
                    shown = cell(page, child.info.run_id, f"metrics.`{metric}`")
                    assert float(shown) == pytest.approx(child.data.metrics[metric], rel=1e-3)
                assert (
                    cell(page, child.info.run_id, "params.`init.weights`")
                    == (child.data.params["init.weights"])
                )
                shown_steps.append(child.data.metrics["steps_to_target"])
            assert shown_steps == [r.data.metrics["steps_to_target"] for r in ranked]
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tmp_path / "mlflow_runs.png"))
        finally:
            browser.close()
    shutil.copyfile(tmp_path / "mlflow_runs.png", SCREENSHOT)
