"""What every bench measures with: whole processes timed from launch to exit, the sweep command
and the plain loops as such processes, a matmul peak, and a straight-line fit.

``bench`` (engine against plain loops), ``scaling`` (cost against trial count) and ``device``
(the same on whatever accelerator JAX sees) share these, so a number means the same in each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.core.model import count_flops

ROOT = Path(__file__).resolve().parent.parent  # the checkout: benchmarks/ and pipeline/
# Where a whole sweep command's time goes: (label, phase it ends with, phase it starts after).
ENGINE_PHASES = (
    ("interpreter start", "started", "launch"),
    ("imports", "imports", "started"),
    ("config, stores, study, MLflow run, data", "setup", "imports"),
    ("trials (ask, train, tell)", "trained", "setup"),
    ("figures", "figures", "trained"),
    ("MLflow close", "mlflow_closed", "figures"),
    ("results table", "results", "mlflow_closed"),
    ("exit", "exit", "results"),
)
LOOP_PHASES = (
    ("interpreter start", "started", "launch"),
    ("imports", "imports", "started"),
    ("trials (data, init, train)", "trained", "imports"),
    ("exit", "exit", "trained"),
)


def child_env() -> dict[str, str]:
    """The environment of a measured process: the checkout importable (the plain loops live in
    benchmarks/, beside the package), and no ``JAX_COMPILATION_CACHE_DIR``: the bench decides
    what is cold (a fresh ``runs_dir``) and what is warm, not a cache left in the shell."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def run_process(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` as a whole process: wall seconds from launch to exit, and its peak RSS."""
    launch = time.time()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()))
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own resource usage
    end = time.time()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = b"".join(stderr).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed:\n{text[-3000:]}")
    return {
        "launch": launch,
        "exit": end,
        "wall_s": end - launch,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def durations(phases: dict, order) -> dict[str, float]:
    return {label: phases[end] - phases[start] for label, end, start in order}


def useful_flops(cfg, depths: list[int]) -> float:
    """Analytic forward+backward FLOPs of the unpadded networks, summed over trials and seeds. A
    residual block has two width x width layers, so a residual MLP of depth d has the dense
    layers of an MLP of depth 2d + 1 (its LayerNorms are left out: O(width), not O(width^2), per
    sample)."""
    from pipeline.engine.datasets import load_dataset

    ds = load_dataset(cfg.data)
    layers = [2 * d + 1 for d in depths] if cfg.model.kind == "resmlp" else depths
    per_step = [
        count_flops(d, cfg.model.width, ds.n_features, ds.n_classes, cfg.train.batch_size)
        for d in layers
    ]
    return float(sum(per_step) * cfg.train.steps * cfg.train.seeds)


def run_engine(overrides: list[str], runs_dir: Path, experiment: str = "bench") -> dict:
    """``python -m pipeline sweep --experiment <experiment>``: wall, phases, the trials it
    trained (in trial order) and the sweep's own accounting (``runs/<study>/timing.json``)."""
    import optuna

    from pipeline.config import load_config
    from pipeline.search.study import make_storage

    cfg = load_config([*overrides, f"runs_dir={runs_dir}"], experiment)
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--experiment", experiment, *overrides]
    out = run_process([*cmd, f"runs_dir={runs_dir}"], runs_dir.parent)
    timing = json.loads((runs_dir / cfg.study.name / "timing.json").read_text())
    phases = {**timing["phases"], "launch": out["launch"], "started": timing["started"]}
    phases["exit"] = out["exit"]
    storage = make_storage(str(runs_dir / "optuna.journal"))
    trials = optuna.load_study(study_name=cfg.study.name, storage=storage).trials
    trials = sorted(trials, key=lambda t: t.number)
    depths = [t.params.get("model.depth", cfg.model.depth) for t in trials]
    return {
        "wall_s": out["wall_s"],
        "peak_rss_mb": out["peak_rss_mb"],
        "phases": durations(phases, ENGINE_PHASES),
        "sweep": {k: v for k, v in timing.items() if k not in ("phases", "started")},
        "params": [t.params for t in trials],
        "steps_to_target": [t.user_attrs["metrics"]["steps_to_target"] for t in trials],
        "useful_flops": useful_flops(cfg, depths) if cfg.model.kind != "custom" else None,
        "trial_steps": len(trials) * cfg.train.seeds * cfg.train.steps,
    }


def run_loop(
    module: str,
    overrides: list[str],
    runs_dir: Path,
    cached: bool = False,
    experiment: str = "bench",
) -> dict:
    """``python -m <module>`` (a plain loop) as a whole process."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    result = runs_dir / f"{module}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", module, "--out", str(result), *(["--cached"] if cached else [])]
    cmd += ["--experiment", experiment] if experiment != "bench" else []
    out = run_process([*cmd, *overrides, f"runs_dir={runs_dir}"], runs_dir.parent)
    document = json.loads(result.read_text())
    phases = {**document["phases"], "launch": out["launch"], "exit": out["exit"]}
    return {
        "wall_s": out["wall_s"],
        "peak_rss_mb": out["peak_rss_mb"],
        "phases": durations(phases, LOOP_PHASES),
        "compile_s": document["compile_s"],
        "params": document["params"],
        "steps_to_target": document["steps_to_target"],
        "trial_ends": document["trial_ends"],
    }


def measure_peak(size: int | None = None, repeats: int = 10) -> dict:
    """The matrix-multiply FLOP/s JAX reaches on its first device (best of ``repeats``), at
    float32 with JAX's default precision (what training gets: TF32 on recent NVIDIA GPUs) and at
    ``precision=highest`` (true float32; the same on a CPU). ``size`` (n x n): 2048 on a CPU,
    8192 on an accelerator (a smaller product leaves a GPU partly idle)."""
    import jax
    import jax.numpy as jnp

    size = size or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    peaks = {}
    for name, precision in (("default", None), ("highest", jax.lax.Precision.HIGHEST)):
        f = jax.jit(lambda a, b, p=precision: jnp.matmul(a, b, precision=p))
        f(a, a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        peaks[name] = 2 * size**3 / best / 1e9
    device = jax.devices()[0]
    return {
        "peak_gflops": peaks["default"],
        "peak_highest_gflops": peaks["highest"],
        "matmul_size": size,
        "device": str(device.device_kind),
        "platform": device.platform,
        "devices": jax.device_count(),
        "jax": jax.__version__,
    }


def peak_in_child(size: int | None = None) -> dict:
    """``measure_peak`` in a process of its own: the bench's process never starts a backend (on
    a GPU it would hold memory the measured commands need)."""
    cmd = [sys.executable, "-m", "benchmarks.measure", *([str(size)] if size else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the matmul peak failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_trials(*runs: dict) -> None:
    first = runs[0]["params"]
    for other in runs[1:]:
        if other["params"] != first:
            raise RuntimeError("the loops and the engine did not train the same trials")


def fit_line(trials: list[int], seconds: list[float]) -> dict:
    """Least squares ``seconds = fixed_s + per_trial_s * trials`` over the points (two or more
    distinct trial counts), with the largest residual as a check that a line describes them."""
    n, s = np.asarray(trials, float), np.asarray(seconds, float)
    if len(set(trials)) < 2:
        return {"fixed_s": None, "per_trial_s": None, "max_residual_s": None, "points": len(n)}
    per_trial, fixed = np.polyfit(n, s, 1)
    residual = s - (fixed + per_trial * n)
    return {
        "fixed_s": float(fixed),
        "per_trial_s": float(per_trial),
        "max_residual_s": float(np.abs(residual).max()),
        "points": len(n),
    }


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


if __name__ == "__main__":  # python -m benchmarks.measure [size]: the peak as one JSON line
    print(json.dumps(measure_peak(*(int(a) for a in sys.argv[1:2]))))
