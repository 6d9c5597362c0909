"""Every command ends cleanly (issue 25): a bad or busy port, an unknown study, a place that
cannot be written and Ctrl-C each give one line on stderr and a non-zero exit (Ctrl-C: 130, with
a line that fits the command), no traceback, and nothing half-written.

The CLI runs in a subprocess where the process matters (imports, servers, signals) and through
``pipeline.cli.main`` otherwise, with ``capfd`` so that whatever reaches the file descriptors
(a library's log line too) counts. Ctrl-C inside a command is ``KeyboardInterrupt`` raised from
a function it calls, at a known point. Unwritable places: the tests run as root, whom ``chmod``
does not stop, so each puts a regular file where a folder is needed, or a folder where a file is.
"""

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

import pipeline.cli as cli
from pipeline.config import CONF_DIR, read_yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STUDY = [  # two trials in a few seconds, with its MLflow runs and figures
    "data.name=gaussian",
    "data.samples=256",
    "data.val_samples=64",
    "data.features=8",
    "model.width=8",
    "train.steps=20",
    "train.eval_every_steps=10",
    "train.seeds=1",
    "study.design=search",
    "study.sampler=random",
    "study.n_trials=2",
    "space.model.depth=[2]",
    "space.model.activation=[relu]",
    "space.init.weights=[he_normal]",
    "space.init.gain=1.0",
    "space.train.learning_rate=[0.1]",
    "tracking.figures=wait",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A finished study 'default' (Optuna journal, MLflow store, figures) for the commands to
    read; tests that write copy what they need."""
    runs = tmp_path_factory.mktemp("study") / "runs"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "sweep", f"runs_dir={runs}", *STUDY],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=runs.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return runs


def only_line(err: str) -> str:
    """The one non-empty line of ``err``; no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def main_captured(capfd, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capfd.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list[str]:
    """What an interrupted or failed write could leave: temporaries and staging folders."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".writing-" in p.name)


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


# --- bad input fails before the engine loads -----------------------------------------------------

MISTYPED = {  # override: the start of its one line
    "model.depht=3": "error: unknown key 'model.depht' in the command-line overrides; did you "
    "mean model.depth, model.dropout, model.base_depth?",
    "init.weights=he": "error: init.weights='he' is invalid: expected one of zeros, ",
    "space.init.weights=[he]": "error: space.init.weights: 'he' is invalid: expected one of ",
}
# One fresh interpreter runs each mistyped command, then says which modules it imported.
CHECK_IMPORTS = """
import sys, pipeline.cli as c
for arg in sys.argv[1:]:
    print(c.main(["sweep", arg]), flush=True)
    print("--", file=sys.stderr, flush=True)
print("pipeline.engine" in sys.modules, "jax" in sys.modules)
"""


@pytest.fixture(scope="module")
def mistyped(tmp_path_factory) -> tuple[list[str], list[str]]:
    """(exit codes then whether the engine and JAX were imported, stderr of each command)."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, *MISTYPED],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path_factory.mktemp("mistyped"),
    )
    return out.stdout.split(), out.stderr.split("--\n")[:-1]


def test_a_mistyped_key_or_value_fails_before_the_engine_is_imported(mistyped):
    words, errs = mistyped
    assert words[: len(MISTYPED)] == ["2"] * len(MISTYPED)
    assert words[len(MISTYPED)] == "False"  # pipeline.engine
    for err, start in zip(errs, MISTYPED.values(), strict=True):
        assert only_line(err).startswith(start)
    for err in errs[1:]:  # a value gets its did-you-mean too (a prefix counts as close)
        assert only_line(err).endswith("; did you mean he_normal, he_uniform?")


def test_a_mistyped_key_fails_before_jax_is_imported(mistyped):
    words, _ = mistyped
    assert words[0] == "2" and words[-1] == "False"  # jax


@pytest.mark.skipif(
    (REPO / "examples" / "breast_cancer.npz").exists(), reason="the example data is written"
)
def test_your_model_without_its_data_says_to_run_make_example_data(capfd, monkeypatch):
    monkeypatch.chdir(REPO)  # the preset's data.path is relative to the repository
    assert read_yaml(CONF_DIR / "experiment" / "your_model.yaml")["data"]["path"] == (
        "examples/breast_cancer.npz"
    )
    code, out, err = main_captured(
        capfd, "sweep", "--experiment", "your_model", "runs_dir=/nonexistent"
    )
    assert code == 2 and out == ""
    assert only_line(err) == (
        "error: data.path='examples/breast_cancer.npz': no such file; write it with "
        "`make example-data`"
    )


# --- help ----------------------------------------------------------------------------------------


def test_help_lists_every_command_with_its_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    [commands] = cli._parser()._subparsers._group_actions  # argparse's record of them
    assert set(commands.choices) == set(cli.COMMANDS)
    for action in commands._choices_actions:  # each command and its help line
        assert f"{action.dest} {' '.join(action.help.split())}" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_prints_no_make_variable_unexpanded():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "make ui" in out.stdout
    assert "$(" not in out.stdout and "$$" not in out.stdout


# --- ports ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ui", "dashboard"])
@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_port_out_of_range_is_refused(runs, capfd, command, port):
    code, out, err = main_captured(capfd, command, "--port", port, f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err) == f"error: --port={port} is invalid: expected an integer from 1 to 65535"


@pytest.fixture
def busy_port():
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_ui_on_a_busy_port_says_so_before_printing_an_address(runs, busy_port):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "ui", "--port", str(busy_port), f"runs_dir={runs}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == ""  # no address that opens the other program
    assert only_line(out.stderr) == (
        f"error: port {busy_port} on 127.0.0.1 is in use by another program: stop it, or serve "
        "on another port (--port <port>, or make ui PORT=<port>)"
    )


def test_dashboard_on_a_busy_port_says_so(runs, capfd, busy_port):
    code, out, err = main_captured(capfd, "dashboard", "--port", str(busy_port), f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err).startswith(f"error: port {busy_port} on 127.0.0.1 is in use")
    assert only_line(err).endswith("make dashboard PORT=<port>)")


def test_ui_print_url_does_not_need_the_port_free(runs, capfd, busy_port):
    """--print-url gives the address of a server already running there."""
    code, out, err = main_captured(
        capfd, "ui", "--print-url", "--port", str(busy_port), f"runs_dir={runs}"
    )
    assert code == 0 and err == ""
    assert re.fullmatch(
        rf"MLflow UI for study 'default': http://127\.0\.0\.1:{busy_port}/#/\S+\n", out
    )


# --- unknown studies -----------------------------------------------------------------------------


def test_ui_refuses_a_study_the_mlflow_store_does_not_hold(runs, capfd):
    code, out, err = main_captured(capfd, "ui", "study.name=nosuch", f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: no study named 'nosuch' in the MLflow store sqlite:///{runs / 'mlflow.db'} "
        "(studies: default)"
    )


@pytest.mark.parametrize("command", ["best", "report", "recommend", "transfer", "dashboard"])
def test_an_unknown_study_is_one_line(runs, capfd, tmp_path, command):
    extra = ["--out", str(tmp_path / "best.yaml")] if command == "best" else []
    code, out, err = main_captured(capfd, command, *extra, "study.name=nosuch", f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: no study named 'nosuch' in {runs / 'optuna.journal'} (studies: default)"
    )
    assert list(tmp_path.iterdir()) == []


# --- places that cannot be written ---------------------------------------------------------------


def test_best_under_a_file_or_onto_a_folder_is_one_line(runs, capfd, tmp_path):
    (tmp_path / "afile").write_text("not a folder")  # a file where conf/best/ should be
    out_path = tmp_path / "afile" / "best.yaml"
    code, out, err = main_captured(capfd, "best", "--out", str(out_path), f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: cannot write {out_path}: {tmp_path / 'afile'} is a file, not a folder; choose "
        "another file with --out"
    )
    folder = tmp_path / "adir"  # a folder where the file should be
    folder.mkdir()
    code, out, err = main_captured(capfd, "best", "--out", str(folder), f"runs_dir={runs}")
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: cannot write {folder}: {folder} is a folder; choose another file with --out"
    )
    assert list(folder.iterdir()) == [] and leftovers(tmp_path) == []


