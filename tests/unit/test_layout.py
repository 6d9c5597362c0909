"""The layout shows the architecture: the core is pure, the public API is explicit, old module
names still import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
# What the pure core may not import: the search, tracking, reports, config and file layers, and the
# shell's own packages.
FORBIDDEN = {
    "optuna",
    "mlflow",
    "omegaconf",
    "yaml",
    "argparse",
    "pathlib",
    "shutil",
    "tempfile",
    "pickle",
    "json",
    "csv",
    "sqlite3",
    "sqlalchemy",
    "rich",
    "pipeline.config",
    "pipeline.engine",
    "pipeline.search",
    "pipeline.tracking",
    "pipeline.reports",
    "pipeline.reuse",
    "pipeline.cli",
}
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink"}


def _imports_and_calls(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    imports, calls = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Call):
            f = node.func
            calls.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return imports, calls


CORE = sorted((PACKAGE / "core").glob("*.py"))


@pytest.mark.parametrize("path", CORE, ids=[p.stem for p in CORE])
def test_the_core_imports_no_search_tracking_config_or_file_io(path):
    imports, calls = _imports_and_calls(path)
    bad = {i for i in imports if any(i == f or i.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"
    assert not calls & FILE_CALLS, f"{path.name} does file I/O: {sorted(calls & FILE_CALLS)}"


def test_the_core_is_all_the_modules_the_guide_names():
    names = {p.stem for p in CORE} - {"__init__"}
    assert names == {
        "activations",
        "initializers",
        "model",
        "net",
        "rules",
        "parametrization",
        "transformer",
        "train",
        "unit_draws",
        "metrics",
        "losses",
        "diagnostics",
        "lsuv",
        "names",
        "residual",
        "theory",
        "predict",
        "data",
        "estimate",
    }


def test_the_public_api_and_the_names_scripts_already_use():
    code = """
import pipeline, pipeline.theory, pipeline.export
from pipeline.theory import signal_propagation, critical_sigma_w2
from pipeline.export import to_flax, to_keras, to_torch
from pipeline import load_initializer, load_bias_initializer
import pipeline.core.theory, pipeline.reuse.export
assert pipeline.theory is pipeline.core.theory and pipeline.export is pipeline.reuse.export
assert sorted(pipeline.__all__) == sorted(
    ["init_params", "load_bias_initializer", "load_initializer", "make_bias_initializer",
     "make_initializer"])
for name in pipeline.__all__:
    assert callable(getattr(pipeline, name)), name
print(signal_propagation("tanh", 1.0, 0.0)["chi1"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 0.0 < float(out.stdout.strip()) <= 1.0  # tanh at sigma_w^2 = 1: chi1 = 1 at q* = 0


@pytest.mark.slow  # the command as a user runs it: e2e
def test_the_initsweep_command_is_python_m_pipeline():
    # pyproject.toml's console script: the same entry point as `python -m pipeline`.
    command = Path(sys.executable).parent / "initsweep"
    assert command.exists(), "reinstall the project: pip install -e ."
    as_script = subprocess.run([str(command), "keys"], capture_output=True, text=True, timeout=120)
    as_module = subprocess.run(
        [sys.executable, "-m", "pipeline", "keys"], capture_output=True, text=True, timeout=120
    )
    assert as_script.returncode == as_module.returncode == 0
    assert as_script.stdout == as_module.stdout and "model.depth" in as_script.stdout
