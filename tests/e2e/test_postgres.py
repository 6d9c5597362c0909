"""Beyond one machine: a real PostgreSQL server (Optuna's RDB storage) and a real MLflow tracking
server, both started by the test on loopback, shared by several worker processes.

Also where passwords are checked: the storage URL and the tracking URI both carry one, and it must
not reach MLflow params, Optuna's study attributes, artifacts or anything printed.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import SMALL_SWEEP, free_port, mlflow_server, run_cli
from mlflow.tracking import MlflowClient

from pipeline.search.study import make_storage

pytestmark = pytest.mark.slow

SECRET = "hunter2"
S = optuna.trial.TrialState
ARGS = [*SMALL_SWEEP, "tracking.figures=background"]  # its process is handed the storage URL


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend; yields its plain URL."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as (url, _):
        yield url


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password auth); yields a URL with the
    password in it. As root the server runs as the ``postgres`` user (it refuses root)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip(
        "psycopg2",
        reason="psycopg2 is not installed (pip install -e '.[postgres]'; make test does)",
    )
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    # Under /tmp rather than pytest's tmp dir: the postgres user must be able to reach it.
    tmp = Path(tempfile.mkdtemp(prefix="initsweep-pg-", dir="/tmp"))
    (tmp / "pw").write_text(SECRET + "\n")
    if root:
        shutil.chown(tmp, "postgres", "postgres")
        shutil.chown(tmp / "pw", "postgres", "postgres")
    data, port = tmp / "data", free_port()
    subprocess.run(
        [
            *as_pg,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={tmp / 'pw'}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
        ],
        check=True,
        capture_output=True,
    )
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(
        [
            *as_pg,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(tmp),
            "-c",
            "max_connections=100",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        psql = [*as_pg, str(bin_dir / "psql"), "-h", str(tmp), "-p", str(port), "-U", "postgres"]
        wait_until(
            lambda: subprocess.run([*psql, "-c", "select 1"], capture_output=True).returncode == 0,
            "postgres",
        )
        subprocess.run([*psql, "-c", "create database initsweep"], check=True, capture_output=True)
        yield f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/initsweep"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def with_password(url: str) -> str:
    return url.replace("http://", f"http://tracker:{SECRET}@")


def sweep(tmp_path, *args):
    return run_cli(tmp_path, "sweep", *args)


def no_secret_in_mlflow(client: MlflowClient, experiment_id: str, tmp_path: Path) -> None:
    runs = client.search_runs([experiment_id], max_results=1000)
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in value, (key, value)
    parent = next(r for r in runs if r.data.tags.get("role") == "sweep")
    for artifact in client.list_artifacts(parent.info.run_id):
        if not artifact.is_dir:
            local = client.download_artifacts(parent.info.run_id, artifact.path, str(tmp_path))
            assert SECRET not in Path(local).read_text(errors="replace"), artifact.path


def test_three_workers_share_a_postgres_study_and_an_mlflow_server(
    tmp_path, postgres, tracking_server
):
    name = "pg"
    out = sweep(
        tmp_path,
        "--workers",
        "3",
        *ARGS,
        f"study.name={name}",
        "study.n_trials=24",
        f"study.storage={postgres}",
        f"tracking.uri={with_password(tracking_server)}",
    )
    study = optuna.load_study(study_name=name, storage=make_storage(postgres))
    states = Counter(t.state for t in study.trials)
    assert states[S.COMPLETE] == 24 and states[S.RUNNING] == 0 and states[S.WAITING] == 0
    assert all(t.user_attrs.get("overflow") for t in study.trials if t.state == S.FAIL)
    complete = [t for t in study.trials if t.state == S.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 24  # no duplicate
    workers = Counter(t.user_attrs["lease.worker"] for t in complete)
    assert len(workers) == 3, workers  # every worker trained some of them

    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 24 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == sorted(
        t.number for t in complete
    )
    [parent] = [r for r in runs if r.data.tags.get("role") == "sweep"]
    assert parent.info.status == "FINISHED"

    # The passwords: redacted in the parent's params, absent everywhere else.
    assert parent.data.params["study.storage"] == postgres.replace(SECRET, "***")
    assert parent.data.params["tracking.uri"] == with_password(tracking_server).replace(
        SECRET, "***"
    )
    no_secret_in_mlflow(client, exp.experiment_id, tmp_path)
    assert SECRET not in repr(study.user_attrs)
    assert SECRET not in out.stdout + out.stderr


def test_password_in_the_tracking_uri_never_shows(tmp_path, tracking_server):
    """No PostgreSQL needed: a journal study and a tracking URI with user:password."""
    out = sweep(
        tmp_path,
        *ARGS,
        "study.name=pw",
        "study.n_trials=4",
        f"tracking.uri={with_password(tracking_server)}",
    )
    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name("pw")
    [parent] = client.search_runs([exp.experiment_id], filter_string="tags.role = 'sweep'")
    assert parent.data.params["tracking.uri"].startswith("http://tracker:***@127.0.0.1:")
    no_secret_in_mlflow(client, exp.experiment_id, tmp_path)
    assert SECRET not in out.stdout + out.stderr
    journal = (tmp_path / "runs" / "optuna.journal").read_text()
    assert SECRET not in journal
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".csv", ".json", ".txt"):
            assert SECRET not in path.read_text(errors="replace"), path
