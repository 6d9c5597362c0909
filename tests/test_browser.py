"""The MLflow UI in a real browser: a real `mlflow server`, a tiny sweep logged to it over HTTP,
and headless Chromium on the address `make ui` prints.

What it takes to see the two metric columns (MLflow 3.17): the runs table shows attribute columns
only by default, so the test opens "Columns", searches each metric and ticks it (the choice is not
part of the URL). Child runs are grouped under the sweep's parent run; its expand button (the "+"
left of its name) shows them. Sorting by a metric would list them flat instead.
"""

import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY, mlflow_server, run_cli

from pipeline.tracking import runs_table_url

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "runs" / "screenshots" / "mlflow_runs.png"
METRICS = ("steps_to_target", "explosion_count")
PARAMS = ("init.weights", "init.gain", "model.activation", "model.depth")


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path) as url_port:
        yield url_port


def open_runs_table(page, url: str, columns=METRICS + PARAMS) -> None:
    """Open ``url``, expand the sweep's parent run and show ``columns``."""
    page.goto(url)
    parent = page.locator(".ag-pinned-left-cols-container [role=row]", has_text="sweep ").first
    parent.wait_for(timeout=120_000)
    if page.get_by_text("MLflow Assistant").count():  # a side panel MLflow 3 opens on first visit
        page.get_by_role("button", name="Close").first.click()
    parent.locator('button[data-component-id*="runnamecellrenderer"]').click()
    page.get_by_role("button", name="Columns", exact=True).click()
    for name in columns:
        page.get_by_placeholder("Search columns").fill(name)
        page.get_by_role("dialog").get_by_text(name, exact=True).click()
    for name in ("Dataset", "Source", "Models"):  # shown by default, empty here: hide them
        page.get_by_placeholder("Search columns").fill(name)
        page.get_by_role("dialog").get_by_text(name, exact=True).click()
    page.keyboard.press("Escape")


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
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            open_runs_table(page, address)
            # The runs table of this experiment, not the GenAI overview or traces.
            assert re.search(rf"#/experiments/{experiment.experiment_id}/runs\b", page.url)
            assert page.get_by_role("button", name="Columns", exact=True).is_visible()
            for child in children:  # grouped under the parent, shown once it is expanded
                page.locator(f'[role=row][row-id="{child.info.run_id}"]').first.wait_for(
                    timeout=30_000
                )
            names = page.locator(".ag-pinned-left-cols-container [role=row]").all_inner_texts()
            assert len(names) == 5 and parent.info.run_name in names[0]
            for child in children:
                assert any(child.info.run_name in n for n in names[1:]), child.info.run_name
                for metric in METRICS:
                    shown = cell(page, child.info.run_id, f"metrics.`{metric}`")
                    assert float(shown) == pytest.approx(child.data.metrics[metric], rel=1e-3)
                shown = cell(page, child.info.run_id, "params.`init.weights`")
                assert shown == child.data.params["init.weights"]
            headers = page.locator(".ag-header-cell").evaluate_all(
                "cells => cells.map(c => c.getAttribute('col-id'))"
            )
            assert {"attributes.`Dataset`", "attributes.`Source`"}.isdisjoint(headers), headers
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tmp_path / "mlflow_runs.png"))
        finally:
            browser.close()
    shutil.copyfile(tmp_path / "mlflow_runs.png", SCREENSHOT)
