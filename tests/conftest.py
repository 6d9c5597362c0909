"""Shared helpers and the test tiers.

The tiers are folders (``tests/unit``, ``tests/engine``, ``tests/e2e``) and markers of the same
names, set here from the folder: **unit** tests compile nothing beyond eager ops, **engine** tests
compile the engine's functions in this process on tiny shapes, **e2e** tests run the command as a
user does (a subprocess, real stores, servers, signals, the browser). A test marked ``slow`` in a
unit or engine file is an end-to-end test there and is marked e2e too. ``make test`` runs every
tier; ``make test-fast`` runs ``-m "not e2e" tests/unit tests/engine``.
"""

import os
from pathlib import Path

# One JAX compilation cache for the whole test session and between sessions: the executables the
# tests compile in this process (every one, however quick: min compile time 0) and in every
# `python -m pipeline` they start (pipeline.engine.devices.cache_dir reads
# JAX_COMPILATION_CACHE_DIR), in pytest-xdist's workers too. Set before JAX is imported: JAX reads
# these at import. A test whose assertion is about the cache itself names its own folder
# (engine.cache_dir) or turns the cache off.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".test_jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline.cli import mlflow_server_env
from pipeline.config import load_config
from pipeline.engine.devices import lower_cpu_optimization

# The CPU compiler settings the commands use (JAX's backend starts later, at the first compile).
lower_cpu_optimization()

# The base values the tests were written against (the schema's defaults and the search space of
# the first default study), in place of the default study's (conf/config.yaml: digits, 3 seeds,
# framework biases, a learning-rate grid).
BASE = [
    "data.name=gaussian",
    "train.seeds=1",
    "train.target_loss=0.7",
    "init.bias=zeros",
    "study.sampler=tpe",
    "study.design=search",
    "space.init.gain={low: 0.5, high: 2.0, log: true}",
    "space.train.learning_rate={low: 0.01, high: 0.3, log: true}",
    # No figures process after each sweep (about 5 s of CPU each): the tests of the figures and
    # of what a sweep leaves for `make ui` set tracking.figures to background or wait.
    "tracking.figures=off",
]
# The browser the page tests drive (tests/e2e/test_browser.py, tests/unit/test_report.py).
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
# Small enough to compile and train in about a second per structure on 2 cores.
TINY = [
    *BASE,
    "data.samples=512",
    "data.val_samples=128",
    "data.features=16",
    "model.width=16",
    "train.batch_size=64",
    "train.steps=60",
    "train.eval_every_steps=20",
]


def train_trials(cfg, *variants: dict, weights=None):
    """Train one trial per variant (dotted overrides of cfg) in one engine call."""
    from pipeline.config import Space, TrialSpec
    from pipeline.engine import Engine
    from pipeline.engine.datasets import load_dataset

    base = TrialSpec.of_config(cfg)
    trials = [base.with_values(v) for v in variants]
    weights = weights or [t["init.weights"] for t in trials]
    engine = Engine(cfg, load_dataset(cfg.data), Space.parse({"init.weights": list(weights)}))
    return engine.run(trials), engine


@pytest.fixture
def train():
    return train_trials


def add_planted_trial(
    study, spec, params: dict, distributions: dict, seed_steps, seed_diverged=None, **attrs
) -> None:
    """A completed trial written as a sweep stores it: its whole spec, metrics (by default the
    median of ``seed_steps`` as steps to target and objective), per-seed steps and divergence,
    and any other user attributes (``trace=...``)."""
    import numpy as np
    import optuna

    from pipeline.search.study import SEED_DIVERGED_ATTR, SEED_STEPS_ATTR

    median = float(np.median(seed_steps))
    metrics = attrs.pop("metrics", None) or {"steps_to_target": median, "objective": median}
    diverged = list(seed_diverged) if seed_diverged is not None else [0] * len(seed_steps)
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=distributions,
            value=metrics["objective"],
            user_attrs={
                "spec": spec.flat(),
                "metrics": metrics,
                SEED_STEPS_ATTR: list(seed_steps),
                SEED_DIVERGED_ATTR: diverged,
                **attrs,
            },
        )
    )


# A small random-sampler study over 2 depths x 2 activations x 2 initializers, on TINY data.
SMALL_SWEEP = [
    *TINY,
    "space.model.depth=[2, 4]",
    "space.model.activation=[relu, tanh]",
    "space.init.weights=[he_normal, orthogonal]",
    "study.sampler=random",
    "study.batch_size=4",
]


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return load_config([*TINY, *overrides])

    return make


