"""Faults: stale leases, SIGKILL/SIGINT/SIGTERM and resume, several workers on one study.

The slow tests drive real ``python -m pipeline sweep`` processes, signal them, rerun, and check
the final counts in both stores: N COMPLETE trials in Optuna, N FINISHED child runs in MLflow, no
duplicate, nothing left RUNNING.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient

from pipeline.config import SPEC_ATTR, TrialSpec
from pipeline.search import lease
from pipeline.search.study import make_storage, trial_spec
from pipeline.tracking import Tracker, default_uri

S = optuna.trial.TrialState
ARGS = [
    *TINY,
    "space.model.depth=[2, 4]",
    "space.model.activation=[relu, tanh]",
    "space.init.weights=[he_normal, orthogonal]",
    "study.sampler=random",  # a continuous gain: two trials with equal params are a duplicate
    "study.batch_size=4",
    "study.lease_s=3",
]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def journal_study(path, name="s"):
    return optuna.create_study(
        study_name=name, storage=make_storage(str(path)), load_if_exists=True
    )


# --- leases, in-process ---------------------------------------------------------------------


def test_recover_fails_and_requeues_only_stale_trials(tmp_path):
    study = journal_study(tmp_path / "j.journal")
    me = lease.Lease(study, lease_s=60).start()
    host = socket.gethostname()
    dead = f"{host}:{dead_pid()}:abc"
    remote = "elsewhere:1:def"
    study.set_user_attr(lease.STUDY_PREFIX + dead, time.time() + 60)  # fresh, but pid gone
    study.set_user_attr(lease.STUDY_PREFIX + remote, time.time() - 1)  # expired
    trials = {}
    for owner in ("mine", dead, remote, "alive-remote:2:x", None):
        t = study.ask()
        t.suggest_float("init.gain", 0.25, 4.0, log=True)
        if owner == "mine":
            me.hold(t)
        elif owner is not None:
            t.set_user_attr(lease.WORKER_ATTR, owner)
        trials[owner] = t
    study.set_user_attr(lease.STUDY_PREFIX + "alive-remote:2:x", time.time() + 60)

    recovered = lease.recover(study, lease_s=60, me=me.worker)
    assert sorted(t.number for t in recovered) == [trials[dead].number, trials[remote].number]
    states = {t.number: t.state for t in study.trials}
    assert states[trials[dead].number] == S.FAIL and states[trials[remote].number] == S.FAIL
    for owner in ("mine", "alive-remote:2:x", None):  # a young unleased trial waits lease_s
        assert states[trials[owner].number] == S.RUNNING
    waiting = [t for t in study.trials if t.state == S.WAITING]
    assert sorted(t.user_attrs[lease.REQUEUED_ATTR] for t in waiting) == sorted(
        t.number for t in recovered
    )
    assert {t.system_attrs["fixed_params"]["init.gain"] for t in waiting} == {
        trials[dead].params["init.gain"],
        trials[remote].params["init.gain"],
    }
    # A second worker finding the same trials stale claims none of them: no double enqueue.
    assert lease.recover(study, lease_s=60) == []
    assert len([t for t in study.trials if t.state == S.WAITING]) == 2
    # With no grace left, the unleased trial is stale too; ours never is.
    lease.recover(study, lease_s=0.0, me=me.worker)
    assert {t.number: t.state for t in study.trials}[trials[None].number] == S.FAIL
    assert {t.number: t.state for t in study.trials}[trials["mine"].number] == S.RUNNING
    me.end()
    assert lease.leases(study)[me.worker] == 0.0


def test_heartbeat_keeps_the_lease_ahead(tmp_path):
    study = journal_study(tmp_path / "j.journal")
    held = lease.Lease(study, lease_s=2).start()
    try:
        time.sleep(3)  # longer than the lease: only the heartbeat keeps it valid
        assert lease.leases(study)[held.worker] > time.time()
        assert lease.worker_alive(held.worker, lease.leases(study), time.time())
    finally:
        held.end()
    assert not lease.worker_alive(held.worker, lease.leases(study), time.time())


def test_reconcile_kills_orphan_runs_and_logs_missing_children(tmp_path):
    study = journal_study(tmp_path / "j.journal")
    dead = f"{socket.gethostname()}:{dead_pid()}:abc"
    metrics = {"steps_to_target": 40.0, "objective": 40.0, "diverged": 0.0, "loss": float("nan")}
    # The space fixed model.depth=16 (not an Optuna param): only the stored spec knows it.
    base = TrialSpec.from_flat({"model.depth": 16, "model.activation": "relu"}, True)
    for gain in (0.5, 2.0):
        study.enqueue_trial({"init.gain": gain})
        t = study.ask()
        t.suggest_float("init.gain", 0.25, 4.0, log=True)
        t.set_user_attr(lease.WORKER_ATTR, dead)
        t.set_user_attr(SPEC_ATTR, base.with_values({"init.gain": gain}).flat())
        t.set_user_attr("metrics", metrics)
        study.tell(t, 40.0)
    tracker = Tracker(default_uri(str(tmp_path)), "s", str(tmp_path))
    tracker.worker = dead
    tracker.start_parent("killed sweep", {}, {})
    orphan = tracker.parent_id
    config = {"init.weights": "he_normal", "model.activation": "relu", "model.depth": 2}
    tracker._log_recovered(0, {**config, "init.gain": 0.5}, metrics, "COMPLETE")  # not trial 1
    tracker.client.set_terminated(tracker.parent_id, "RUNNING")

    fresh = Tracker(default_uri(str(tmp_path)), "s", str(tmp_path))
    fresh.worker = "me"
    fresh.start_parent("new sweep", {}, {})

    def spec_of(trial):
        return trial_spec(study, trial).flat()

    logged = fresh.reconcile(study.trials, lambda w: w != "me", spec_of)
    assert logged == 1
    runs = fresh.runs()
    assert fresh.client.get_run(orphan).info.status == "KILLED"
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial_number"] for r in children) == ["0", "1"]
    [recovered] = [r for r in children if r.data.tags["mlflow.parentRunId"] == fresh.parent_id]
    assert recovered.data.tags["trial_number"] == "1" and recovered.info.status == "FINISHED"
    assert recovered.data.tags["recovered"] == "true"
    assert recovered.data.params["init.gain"] == "2.0"
    assert recovered.data.params["model.depth"] == "16"  # fixed by the space, kept
    want = base.with_values({"init.gain": 2.0}).flat()
    assert recovered.data.params == {k: str(v) for k, v in want.items()}  # the whole spec
    assert recovered.data.metrics["steps_to_target"] == 40.0
    assert "loss" not in recovered.data.metrics  # NaN is left out, not logged
    assert fresh.reconcile(study.trials, lambda w: w != "me", spec_of) == 0  # idempotent
    fresh.close()


# --- real processes -------------------------------------------------------------------------


def sweep_cmd(tmp_path, n, *extra):
    return [
        sys.executable,
        "-m",
        "pipeline",
        "sweep",
        *extra,
        *ARGS,
        f"study.n_trials={n}",
        f"runs_dir={tmp_path / 'runs'}",
    ]


def start(tmp_path, n, *extra):
    return subprocess.Popen(
        sweep_cmd(tmp_path, n, *extra),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(tmp_path, n, *extra):
    out = subprocess.run(
        sweep_cmd(tmp_path, n, *extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def load(tmp_path):
    return optuna.load_study(
        study_name="default", storage=make_storage(str(tmp_path / "runs" / "optuna.journal"))
    )


def wait_for_running(tmp_path, proc, timeout=180, mark=None):
    """Until the journal shows a RUNNING trial leased by ``proc`` (whose worker id holds ``mark``)
    so its batch is in flight: RUNNING trials a killed predecessor left behind do not count."""
    journal = tmp_path / "runs" / "optuna.journal"
    mark = mark or f":{proc.pid}:"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if journal.exists() and mark.encode() in journal.read_bytes():
            trials = load(tmp_path).get_trials(deepcopy=False, states=(S.RUNNING,))
            if any(mark in t.user_attrs.get(lease.WORKER_ATTR, "") for t in trials):
                return
        time.sleep(0.2)
    raise AssertionError("no trial started")


def check_final(tmp_path, n):
    """N COMPLETE trials, each configuration once, every failed one re-run; N FINISHED child
    runs in MLflow, one per trial; nothing RUNNING in either store."""
    trials = load(tmp_path).trials
    states = Counter(t.state for t in trials)
    assert states[S.COMPLETE] == n and states[S.RUNNING] == 0 and states[S.WAITING] == 0, states
    complete = [t for t in trials if t.state == S.COMPLETE]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == n, "a configuration was trained twice"
    drawn = {k for t in complete for k in t.params}  # a trial killed mid-draw had no config
    for t in trials:
        if t.state == S.FAIL and set(t.params) == drawn and not t.user_attrs.get("overflow"):
            assert tuple(sorted(t.params.items())) in set(params), f"trial {t.number} was lost"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [exp] = [e for e in client.search_experiments() if e.name == "default"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    finished = [r for r in children if r.info.status == "FINISHED"]
    numbers = [r.data.tags["trial_number"] for r in finished]
    assert len(finished) == n and sorted(numbers) == sorted(str(t.number) for t in complete)
    return trials, runs


@pytest.mark.slow
def test_sigkill_mid_batch_then_rerun_completes(tmp_path):
    proc = start(tmp_path, 8)
    wait_for_running(tmp_path, proc)
    time.sleep(1.0)  # past the parameter draws: the batch is configured and training
    proc.kill()
    proc.wait()
    left = [t for t in load(tmp_path).trials if t.state == S.RUNNING]
    assert left, "the kill should leave the batch RUNNING"

    finish(tmp_path, 8)
    trials, runs = check_final(tmp_path, 8)
    by_number = {t.number: t for t in trials}
    drawn = max(len(t.params) for t in trials)
    assert any(len(t.params) == drawn for t in left), "no killed trial had its configuration"
    for t in left:  # failed on restart, and its configuration trained by a re-enqueued copy
        assert by_number[t.number].state == S.FAIL
        copies = [u for u in trials if u.user_attrs.get(lease.REQUEUED_ATTR) == t.number]
        if len(t.params) < drawn:  # killed while its parameters were drawn: it had none to rerun
            assert copies == []
        else:
            assert len(copies) == 1 and copies[0].params == t.params
    parents = sorted(r.info.status for r in runs if r.data.tags.get("role") == "sweep")
    assert parents == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_repeated_kill_and_resume_cycles(tmp_path):
    n, rng = 24, random.Random(6)  # enough trials that no cycle reaches the end
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGINT]
    rng.shuffle(signals)
    for sig in signals:
        proc = start(tmp_path, n)
        wait_for_running(tmp_path, proc)
        time.sleep(rng.uniform(0.0, 2.0))
        t0 = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:  # clean stop at the next chunk boundary, or done already
            assert proc.returncode in (0, 130), err[-3000:]
            assert time.time() - t0 < 60
            assert not [t for t in load(tmp_path).trials if t.state == S.RUNNING]
    finish(tmp_path, n)
    trials, runs = check_final(tmp_path, n)
    assert sum(t.state == S.FAIL for t in trials) >= 1  # the cycles did interrupt batches
    print(f"{len(signals)} kill/resume cycles ({', '.join(s.name for s in signals)}): ok")


@pytest.mark.slow
def test_workers_share_one_study_with_exact_counts(tmp_path):
    out = finish(tmp_path, 10, "--workers", "3")
    assert "3 workers" in out.stderr
    trials, runs = check_final(tmp_path, 10)
    assert all(t.user_attrs.get("overflow") for t in trials if t.state == S.FAIL)
    workers = {t.user_attrs[lease.WORKER_ATTR] for t in trials if t.state == S.COMPLETE}
    assert len(workers) >= 2  # the batches really were shared
    [parent] = [r for r in runs if r.data.tags.get("role") == "sweep"]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    # Rerunning a finished study asks nothing more.
    finish(tmp_path, 10, "--workers", "2")
    check_final(tmp_path, 10)


@pytest.mark.slow
def test_interrupting_the_launcher_stops_every_worker(tmp_path):
    proc = start(tmp_path, 12, "--workers", "2")
    wait_for_running(tmp_path, proc, mark=":")  # leased by one of its workers
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert not [t for t in load(tmp_path).trials if t.state == S.RUNNING]
    finish(tmp_path, 12, "--workers", "2")
    check_final(tmp_path, 12)


# --- a compiled call that never returns -----------------------------------------------------

# Runs the CLI with a planted stall: every chunk call of the second structure to train blocks
# forever inside the compiled call, in a host callback, as a wedged XLA runtime would.
PLANT = """
import sys, threading
import jax
from pipeline.engine import run as engine  # where Engine looks make_train up
from pipeline.cli import main

