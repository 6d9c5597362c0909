"""``make bench``: the sweep command against plain per-trial loops, each timed as a whole process.

Every measurement is a fresh process started from here and timed from launch to exit, as a user
times a command from the shell:

- **engine**: ``python -m pipeline sweep --experiment bench ...`` (Optuna on the journal file,
  training, MLflow on SQLite, figures, the results table);
- **loop**: ``python -m benchmarks.baseline`` (Flax + Optax + ``study.optimize``, written as a
  careful user would) and **independent loop**: ``python -m benchmarks.independent_loop`` (the same
  trials written from scratch without Flax or Optax); ratios are quoted against the faster one;
- **cached loop**: the baseline with JAX's persistent compilation cache and the engine's XLA
  flags (the stronger baseline).

"cold" starts from an empty ``runs_dir``; "warm" is a second sweep in the same ``runs_dir`` (a
new study; the executables in JAX's persistent cache; the MLflow database already there), as a
user's second ``make sweep``. The plain loops have no persistent cache: measured once, shown in
both rows. A second table says where the engine's time went (from ``runs/<study>/timing.json``)
beside the loop's; a third keeps the sweep's own accounting. Results: ``runs/bench/latest.json``.

The **residual workload** (``--workload residual``, or ``all``, the default): residual MLPs
(``model.kind=resmlp``) of depth {4, 16, 64}, no norm or pre-norm, ``init.residual`` in {none,
scaled, fixup, rezero}, He at a log-uniform gain, on the bench preset's data and schedule
(``benchmarks.residual_loop.WORKLOAD``), against ``python -m benchmarks.residual_loop``: a plain
per-trial residual MLP in Flax (scanned blocks) and Optax, plain and cached, on the same trials.
Its results go to ``residual`` in the same file (``runs/bench/residual.json`` when it runs alone).

    python -m benchmarks.bench                 # 64 and 256 trials (+1024: --with-1024), depth table
    python -m benchmarks.bench --trials 64     # a quick look
    python -m benchmarks.bench --workload residual --trials 64   # only the residual workload
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.core.model import count_flops

DEPTH_SPACES = {8: [2, 4, 8], 32: [2, 4, 8, 16, 32], 64: [2, 4, 8, 16, 32, 64]}
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


ROOT = Path(__file__).resolve().parent.parent  # the checkout: benchmarks/ and pipeline/


def _process(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` as a whole process: wall seconds from launch to exit, and its peak RSS."""
    launch = time.time()
    # The plain loops live in benchmarks/, beside the package, not in it: importable from the root.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
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


def _durations(phases: dict, order) -> dict[str, float]:
    return {label: phases[end] - phases[start] for label, end, start in order}


def _useful_flops(cfg, depths: list[int]) -> float:
    """Analytic forward+backward FLOPs of the unpadded networks, summed over trials. A residual
    block has two width x width layers, so a residual MLP of depth d has the dense layers of an
    MLP of depth 2d + 1 (its LayerNorms are left out: O(width), not O(width^2), per sample)."""
    from pipeline.engine.datasets import load_dataset

    ds = load_dataset(cfg.data)
    layers = [2 * d + 1 for d in depths] if cfg.model.kind == "resmlp" else depths
    per_step = [
        count_flops(d, cfg.model.width, ds.n_features, ds.n_classes, cfg.train.batch_size)
        for d in layers
    ]
    return float(sum(per_step) * cfg.train.steps)


def run_engine(overrides: list[str], runs_dir: Path, experiment: str = "bench") -> dict:
    """``python -m pipeline sweep --experiment bench``: wall, phases, the trials it trained."""
    import optuna

    from pipeline.config import load_config
    from pipeline.search.study import make_storage

    cfg = load_config([*overrides, f"runs_dir={runs_dir}"], experiment)
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--experiment", experiment, *overrides]
    out = _process([*cmd, f"runs_dir={runs_dir}"], runs_dir.parent)
    timing = json.loads((runs_dir / cfg.study.name / "timing.json").read_text())
    phases = {**timing["phases"], "launch": out["launch"], "started": timing["started"]}
    phases["exit"] = out["exit"]
    storage = make_storage(str(runs_dir / "optuna.journal"))
    trials = optuna.load_study(study_name=cfg.study.name, storage=storage).trials
    trials = sorted(trials, key=lambda t: t.number)
    depths = [t.params["model.depth"] for t in trials]
    return {
        "wall_s": out["wall_s"],
        "peak_rss_mb": out["peak_rss_mb"],
        "phases": _durations(phases, ENGINE_PHASES),
        "sweep": {k: v for k, v in timing.items() if k not in ("phases", "started")},
        "params": [t.params for t in trials],
        "steps_to_target": [t.user_attrs["metrics"]["steps_to_target"] for t in trials],
        "useful_flops": _useful_flops(cfg, depths) if cfg.model.kind != "custom" else None,
    }


