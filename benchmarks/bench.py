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

The **grid workload** (``--workload grid``, or ``all``): the default study's design
(``study.design=grid``: every arm at every point of one learning-rate grid, common seeds) on W's
data and schedule, ``conf/experiment/bench_grid.yaml`` (240 trials), against both plain loops and
the cached loop, which enqueue the same grid points with their learning rates. Its results go to
``grid`` (``runs/bench/grid.json`` alone).

``--scaling`` (``benchmarks.scaling``) and ``--device`` (``benchmarks.device``) run only those
benches; the flags after them are theirs.

    python -m benchmarks.bench                 # 64 and 256 trials (+1024: --with-1024), depth table
    python -m benchmarks.bench --trials 64     # a quick look
    python -m benchmarks.bench --workload residual --trials 64   # only the residual workload
    python -m benchmarks.bench --workload grid                   # only the grid workload
    python -m benchmarks.bench --scaling 16,32,64                # how cost grows, a quick check
    python -m benchmarks.bench --device --sizes 8,16 --steps 20  # the device script, tiny
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import device, scaling
from benchmarks.measure import ROOT, fmt, peak_in_child, run_engine, run_loop, same_trials
from pipeline.config import Space, load_config
from pipeline.search import grid as grids

DEPTH_SPACES = {8: [2, 4, 8], 32: [2, 4, 8, 16, 32], 64: [2, 4, 8, 16, 32, 64]}
PLAIN_LOOPS = ("benchmarks.baseline", "benchmarks.independent_loop")


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
        t.add_row(*(fmt(r.get(k), spec) for _, k, spec in cols))
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
            label, fmt(value, ".2f"), fmt(loop.get(other), ".2f"), fmt(cached.get(other), ".2f")
        )
    sweep = row["sweep"]
    inside = {
        "  of which compile wait": sweep["compile_wait_s"],
        "  of which training": sweep["train_s"],
        "  of which Optuna wait": sweep["optuna_s"],
    }
    for label, value in inside.items():
        t.add_row(label, fmt(value, ".2f"), "", "")
    t.add_row(
        "total",
        fmt(row["engine_s"], ".2f"),
        fmt(sum(loop.values()), ".2f"),
        fmt(sum(cached.values()) if cached else None, ".2f"),
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
        t.add_row(*(fmt(values.get(k), spec) for _, k, spec in cols))
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
        same_trials(rows["cold"], rows["warm"], loop, cached)
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


def _against_loops(
    n: int, common: list[str], experiment: str, tmp: Path, peak: float, console: Console
) -> list[dict]:
    """The sweep command cold and warm against both plain loops (one run each: no persistent
    cache) and the cached loop (cold, then warm as its cache is), all on the same trials."""
    loops = {
        name: run_loop(module, common, tmp / f"{module}-{n}", experiment=experiment)
        for name, module in zip(("loop", "independent_loop"), PLAIN_LOOPS, strict=True)
    }
    rows = []
    for start in ("cold", "warm"):
        study = [f"study.name={experiment}{n}-{start}"]
        engine = run_engine([*common, *study], tmp / f"engine-{n}", experiment)
        cached = run_loop(PLAIN_LOOPS[0], common, tmp / f"cached-{n}", True, experiment)
        same_trials(engine, cached, *loops.values())
        rows.append(_row(n, start, engine, loops, cached, peak))
        console.print(_speed_table(rows[-1:], f"{experiment}: {n} trials, {start}"))
        console.print(_phase_table(rows[-1]))
    return rows


def bench_mlp(
    trials: list[int], peak: float, console: Console, depth_table: bool
) -> tuple[list[dict], list[dict]]:
    """Workload W (the bench preset): the sweep command cold and warm against the two plain
    loops and the cached loop, per trial count; then the engine alone by maximum depth."""
    rows, depth_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        for n in trials:
            rows += _against_loops(n, [f"study.n_trials={n}"], "bench", tmp, peak, console)
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
                fmt(r["engine_s"]),
                fmt(s["compile_s"]),
                str(s["executables"]),
                fmt(s["compile_wait_s"]),
            )
        console.print(t)
    return rows, depth_rows