real_make_train = engine.make_train
first = []
never = threading.Event()


def gate(activation, depth, loss):
    first[:] = first or [(activation, depth)]
    if first[0] != (activation, depth):
        never.wait()
    return loss


def stalling_make_train(net, settings):
    fns = real_make_train(net, settings)
    structure = net.builtin.structure

    def chunk(state, hp, active, data):  # one row; the engine vmaps it
        state, out = fns.chunk(state, hp, active, data)
        where = (structure.activation, structure.n_hidden)
        shape = jax.ShapeDtypeStruct(out.loss.shape, out.loss.dtype)
        gated = lambda l: gate(*where, l)  # noqa: E731
        loss = jax.pure_callback(gated, shape, out.loss, vmap_method="broadcast_all")
        return state, out._replace(loss=loss)

    return fns._replace(chunk=chunk)


engine.make_train = stalling_make_train
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_stalled_call_fails_its_trials_and_loses_no_told_trial(tmp_path):
    (tmp_path / "plant.py").write_text(PLANT)
    cmd = sweep_cmd(tmp_path, 8, "engine.stall_timeout_s=5")
    cmd[1:3] = [str(tmp_path / "plant.py")]  # the plant instead of `-m pipeline`
    t0 = time.time()
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr[-3000:]
    assert time.time() - t0 < 240
    [line] = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert "compiled call stalled: chunk 1 of structure" in line and "model.activation=" in line
    assert "no result in 5 s (engine.stall_timeout_s=5)" in line and "Traceback" not in out.stderr

    trials = load(tmp_path).trials
    states = Counter(t.state for t in trials)
    told = [t for t in trials if t.state == S.COMPLETE]
    failed = [t for t in trials if t.state == S.FAIL]
    assert told and failed and states[S.RUNNING] == 0, states
    assert len(told) + len(failed) == 4  # the first batch (study.batch_size=4)
    # Every failed trial's configuration waits in the queue for the rerun.
    waiting = [t for t in trials if t.state == S.WAITING]
    assert sorted(t.user_attrs[lease.REQUEUED_ATTR] for t in waiting) == [t.number for t in failed]
    # Every told trial has its child run: nothing trained was lost.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [exp] = [e for e in client.search_experiments() if e.name == "default"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    logged = sorted(int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags)
    assert logged == sorted(t.number for t in told)

    finish(tmp_path, 8)  # the same command without the plant completes the study
    check_final(tmp_path, 8)