def run_loop(module: str, overrides: list[str], runs_dir: Path, cached: bool = False) -> dict:
    """``python -m <module>`` (a plain loop) as a whole process."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    result = runs_dir / f"{module}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", module, "--out", str(result), *(["--cached"] if cached else [])]
    out = _process([*cmd, *overrides, f"runs_dir={runs_dir}"], runs_dir.parent)
    document = json.loads(result.read_text())
    phases = {**document["phases"], "launch": out["launch"], "exit": out["exit"]}
    return {
        "wall_s": out["wall_s"],
        "peak_rss_mb": out["peak_rss_mb"],
        "phases": _durations(phases, LOOP_PHASES),
        "compile_s": document["compile_s"],
        "params": document["params"],
        "steps_to_target": document["steps_to_target"],
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


def _same_trials(*runs: dict) -> None:
    first = runs[0]["params"]
    for other in runs[1:]:
        if other["params"] != first:
            raise RuntimeError("the loops and the engine did not train the same trials")


def _row(n: int, start: str, engine: dict, loops: dict, cached: dict | None, peak: float) -> dict:
    fastest = min(loops, key=lambda k: loops[k]["wall_s"])
    loop_s = loops[fastest]["wall_s"]
    useful = engine["useful_flops"] / engine["wall_s"] / 1e9
    sweep = engine["sweep"]
    return {
        "trials": n,
        "start": start,
        "engine_s": engine["wall_s"],
        **{f"{k}_s": v["wall_s"] for k, v in loops.items()},
        "loops_differ": abs(loops["loop"]["wall_s"] / loops["independent_loop"]["wall_s"] - 1)
        if "independent_loop" in loops
        else None,
        "fastest_loop": fastest,
        "speedup": loop_s / engine["wall_s"],
        "loop_cached_s": cached["wall_s"] if cached else None,
        "speedup_vs_cached_loop": cached["wall_s"] / engine["wall_s"] if cached else None,
        "useful_gflops": useful,
        "peak_fraction": useful / peak,
        "peak_rss_mb": engine["peak_rss_mb"],
        "loop_peak_rss_mb": loops[fastest]["peak_rss_mb"],
        "engine_phases": engine["phases"],
        "loop_phases": loops[fastest]["phases"],
        "cached_loop_phases": cached["phases"] if cached else None,
        "sweep": sweep,
    }


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _speed_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    cols = [
        ("trials", "trials", "d"),
        ("start", "start", "s"),
        ("engine s", "engine_s", ".1f"),
        ("loop s", "loop_s", ".1f"),
        ("independent loop s", "independent_loop_s", ".1f"),
        ("loops differ", "loops_differ", ".1%"),
        ("speedup (vs faster loop)", "speedup", ".2f"),
        ("cached loop s", "loop_cached_s", ".1f"),
        ("vs cached", "speedup_vs_cached_loop", ".2f"),
        ("useful GFLOP/s", "useful_gflops", ".1f"),
        ("of peak", "peak_fraction", ".0%"),
        ("peak RSS MB", "peak_rss_mb", ".0f"),
        ("loop RSS MB", "loop_peak_rss_mb", ".0f"),
    ]
    for name, _, _ in cols:
        t.add_column(name, justify="right")
    for r in rows:
        t.add_row(*(_fmt(r.get(k), spec) for _, k, spec in cols))
    return t


def _phase_table(row: dict) -> Table:
    """Where the engine's whole-command time went, beside the loop's and the cached loop's."""
    t = Table(title=f"{row['trials']} trials, {row['start']}: where the time goes (s)")
    for name in ("phase", "engine", "loop", "cached loop"):
        t.add_column(name, justify="right" if name != "phase" else "left")
    loop, cached = row["loop_phases"], row["cached_loop_phases"] or {}
    loop_of = {"trials (ask, train, tell)": "trials (data, init, train)"}
    for label, value in row["engine_phases"].items():
        other = loop_of.get(label, label)
        t.add_row(
            label, _fmt(value, ".2f"), _fmt(loop.get(other), ".2f"), _fmt(cached.get(other), ".2f")
        )
    sweep = row["sweep"]
    inside = {
        "  of which compile wait": sweep["compile_wait_s"],
        "  of which training": sweep["train_s"],
        "  of which Optuna wait": sweep["optuna_s"],
    }
    for label, value in inside.items():
        t.add_row(label, _fmt(value, ".2f"), "", "")
    t.add_row(
        "total",
        _fmt(row["engine_s"], ".2f"),
        _fmt(sum(loop.values()), ".2f"),
        _fmt(sum(cached.values()) if cached else None, ".2f"),
    )
    return t


