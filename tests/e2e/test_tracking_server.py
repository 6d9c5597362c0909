"""A tracking server that is not there, and one that goes away in the middle of a sweep.

Against real processes: ``python -m pipeline sweep`` and a real ``mlflow server`` on loopback
that the test stops and starts again on the same port and store.
"""

import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from conftest import SMALL_SWEEP, free_port, mlflow_server
from mlflow.tracking import MlflowClient

from pipeline.search.study import make_storage
from pipeline.tracking.tracker import PROBE_TIMEOUT_S

S = optuna.trial.TrialState


def sweep(tmp_path, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sweep", *args, f"runs_dir={tmp_path / 'runs'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_nothing_listening_fails_in_seconds_with_one_line_and_writes_nothing(tmp_path):
    t0 = time.monotonic()
    out = sweep(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}", "study.n_trials=2")
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach the MLflow tracking server at tracking.uri=http")
    assert "Connection refused" in line
    assert took < 10, f"{took:.1f} s"
    assert not (tmp_path / "runs").exists()


def test_a_server_that_never_answers_fails_in_seconds(tmp_path):
    # The same command refused at once (nothing listening), timed just before: what the silent
    # server adds is the wait, without the command's start-up, which a loaded machine stretches.
    t0 = time.monotonic()
    refused = sweep(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}", "study.n_trials=2")
    start_up = time.monotonic() - t0
    assert refused.returncode == 2, refused.stderr[-2000:]
    with socket.socket() as silent:  # accepts connections and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        out = sweep(tmp_path, f"tracking.uri=http://127.0.0.1:{port}", "study.n_trials=2")
        took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = out.stderr.strip().splitlines()
    assert "cannot reach the MLflow tracking server" in line and "timed out" in line, line
    assert took - start_up < PROBE_TIMEOUT_S + 7, f"{took:.1f} s against {start_up:.1f} s refused"
    assert not (tmp_path / "runs").exists()


def _completed(journal) -> int:
    """How many trials of the study ``default`` in this journal are complete (0 before it)."""
    if not journal.exists():
        return 0
    try:
        study = optuna.load_study(study_name="default", storage=make_storage(str(journal)))
    except KeyError:  # the sweep has not created the study yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(S.COMPLETE,)))


@pytest.mark.slow
def test_a_server_that_goes_away_mid_sweep_loses_no_result(tmp_path):
    store = tmp_path / "server"
    store.mkdir()
    n = 8  # in 4 calls of 2: the server goes after the first, 3 calls of training still to go
    args = [*SMALL_SWEEP, f"study.n_trials={n}", "study.batch_size=2", "train.steps=200"]
    args += ["train.eval_every_steps=100"]
    with mlflow_server(store) as (url, port):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "sweep", *args, f"tracking.uri={url}"]
            + [f"runs_dir={tmp_path / 'runs'}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The server goes once the first call's trials are told (read from the study's journal,
        # which answers at once however loaded the machine is). The sweep is paused while the
        # server stops, so that it cannot finish first on a quick machine or a slow stop.
        journal = tmp_path / "runs" / "optuna.journal"
        deadline = time.time() + 240
        while not (done := _completed(journal)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGSTOP)
        assert done < n and proc.poll() is None, "the sweep should still be training"
    stopped = time.time()  # the server is gone; the sweep trains on
    proc.send_signal(signal.SIGCONT)
    with mlflow_server(store, port=port):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        study = optuna.load_study(
            study_name="default", storage=make_storage(str(tmp_path / "runs" / "optuna.journal"))
        )
        trials = study.get_trials(deepcopy=False)
        assert Counter(t.state for t in trials)[S.COMPLETE] == n
        assert any(t.datetime_complete.timestamp() > stopped for t in trials)
        # What MLflow missed: logged again once it answered, or (if the sweep ended first, as
        # it says) by the same command, from the study, which holds every result.
        again = sweep(tmp_path, *args, f"tracking.uri={url}")
        assert again.returncode == 0, again.stderr[-3000:]
        client = MlflowClient(tracking_uri=url)
        [exp] = [e for e in client.search_experiments() if e.name == "default"]
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        # One FINISHED child run per trial; a run the outage left half-written stays, KILLED.
        children = [r for r in runs if "trial_number" in r.data.tags]
        assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}
        children = [r for r in children if r.info.status == "FINISHED"]
        numbers = Counter(int(r.data.tags["trial_number"]) for r in children)
        assert numbers == Counter(t.number for t in trials if t.state == S.COMPLETE), numbers
        by_number = {t.number: t for t in trials}
        for r in children:  # the logged values are the study's
            stored = by_number[int(r.data.tags["trial_number"])].user_attrs["metrics"]
            assert r.data.metrics["steps_to_target"] == pytest.approx(stored["steps_to_target"])


@pytest.mark.slow
def test_logging_kept_while_the_server_is_away_is_logged_when_it_answers(tmp_path):
    from pipeline.core.metrics import TrialResult
    from pipeline.tracking import Tracker

    store = tmp_path / "server"
    store.mkdir()
    config = {"init.weights": "he_normal", "model.activation": "relu", "model.depth": 4}
    config["init.gain"] = 1.0

    def result(steps):
        return TrialResult(metrics={"steps_to_target": steps}, seeds=[], curves={})

    with mlflow_server(store) as (url, port):
        tracker = Tracker(url, "s", str(tmp_path))
        tracker.start_parent("sweep", {}, {})
        tracker.log_trial(0, config, result(10.0), "COMPLETE", 1)
        tracker.flush()
    tracker.log_trial(1, config, result(11.0), "COMPLETE", 1)  # nobody there: kept
    tracker.log_trial(2, config, result(12.0), "COMPLETE", 1)
    tracker.flush()
    assert len(tracker.missed) == 2
    with mlflow_server(store, port=port):
        tracker.log_trial(3, config, result(13.0), "COMPLETE", 1)  # answered: all logged
        assert tracker.close() is None and not tracker.missed
        client = MlflowClient(tracking_uri=url)
        runs = client.search_runs([tracker.experiment_id])
        logged = {r.data.tags["trial_number"]: r for r in runs if "trial_number" in r.data.tags}
        assert sorted(logged) == ["0", "1", "2", "3"]
        assert [logged[str(i)].data.metrics["steps_to_target"] for i in range(4)] == [
            10.0,
            11.0,
            12.0,
            13.0,
        ]
        assert all(r.info.status == "FINISHED" for r in runs)