def study_copy(runs: Path, tmp_path: Path) -> Path:
    """The study's storage alone, in a runs folder of the test's own."""
    mine = tmp_path / "runs"
    mine.mkdir()
    shutil.copy(runs / "optuna.journal", mine)
    return mine


def test_report_into_a_folder_that_is_a_file_is_one_line(runs, capfd, tmp_path):
    mine = study_copy(runs, tmp_path)
    (mine / "default").write_text("not a folder")  # where runs/<study>/ should be
    code, out, err = main_captured(capfd, "report", f"runs_dir={mine}")
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: cannot write {mine / 'default'}: {mine / 'default'} is a file, not a folder; "
        "set runs_dir=<folder> to write elsewhere"
    )
    assert (mine / "default").read_text() == "not a folder"


def test_report_that_cannot_replace_its_page_leaves_no_temporary(runs, capfd, tmp_path):
    mine = study_copy(runs, tmp_path)
    blocker = mine / "default" / "report.html"
    blocker.mkdir(parents=True)  # a folder where the page should be: the rename fails
    (blocker / "keep").write_text("x")
    code, out, err = main_captured(capfd, "report", f"runs_dir={mine}")
    assert code == 2
    assert only_line(err) == (
        f"error: cannot write {mine / 'default'}: {blocker} is a folder; set runs_dir=<folder> "
        "to write elsewhere"
    )
    assert (blocker / "keep").read_text() == "x" and leftovers(mine) == []


