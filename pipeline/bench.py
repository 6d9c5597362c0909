"""``make bench``: the sweep engine against the plain per-trial loop, on the same trials.

Every measurement runs in its own subprocess, so "cold" really means nothing compiled before
(fresh process, empty persistent cache) and "warm" means a fresh process that finds the
executables of the cold run in JAX's persistent compilation cache, as a second ``make sweep``
would. Peak memory is each subprocess's maximum resident set. Results are printed as tables and
written to ``runs/bench/latest.json``.

    python -m pipeline.bench              # 64 and 256 trials (+1024: --with-1024), depth table
    python -m pipeline.bench --trials 64     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.model import count_flops

# Where the engine's wall time went: seconds the sweep waited (logging_s, optuna_s) and seconds
# background threads spent (wall, and CPU: on 2 cores a busy thread slows training down).
ENGINE_TIMES = (
    "logging_s",
    "logging_thread_s",
    "logging_thread_cpu_s",
    "optuna_s",
    "optuna_thread_s",
    "optuna_thread_cpu_s",
    "train_s",
    "padding_waste",
    "executables",
)
DEPTH_SPACES = {8: [2, 4, 8], 32: [2, 4, 8, 16, 32], 64: [2, 4, 8, 16, 32, 64]}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _useful_flops(cfg, depths: list[int]) -> float:
    """Analytic forward+backward FLOPs of the unpadded networks, summed over trials."""
    from pipeline.data import load_dataset

    ds = load_dataset(cfg.data)
    per_step = [
        count_flops(d, cfg.model.width, ds.n_features, ds.n_classes, cfg.train.batch_size)
        for d in depths
    ]
    return float(sum(per_step) * cfg.train.steps)


def _compile_listener():
    """Seconds XLA spent compiling in this process (both sides measured the same way)."""
    import jax

    total = [0.0]

    def on_event(event: str, duration: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(on_event)
    return total


def measure_engine(overrides: list[str]) -> dict:
    from pipeline.config import load_config
    from pipeline.sweep import run_sweep

    cfg = load_config(overrides, "bench")
    compiled = _compile_listener()
    t0 = time.perf_counter()
    summary = run_sweep(cfg, "bench", Console(stderr=True, quiet=True))
    wall = time.perf_counter() - t0
    trials = sorted(summary.study.trials, key=lambda t: t.number)
    return {
        "wall_s": wall,
        "compile_s": summary.compile_s,
        "compile_wait_s": summary.compile_wait_s,
        "xla_compile_s": compiled[0],
        "logging_s": summary.logging_wait_s,
        "logging_thread_s": summary.logging_s,
        "logging_thread_cpu_s": summary.logging_cpu_s,
        "optuna_s": summary.optuna_s,
        "optuna_thread_s": summary.optuna_thread_s,
        "optuna_thread_cpu_s": summary.optuna_thread_cpu_s,
        "train_s": summary.train_s,
        "useful_flops": _useful_flops(cfg, [t.params["model.depth"] for t in trials]),
        "padding_waste": summary.padding_waste,
        "executables": summary.executables,
        "params": [t.params for t in trials],
        "steps_to_target": [t.user_attrs["metrics"]["steps_to_target"] for t in trials],
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_loop(overrides: list[str], cached: bool = False) -> dict:
    """The plain loop; ``cached`` turns on JAX's persistent cache (a typical loop has none)."""

    from pipeline.baseline import run_loop
    from pipeline.config import flatten_space, load_config
    from pipeline.devices import use_compilation_cache
    from pipeline.sweep import cache_dir

    cfg = load_config(overrides, "bench")
    if cached:
        use_compilation_cache(cache_dir(cfg))
    compiled = _compile_listener()
    t0 = time.perf_counter()
    results = run_loop(cfg, flatten_space(cfg.space), cfg.study.n_trials)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "compile_s": compiled[0],
        "useful_flops": _useful_flops(cfg, [p["model.depth"] for p, _ in results]),
        "params": [p for p, _ in results],
        "steps_to_target": [m["steps_to_target"] for _, m in results],
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_peak() -> dict:
    """The float32 matrix-multiply peak of this machine, as JAX reaches it (best of 10)."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return {"peak_gflops": 2 * n**3 / best / 1e9, "device": str(jax.devices()[0].device_kind)}


def _child(kind: str, overrides: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.bench", "--child", kind, *overrides],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pair(
    n: int,
    start: str,
    tmp: Path,
    depths: list[int] | None,
    typical_loop: dict | None,
    with_loops: bool,
    peak: float,
) -> dict:
    """One row: engine and loops on the same n trials. A cold row starts from an empty
    ``runs_dir`` (no compilation cache, no MLflow database); a warm row is a second sweep in the
    same ``runs_dir``, as a user's second ``make sweep``: a new study, the executables of the
    first in JAX's persistent cache, the MLflow database already created."""
    tag = f"{n}-depths{max(depths)}" if depths else f"{n}"
    common = [f"study.n_trials={n}", f"study.name=bench{n}-{start}"]
    if depths:
        common.append(f"space.model.depth=[{', '.join(map(str, depths))}]")
    engine = _child("engine", [*common, f"runs_dir={tmp / f'engine-{tag}'}"])
    cached = None
    if with_loops:
        cached = _child("loop-cached", [*common, f"runs_dir={tmp / f'loop-{tag}'}"])
        for other in (cached, typical_loop):
            if other is not None and other["params"] != engine["params"]:
                raise RuntimeError("the loop and the engine did not train the same trials")
    loop_s = typical_loop["wall_s"] if typical_loop else None
    useful = engine["useful_flops"] / engine["wall_s"] / 1e9
    return {
        "trials": n,
        "max_depth": max(depths or [32]),
        "start": start,
        "engine_s": engine["wall_s"],
        "loop_s": loop_s,
        "speedup": loop_s / engine["wall_s"] if loop_s else None,
        "loop_cached_s": cached["wall_s"] if cached else None,
        "speedup_vs_cached_loop": cached["wall_s"] / engine["wall_s"] if cached else None,
        "useful_gflops": useful,
        "loop_useful_gflops": typical_loop["useful_flops"] / loop_s / 1e9 if loop_s else None,
        "peak_gflops": peak,
        "peak_fraction": useful / peak,
        "compile_s": engine["compile_s"],
        "compile_wait_s": engine["compile_wait_s"],
        "xla_compile_s": engine["xla_compile_s"],
        "loop_compile_s": typical_loop["compile_s"] if typical_loop else None,
        **{k: engine[k] for k in ENGINE_TIMES},
        "compile_s_per_executable": engine["compile_s"] / max(engine["executables"], 1),
        "peak_rss_mb": engine["peak_rss_mb"],
        "loop_peak_rss_mb": typical_loop["peak_rss_mb"] if typical_loop else None,
    }


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    cols = [
        ("trials", "trials", "d"),
        ("max depth", "max_depth", "d"),
        ("start", "start", "s"),
        ("engine s", "engine_s", ".1f"),
        ("loop s", "loop_s", ".1f"),
        ("speedup", "speedup", ".2f"),
        ("cached loop s", "loop_cached_s", ".1f"),
        ("vs cached", "speedup_vs_cached_loop", ".2f"),
        ("useful GFLOP/s", "useful_gflops", ".1f"),
        ("of peak", "peak_fraction", ".0%"),
        ("compile s", "compile_s", ".1f"),
        ("compile wait s", "compile_wait_s", ".1f"),
        ("MLflow wait s", "logging_s", ".1f"),
        ("MLflow thread s", "logging_thread_s", ".1f"),
        ("Optuna wait s", "optuna_s", ".1f"),
        ("Optuna thread s", "optuna_thread_s", ".1f"),
        ("padding", "padding_waste", ".0%"),
        ("executables", "executables", "d"),
        ("peak MB", "peak_rss_mb", ".0f"),
    ]
    for name, _, _ in cols:
        t.add_column(name, justify="right")
    for r in rows:
        t.add_row(*(_fmt(r[k], spec) for _, k, spec in cols))
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--trials", default="64,256", help="comma-separated trial counts")
    p.add_argument(
        "--with-1024", action="store_true", help="add 1024 trials (about 25 min more on 2 cores)"
    )
    p.add_argument("--no-depth-table", action="store_true")
    p.add_argument("--out", default="runs/bench/latest.json")
    p.add_argument(
        "--child", choices=["engine", "loop", "loop-cached", "peak"], help=argparse.SUPPRESS
    )
    args, overrides = p.parse_known_args(argv)
    if args.child:
        fn = {
            "engine": measure_engine,
            "loop": measure_loop,
            "loop-cached": lambda ov: measure_loop(ov, cached=True),
            "peak": lambda _: measure_peak(),
        }[args.child]
        print(json.dumps(fn(overrides)))
        return 0

    console = Console(width=max(Console().width, 190))
    trials = [int(n) for n in args.trials.split(",")] + ([1024] if args.with_1024 else [])
    peak = _child("peak", [])
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {peak['device']}, {os.cpu_count()} cores"
    console.print(f"machine: {machine}; float32 matmul peak {peak['peak_gflops']:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        for n in trials:
            # The typical loop has no persistent cache, so a second run of it is the same run:
            # measured once, shown in both rows.
            typical = _child("loop", [f"study.n_trials={n}", f"runs_dir={tmp / 'loop'}"])
            for start in ("cold", "warm"):
                rows.append(_pair(n, start, tmp, None, typical, True, peak["peak_gflops"]))
                console.print(_table(rows[-1:], f"{n} trials, {start}"))
        if not args.no_depth_table:
            for depths in DEPTH_SPACES.values():
                rows.append(_pair(256, "cold", tmp, depths, None, False, peak["peak_gflops"]))
    console.print(
        _table([r for r in rows if r["loop_s"] is not None], "engine vs plain loop (workload W)")
    )
    depth_rows = [r for r in rows if r["loop_s"] is None]
    if depth_rows:
        console.print(_table(depth_rows, "engine, 256 trials, cold, by maximum depth"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "peak": peak, "rows": rows}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