def _accounting_table(rows: list[dict]) -> Table:
    """The sweep's own accounting (inside ``run_sweep``), as the earlier bench reported it."""
    t = Table(title="inside the sweep: its own accounting")
    cols = [
        ("trials", "trials", "d"), ("start", "start", "s"), ("sweep s", "wall_s", ".1f"),
        ("compile s (threads)", "compile_s", ".1f"), ("compile wait s", "compile_wait_s", ".1f"),
        ("training s", "train_s", ".1f"), ("MLflow wait s", "logging_wait_s", ".1f"),
        ("MLflow thread s", "logging_s", ".1f"), ("MLflow CPU s", "logging_cpu_s", ".1f"),
        ("Optuna wait s", "optuna_s", ".2f"), ("recorder thread s", "optuna_thread_s", ".1f"),
        ("recorder CPU s", "optuna_thread_cpu_s", ".1f"), ("padding", "padding_waste", ".0%"),
        ("executables", "executables", "d"),
    ]  # fmt: skip
    for name, _, _ in cols:
        t.add_column(name, justify="right")
    for r in rows:
        values = {**r["sweep"], "trials": r["trials"], "start": r["start"]}
        t.add_row(*(_fmt(values.get(k), spec) for _, k, spec in cols))
    return t


def bench_custom(out: Path) -> int:
    """The sweep of the example's own module against ``benchmarks.custom_loop`` on the same
    trials (a seeded random sampler), each a whole process: engine cold and warm, loop plain
    and with the persistent cache."""
    sys.path.insert(0, str(ROOT))
    from examples.make_data import main as make_data

    console = Console(width=max(Console().width, 120))
    data = ROOT / "examples" / "breast_cancer.npz"
    if not data.exists():
        make_data(str(data))
    common = [f"data.path={data}", "study.sampler=random", "study.batch_size=48"]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-custom-") as tmp:
        tmp = Path(tmp)
        loop = run_loop("benchmarks.custom_loop", common, tmp / "loop")
        cached = run_loop("benchmarks.custom_loop", common, tmp / "cached", cached=True)
        for start in ("cold", "warm"):
            study = [f"study.name=custom-{start}"]
            rows[start] = run_engine([*common, *study], tmp / "engine", "your_model")
        _same_trials(rows["cold"], rows["warm"], loop, cached)
    table = Table(title=f"your_model: {len(loop['params'])} trials of examples/resnet.py")
    for name in ("", "engine s", "loop s", "cached loop s", "speedup", "vs cached"):
        table.add_column(name, justify="right")
    for start, engine in rows.items():
        e = engine["wall_s"]
        table.add_row(
            start, f"{e:.1f}", f"{loop['wall_s']:.1f}", f"{cached['wall_s']:.1f}",
            f"{loop['wall_s'] / e:.2f}x", f"{cached['wall_s'] / e:.2f}x",
        )  # fmt: skip
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"engine": rows, "loop": loop, "cached_loop": cached}, indent=1))
    console.print(f"wrote {out}")
    return 0


def bench_mlp(
    trials: list[int], peak: float, console: Console, depth_table: bool
) -> tuple[list[dict], list[dict]]:
    """Workload W (the bench preset): the sweep command cold and warm against the two plain
    loops and the cached loop, per trial count; then the engine alone by maximum depth."""
    rows, depth_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        for n in trials:
            common = [f"study.n_trials={n}"]
            loops = {
                m.split(".")[-1]: run_loop(m, common, tmp / f"{m}-{n}")
                for m in ("benchmarks.baseline", "benchmarks.independent_loop")
            }
            loops = {"loop": loops["baseline"], "independent_loop": loops["independent_loop"]}
            for start in ("cold", "warm"):
                study = [f"study.name=bench{n}-{start}"]
                engine = run_engine([*common, *study], tmp / f"engine-{n}")
                cached = run_loop("benchmarks.baseline", common, tmp / f"cached-{n}", cached=True)
                _same_trials(engine, cached, *loops.values())
                rows.append(_row(n, start, engine, loops, cached, peak))
                console.print(_speed_table(rows[-1:], f"{n} trials, {start}"))
                console.print(_phase_table(rows[-1]))
        if depth_table:
            for depth, depths in DEPTH_SPACES.items():
                space = [f"space.model.depth=[{', '.join(map(str, depths))}]"]
                engine = run_engine(
                    ["study.n_trials=256", f"study.name=depth{depth}", *space],
                    tmp / f"depth-{depth}",
                )
                depth_rows.append(
                    {"max_depth": depth, "engine_s": engine["wall_s"], "sweep": engine["sweep"]}
                )
    console.print(_speed_table(rows, "whole commands: engine vs plain loops (workload W)"))
    for row in rows:
        console.print(_phase_table(row))
    console.print(_accounting_table(rows))
    if depth_rows:
        t = Table(title="engine, 256 trials, cold, by maximum depth (whole command)")
        for name in ("max depth", "engine s", "compile s (threads)", "executables", "wait s"):
            t.add_column(name, justify="right")
        for r in depth_rows:
            s = r["sweep"]
            t.add_row(
                str(r["max_depth"]),
                _fmt(r["engine_s"]),
                _fmt(s["compile_s"]),
                str(s["executables"]),
                _fmt(s["compile_wait_s"]),
            )
        console.print(t)
    return rows, depth_rows