def grid_trials(experiment: str = "bench_grid") -> int:
    """The trials of a ``study.design=grid`` preset's whole grid, before any extension: every
    combination of the space's lists at every point of its learning-rate range."""
    cfg = load_config([], experiment)
    space = Space.parse(cfg.space)
    lr = space.get("train.learning_rate")
    rates = grids.initial_rates(float(lr["low"]), float(lr["high"]), cfg.study.grid_per_decade)
    return len(rates) * math.prod(len(space.choices(key)) for key in space.lists())


def bench_grid(trials: list[int], peak: float, console: Console) -> list[dict]:
    """The grid workload (``conf/experiment/bench_grid.yaml``, the default study's design on W's
    data and schedule): the sweep command cold and warm against the two plain loops and the
    cached loop, which enqueue the same grid points (each with its learning rate). A count
    below the whole grid takes the points nearest the grid's middle first, as the sweep does."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        for n in trials:
            common = [f"study.n_trials={n}"]
            rows += _against_loops(n, common, "bench_grid", Path(tmp), peak, console)
    console.print(_speed_table(rows, "whole commands: engine vs plain loops (grid workload)"))
    console.print(_accounting_table(rows))
    return rows


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
                same_trials(engine, loop, cached)
                rows.append(_row(n, start, engine, {"loop": loop}, cached, peak))
                console.print(_speed_table(rows[-1:], f"residual workload: {n} trials, {start}"))
                console.print(_phase_table(rows[-1]))
    console.print(_speed_table(rows, "whole commands: engine vs the plain residual loop"))
    console.print(_accounting_table(rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,  # --scaling-starts and --device's flags pass through untouched
    )
    p.add_argument(
        "--trials",
        help="comma-separated trial counts (default 64,256; the grid workload: its whole grid, "
        "and no count above it)",
    )
    p.add_argument(
        "--with-1024", action="store_true", help="add 1024 trials (about 25 min more on 2 cores)"
    )
    p.add_argument("--no-depth-table", action="store_true")
    p.add_argument("--out", help="the JSON file (default runs/bench/latest.json)")
    p.add_argument(
        "--custom",
        action="store_true",
        help="only the sweep of your own module (conf/experiment/your_model.yaml) against a "
        "plain per-trial loop over the same module",
    )
    p.add_argument(
        "--workload",
        choices=["all", "mlp", "residual", "grid"],
        default="all",
        help="mlp: workload W (the bench preset); residual: residual MLPs against "
        "benchmarks.residual_loop; grid: the default study's design on W's data "
        "(conf/experiment/bench_grid.yaml); all: the three",
    )
    p.add_argument(
        "--scaling",
        nargs="?",
        const=scaling.COUNTS,
        metavar="N,N,...",
        help=f"only how cost grows: the engine on W at these trial counts (default {scaling.COUNTS}"
        "), a straight-line fit (benchmarks/scaling.py; its flags follow)",
    )
    p.add_argument(
        "--device",
        action="store_true",
        help="only the device script: W through the engine on whatever accelerator JAX sees, "
        "against a plain loop on the same device (benchmarks/device.py; its flags follow)",
    )
    args, rest = p.parse_known_args(argv)
    rest += ["--out", args.out] if args.out else []
    if args.device:
        return device.main(rest)
    if args.scaling:
        return scaling.main(["--counts", args.scaling, *rest])
    if args.custom:
        return bench_custom(Path(args.out or "runs/bench/latest.json").with_name("custom.json"))

    console = Console(width=max(Console().width, 190))
    trials = [int(n) for n in (args.trials or "64,256").split(",")]
    trials += [1024] if args.with_1024 else []
    peak = peak_in_child()
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
    grid = []
    if args.workload in ("all", "grid"):
        whole = grid_trials()
        counts = sorted({min(n, whole) for n in trials}) if args.trials else [whole]
        grid = bench_grid(counts, peak["peak_gflops"], console)
    loops_differ = statistics.median(r["loops_differ"] for r in rows) if rows else None
    path = Path(args.out or "runs/bench/latest.json")
    if args.workload in ("residual", "grid"):  # alone: leave the last full bench's file as it is
        path = path.with_name(f"{args.workload}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "peak": peak, "rows": rows, "depth_rows": depth_rows}
    document.update(residual=residual, grid=grid)
    path.write_text(json.dumps({**document, "loops_differ_median": loops_differ}, indent=2))
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
