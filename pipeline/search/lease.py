"""Leases on running trials: which sweep process runs a trial, and until when that claim holds.

Optuna's own heartbeat (``heartbeat_interval``) only runs inside ``study.optimize``, not in an
ask-and-tell loop like ours, so a sweep killed with SIGKILL would leave its batch RUNNING forever.
Instead every sweep process is a *worker* ``host:pid:token``: each trial it asks gets the user
attribute ``lease.worker``, and a background thread keeps the study attribute
``lease:<worker>`` (an expiry time, Unix seconds) ``study.lease_s`` seconds in the future.

A RUNNING trial is stale when its worker's lease has expired, when its worker ran on this host and
its process is gone (no need to wait out the grace period), or when it has no lease and started
more than ``lease_s`` ago (its worker died between ``ask`` and recording the lease). Expiry
compares wall clocks, so hosts sharing a study need clocks within a fraction of ``lease_s``.

``recover`` tells stale trials FAIL and enqueues their parameters again, so the study still runs
the same configurations. Telling FAIL is the claim: storage refuses to finish a trial twice, so
when several workers find the same stale trial only the first one re-enqueues it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Collection
from datetime import datetime

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

WORKER_ATTR = "lease.worker"
REQUEUED_ATTR = "requeued_from"
STUDY_PREFIX = "lease:"


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def leases(study: optuna.Study) -> dict[str, float]:
    """Every worker's lease expiry recorded in the study."""
    attrs = study.user_attrs
    return {
        k[len(STUDY_PREFIX) :]: float(v) for k, v in attrs.items() if k.startswith(STUDY_PREFIX)
    }


def worker_alive(worker: str, expiries: dict[str, float], now: float) -> bool:
    host, pid, _ = (worker.split(":") + ["", ""])[:3]
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return False
    return expiries.get(worker, 0.0) > now


def is_stale(trial: FrozenTrial, expiries: dict[str, float], now: float, lease_s: float) -> bool:
    if trial.state != TrialState.RUNNING:
        return False
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is None:
        started = trial.datetime_start or datetime.now()
        return (datetime.now() - started).total_seconds() > lease_s
    return not worker_alive(worker, expiries, now)


def recover(
    study: optuna.Study, lease_s: float, me: str | None = None, searched: Collection[str] = ()
) -> list[FrozenTrial]:
    """Fail stale RUNNING trials and enqueue their parameters; returns those this call failed.

    A worker killed while Optuna was still drawing a trial's parameters leaves some of the
    ``searched`` keys undrawn: that trial never had a configuration, so it is failed, not
    enqueued with half a configuration (the rest would be drawn afresh: a different trial under
    its name)."""
    now = time.time()
    expiries = leases(study)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) == me or not is_stale(trial, expiries, now, lease_s):
            continue
        if fail_and_requeue(study, trial.number, configuration(trial, searched)):
            recovered.append(trial)
    return recovered


def configuration(trial: FrozenTrial, searched: Collection[str]) -> dict | None:
    """A trial's parameters, None while some searched key is still undrawn (an enqueued
    trial's are its fixed params, drawn yet or not)."""
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    return None if set(searched) - set(params) else params


def fail_and_requeue(study: optuna.Study, number: int, params: dict | None) -> bool:
    """Tell trial ``number`` FAIL and enqueue its parameters (None: it had none to enqueue),
    unless it is already finished (told by its worker, or claimed by another one); returns
    whether this call did it."""
    try:
        study.tell(number, state=TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError):
        return False
    if params is not None:
        study.enqueue_trial(params, user_attrs={REQUEUED_ATTR: number})
    return True


class Lease:
    """This process's lease: recorded on each trial it asks and refreshed on a daemon thread."""

    def __init__(self, study: optuna.Study, lease_s: float):
        self.study = study
        self.lease_s = lease_s
        self.worker = new_worker_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _renew(self) -> None:
        self.study.set_user_attr(STUDY_PREFIX + self.worker, time.time() + self.lease_s)

    def _beat(self) -> None:
        while not self._stop.wait(max(0.5, self.lease_s / 4)):
            with contextlib.suppress(Exception):  # a storage hiccup: the next beat tries again
                self._renew()

    def start(self) -> Lease:
        self._renew()
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()
        return self

    def hold(self, trial: optuna.trial.Trial) -> None:
        trial.set_user_attr(WORKER_ATTR, self.worker)

    def end(self) -> None:
        """Stop renewing and expire the lease now (a clean exit holds no trial)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.study.set_user_attr(STUDY_PREFIX + self.worker, 0.0)

    def alive_others(self) -> set[str]:
        """Workers other than this one whose lease still holds."""
        now, expiries = time.time(), leases(self.study)
        return {w for w in expiries if w != self.worker and worker_alive(w, expiries, now)}