def bench_residual(trials: list[int], peak: float, console: Console) -> list[dict]:
    """The residual workload: the sweep command cold and warm against
    ``benchmarks.residual_loop``, plain and cached, on the same trials, per trial count."""
    from benchmarks.residual_loop import WORKLOAD

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-residual-") as tmp:
        tmp = Path(tmp)
        for n in trials:
            common = [*WORKLOAD, f"study.n_trials={n}"]
            loop = run_loop("benchmarks.residual_loop", common, tmp / f"loop-{n}")
            for start in ("cold", "warm"):  # the cached loop's second run finds its cache
                study = [f"study.name=bench_residual{n}-{start}"]
                engine = run_engine([*common, *study], tmp / f"engine-{n}")
                cached = run_loop(
                    "benchmarks.residual_loop", common, tmp / f"cached-{n}", cached=True
                )
                _same_trials(engine, loop, cached)
                rows.append(_row(n, start, engine, {"loop": loop}, cached, peak))
                console.print(_speed_table(rows[-1:], f"residual workload: {n} trials, {start}"))
                console.print(_phase_table(rows[-1]))
    console.print(_speed_table(rows, "whole commands: engine vs the plain residual loop"))
    console.print(_accounting_table(rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--trials", default="64,256", help="comma-separated trial counts")
    p.add_argument(
        "--with-1024", action="store_true", help="add 1024 trials (about 25 min more on 2 cores)"
    )
    p.add_argument("--no-depth-table", action="store_true")
    p.add_argument("--out", default="runs/bench/latest.json")
    p.add_argument("--child", choices=["peak"], help=argparse.SUPPRESS)
    p.add_argument(
        "--custom",
        action="store_true",
        help="only the sweep of your own module (conf/experiment/your_model.yaml) against a "
        "plain per-trial loop over the same module",
    )
    p.add_argument(
        "--workload",
        choices=["all", "mlp", "residual"],
        default="all",
        help="mlp: workload W (the bench preset); residual: residual MLPs against "
        "benchmarks.residual_loop; all: both",
    )
    args, _ = p.parse_known_args(argv)
    if args.child:
        print(json.dumps(measure_peak()))
        return 0
    if args.custom:
        return bench_custom(Path(args.out).with_name("custom.json"))

    console = Console(width=max(Console().width, 190))
    trials = [int(n) for n in args.trials.split(",")] + ([1024] if args.with_1024 else [])
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--child", "peak"],
        capture_output=True,
        text=True,
    )
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {peak['device']}, {os.cpu_count()} cores"
    console.print(f"machine: {machine}; float32 matmul peak {peak['peak_gflops']:.1f} GFLOP/s")
    rows, depth_rows = [], []
    if args.workload in ("all", "mlp"):
        rows, depth_rows = bench_mlp(
            trials, peak["peak_gflops"], console, depth_table=not args.no_depth_table
        )
    residual = []
    if args.workload in ("all", "residual"):
        residual = bench_residual(trials, peak["peak_gflops"], console)
    loops_differ = statistics.median(r["loops_differ"] for r in rows) if rows else None
    path = Path(args.out)
    if args.workload == "residual":  # alone: leave the last full bench's file as it is
        path = path.with_name("residual.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "peak": peak, "rows": rows, "depth_rows": depth_rows}
    document["residual"] = residual
    path.write_text(json.dumps({**document, "loops_differ_median": loops_differ}, indent=2))
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