def run_cli(tmp_path, *args, check=True, env=None, runs="runs"):
    """``python -m pipeline *args`` in ``tmp_path``, writing under ``tmp_path/runs``."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, f"runs_dir={tmp_path / runs}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


# The JAX settings a command's set-up changes (pipeline.engine.devices.setup_jax), kept by run_main.
JAX_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


def run_main(tmp_path, *args, check=True, runs="runs") -> subprocess.CompletedProcess:
    """``run_cli`` in this process: ``pipeline.cli.main`` with the same arguments, working folder
    and ``runs_dir``, its stdout and stderr captured. For tests of what a command computes and
    writes, not of how its process behaves (signals, exit codes of the interpreter, children):
    no interpreter start-up or imports, and executables this process compiled are reused. The
    process's JAX devices are started first, so a command's set-up cannot change them, and its
    JAX cache settings are put back after."""
    import io

    import jax

    from pipeline.cli import main

    jax.devices()
    saved = {name: getattr(jax.config, name) for name in JAX_SETTINGS}
    out, err = io.StringIO(), io.StringIO()
    argv = [*args, f"runs_dir={tmp_path / runs}"]
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        os.chdir(here)
        for name, value in saved.items():
            jax.config.update(name, value)
    done = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, done.stderr[-2000:]
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout_s: float = 180, port: int | None = None):
    """A real ``mlflow server`` on a free loopback port (or ``port``) over the SQLite store in
    ``folder`` (created if new); yields ``(url, port)`` and stops it (and its workers) after."""
    port = port or free_port()
    log_path = folder / "mlflow_server.log"
    log = open(log_path, "a")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "server_artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers are stopped with the group below
        env=mlflow_server_env(),  # as `make ui` starts it
    )
    url = f"http://127.0.0.1:{port}"
    # Ready means it answers an API question: /health answers before the first API request has
    # loaded the store, which takes seconds on a busy machine.
    search = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search",
        data=b'{"max_results": 1}',
        headers={"Content-Type": "application/json"},
    )
    deadline = time.time() + timeout_s
    try:
        while True:
            try:
                with urllib.request.urlopen(search, timeout=30) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"mlflow server did not start: {log_path.read_text()}")
            time.sleep(0.5)
        yield url, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


TIERS = ("unit", "engine", "e2e")


def pytest_collection_modifyitems(items):
    """Each test's tier marker from its folder; ``slow`` is end-to-end wherever it sits."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)
        if item.get_closest_marker("slow") and tier != "e2e":
            item.add_marker("e2e")


# Test files with a module-scoped fixture (a study swept once for the file): ``make test`` keeps
# each on one pytest-xdist worker, so the fixture is built once.
SHARED_FIXTURE_FILES = frozenset(
    path.relative_to(Path(__file__).parent.parent).as_posix()
    for path in Path(__file__).parent.rglob("test_*.py")
    if 'scope="module"' in path.read_text()
)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` (``make test``) with our scopes: a test file that shares a module
    fixture is one unit, every other test is a unit of its own, so that a file of slow tests does
    not keep one worker busy long after the other is done (as ``--dist loadfile`` did). A module
    fixture is torn down when its worker moves to another file, so such a file must stay whole.
    pytest-xdist's ``xdist_group`` marks would say the same, but its ``loadgroup`` renames nodes
    in a way pytest 9.2 ignores (xdist 3.8 sets ``item._nodeid``)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in SHARED_FIXTURE_FILES else nodeid

    return Scheduling(config, log)


# The number of assert statements that passed, printed under the run (pytest's assertion-pass
# hook, enabled in pyproject.toml), summed over pytest-xdist's workers: a change that makes the
# suite faster shows here whether it checks as much as before.
ASSERTIONS = {"passed": 0}


def pytest_assertion_pass(item, lineno, orig, expl):
    ASSERTIONS["passed"] += 1


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: report to the controller
        session.config.workeroutput["assertions_passed"] = ASSERTIONS["passed"]


def pytest_testnodedown(node, error):
    ASSERTIONS["passed"] += getattr(node, "workeroutput", {}).get("assertions_passed", 0)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"assertions passed: {ASSERTIONS['passed']}")
