"""`python -m pipeline dashboard`: a real optuna-dashboard on loopback over the journal file."""

import json
import re
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from conftest import free_port, run_cli

from pipeline.search.study import make_storage

pytestmark = pytest.mark.slow


def make_journal_study(runs, name: str, n_trials: int) -> None:
    """A small real study in ``runs/optuna.journal``, as a sweep leaves it."""
    study = optuna.create_study(study_name=name, storage=make_storage(str(runs / "optuna.journal")))
    study.optimize(lambda t: t.suggest_float("init.gain", 0.25, 4.0, log=True), n_trials=n_trials)


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_serves_the_study_list(tmp_path):
    runs = tmp_path / "runs"
    make_journal_study(runs, "dash", 3)
    make_journal_study(runs, "other", 1)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "dashboard",
            "--port",
            str(port),
            "study.name=dash",
            f"runs_dir={runs}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/dashboard/studies/(\d+)", line)
        assert match and int(match[1]) == port, line
        status, body = get_json(f"http://127.0.0.1:{port}/api/studies", time.time() + 60)
        assert status == 200
        studies = {s["study_name"]: s for s in body["study_summaries"]}
        assert set(studies) == {"dash", "other"}
        assert studies["dash"]["study_id"] == int(match[2])
        # The study page the printed address opens, and the study's trials behind it.
        status, detail = get_json(
            f"http://127.0.0.1:{port}/api/studies/{match[2]}?after=0", time.time() + 10
        )
        assert status == 200 and len(detail["trials"]) == 3
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_dashboard_names_a_missing_study(tmp_path):
    make_journal_study(tmp_path / "runs", "dash", 1)
    out = run_cli(tmp_path, "dashboard", "study.name=nope", check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: no study named 'nope' in {tmp_path / 'runs' / 'optuna.journal'} (studies: dash)"
    )