@pytest.fixture
def no_training(monkeypatch):
    """coord-check without JAX work: what is tested is where its figure goes."""
    monkeypatch.setattr("pipeline.engine.devices.setup_jax", lambda cfg: None)
    monkeypatch.setattr("pipeline.reports.coord_check.coord_data", lambda *a: None)


def test_coord_check_into_a_folder_that_is_a_file_is_one_line(capfd, tmp_path, no_training):
    (tmp_path / "coord_check").write_text("not a folder")
    code, out, err = main_captured(
        capfd, "coord-check", "--widths", "8,16", "data.name=gaussian", f"runs_dir={tmp_path}"
    )
    assert code == 2 and out == ""
    assert only_line(err) == (
        f"error: cannot write {tmp_path / 'coord_check'}: {tmp_path / 'coord_check'} is a file, "
        "not a folder; set runs_dir=<folder> to write elsewhere"
    )


def test_ctrl_c_while_coord_check_draws_leaves_no_figure(capfd, tmp_path, monkeypatch, no_training):
    def draw(data, index, title, path):  # half a figure, then Ctrl-C
        path.write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.reports.coord_check.plot", draw)
    code, out, err = main_captured(
        capfd, "coord-check", "--widths", "8,16", "data.name=gaussian", f"runs_dir={tmp_path}"
    )
    assert code == 130 and out == ""
    assert only_line(err) == "interrupted: no figure was written (an earlier one is unchanged)"
    assert list((tmp_path / "coord_check").iterdir()) == []


# --- Ctrl-C inside a command ---------------------------------------------------------------------


def test_ctrl_c_while_report_writes_keeps_the_earlier_page(runs, capfd, tmp_path, monkeypatch):
    mine = study_copy(runs, tmp_path)
    code, _, _ = main_captured(capfd, "report", f"runs_dir={mine}")
    page = mine / "default" / "report.html"
    assert code == 0 and page.stat().st_size > 10_000
    before = page.read_bytes()
    figures = {p.name: p.read_bytes() for p in (mine / "default").glob("*.png")}
    # after the new figures are drawn (into the staging folder), while the page is assembled
    monkeypatch.setattr("pipeline.reports.html_report._plotly_gz", interrupt)
    code, out, err = main_captured(capfd, "report", f"runs_dir={mine}")
    assert code == 130 and out == ""
    assert only_line(err) == "interrupted: no report was written (an earlier one is unchanged)"
    assert page.read_bytes() == before and leftovers(mine) == []
    assert {p.name: p.read_bytes() for p in (mine / "default").glob("*.png")} == figures


def test_ctrl_c_while_best_writes_keeps_the_earlier_file(runs, capfd, tmp_path, monkeypatch):
    path = tmp_path / "best.yaml"
    code, _, _ = main_captured(capfd, "best", "--out", str(path), f"runs_dir={runs}")
    assert code == 0
    before = path.read_bytes()

    def rename(self, target):  # Ctrl-C between writing the temporary and renaming it
        if self.name.endswith(".tmp"):
            raise KeyboardInterrupt
        return original(self, target)

    original = Path.replace
    monkeypatch.setattr(Path, "replace", rename)
    code, out, err = main_captured(capfd, "best", "--out", str(path), f"runs_dir={runs}")
    assert code == 130 and out == ""
    assert only_line(err) == (
        "interrupted: no best-config file was written (an earlier one is unchanged)"
    )
    assert path.read_bytes() == before and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("command", "where", "line"),
    [
        (
            ["train", "data.name=gaussian"],
            "pipeline.engine.devices.setup_jax",
            "interrupted: nothing was written; rerun the same command to train it",
        ),
        (
            ["recommend"],
            "pipeline.reports.recommend.recommendations",
            "interrupted: nothing was written",
        ),
        (
            ["transfer"],
            "pipeline.reports.transfer.analyse",
            "interrupted: no figure was written (earlier ones are unchanged)",
        ),
    ],
)
def test_ctrl_c_gives_the_line_of_the_command(
    runs, capfd, tmp_path, monkeypatch, command, where, line
):
    monkeypatch.setattr(where, interrupt)
    mine = study_copy(runs, tmp_path)
    code, out, err = main_captured(capfd, *command, f"runs_dir={mine}")
    assert code == 130 and out == ""
    assert only_line(err) == line
    assert leftovers(tmp_path) == []


# --- Ctrl-C on the servers -----------------------------------------------------------------------


def wait_for(url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(
    ("command", "probe", "line"),
    [
        ("ui", "/health", "stopped the MLflow UI"),
        ("dashboard", "/api/studies", "stopped optuna-dashboard"),
    ],
)
def test_ctrl_c_stops_a_server_quietly(runs, command, probe, line):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", command, "--port", str(port), f"runs_dir={runs}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in address, proc.stderr.read()
        wait_for(f"http://127.0.0.1:{port}{probe}", 120)  # serving, as when a user presses it
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.splitlines()[-1] == line
    assert port_is_free(port)  # the server's workers are gone too
