"""``make bench ARGS="--scaling"``: how the sweep command's cost grows with the number of trials.

Workload W (``conf/experiment/bench.yaml``) through the whole sweep command at each trial count
(default 64, 256, 1024, 4096), each a process timed from launch to exit: **cold** in a fresh
``runs_dir``, then **warm** (a second study in the same ``runs_dir``: the executables in JAX's
persistent cache, the MLflow database there), as ``make bench`` measures them. The plain
independent loop (``benchmarks.independent_loop``, the faster plain loop at 256 trials) runs the
same trials only up to ``--loop-max`` trials (default 256: beyond it on 2 cores it takes hours).

Per series (engine cold, engine warm, loop) a least-squares line through its points,

    whole-command seconds = fixed_s + per_trial_s x trials,

gives the fixed part (start-up, compiles, stores: what a study pays however small) and the cost
of one more trial; the largest residual says how well a line describes the points. The same fit
is made of the sweep's training time alone. Results: ``runs/bench/scaling.json``.

    python -m benchmarks.scaling                                  # 64, 256, 1024, 4096
    python -m benchmarks.scaling --counts 16,32,64 --starts cold  # a quick check
    python -m benchmarks.scaling --counts 8,64 train.steps=20     # overrides go to every command
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.measure import fit_line, fmt, run_engine, run_loop, same_trials

COUNTS = "64,256,1024,4096"
LOOP = "benchmarks.independent_loop"


def measure(
    counts: list[int], starts: list[str], loop_max: int, overrides: list[str], console: Console
) -> list[dict]:
    """One point per (series, trial count): the whole command's seconds and, for the engine,
    the sweep's training seconds."""
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        tmp = Path(tmp)
        for n in counts:
            common = [*overrides, f"study.n_trials={n}"]
            engine = None
            for start in starts:  # warm: a second study where the cold one ran
                study = [f"study.name=scaling{n}-{start}"]
                engine = run_engine([*common, *study], tmp / f"engine-{n}")
                points.append(_point(f"engine {start}", n, engine, engine["sweep"]["train_s"]))
                _say(console, points[-1])
            if n <= loop_max:
                loop = run_loop(LOOP, common, tmp / f"loop-{n}")
                if engine is not None:
                    same_trials(engine, loop)
                train_s = loop["phases"]["trials (data, init, train)"]
                points.append(_point("independent loop", n, loop, train_s))
                _say(console, points[-1])
    return points


def _point(series: str, n: int, run: dict, train_s: float) -> dict:
    return {
        "series": series,
        "trials": n,
        "wall_s": run["wall_s"],
        "per_trial_s": run["wall_s"] / n,
        "train_s": train_s,
        "peak_rss_mb": run["peak_rss_mb"],
    }


def _say(console: Console, p: dict) -> None:
    console.print(
        f"{p['series']}, {p['trials']} trials: {p['wall_s']:.1f} s whole "
        f"({p['per_trial_s']:.3f} s per trial), {p['train_s']:.1f} s training"
    )


def fits(points: list[dict]) -> dict[str, dict]:
    """Per series, the line through its whole-command seconds and through its training seconds
    (for the loop: its trials phase, data and init included)."""
    out = {}
    for series in dict.fromkeys(p["series"] for p in points):
        mine = [p for p in points if p["series"] == series]
        trials = [p["trials"] for p in mine]
        out[series] = {
            "whole": fit_line(trials, [p["wall_s"] for p in mine]),
            "training": fit_line(trials, [p["train_s"] for p in mine]),
            "trials": trials,
        }
    return out


def _points_table(points: list[dict]) -> Table:
    t = Table(
        title="whole commands by trial count (workload W)",
        caption="training s: the sweep's training; for the loop, its trials (data, init, compile,"
        " train)",
    )
    cols = [
        ("series", "series", "s"), ("trials", "trials", "d"), ("whole command s", "wall_s", ".1f"),
        ("s per trial", "per_trial_s", ".3f"), ("training s", "train_s", ".1f"),
        ("peak RSS MB", "peak_rss_mb", ".0f"),
    ]  # fmt: skip
    for name, _, _ in cols:
        t.add_column(name, justify="left" if name == "series" else "right")
    for p in points:
        t.add_row(*(fmt(p[k], spec) for _, k, spec in cols))
    return t


def _fit_table(fitted: dict[str, dict]) -> Table:
    t = Table(title="least squares: seconds = fixed + per trial x trials")
    for name in (
        "series", "points (trials)", "fixed s", "per trial ms", "largest residual s",
        "training: fixed s", "training: per trial ms",
    ):  # fmt: skip
        t.add_column(name, justify="left" if name == "series" else "right")
    for series, f in fitted.items():
        whole, train = f["whole"], f["training"]
        ms = lambda v: None if v is None else 1000 * v  # noqa: E731
        t.add_row(
            series, ", ".join(map(str, f["trials"])), fmt(whole["fixed_s"]),
            fmt(ms(whole["per_trial_s"])), fmt(whole["max_residual_s"]),
            fmt(train["fixed_s"]), fmt(ms(train["per_trial_s"])),
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    p.add_argument("--counts", default=COUNTS, help=f"comma-separated trial counts ({COUNTS})")
    p.add_argument(
        "--starts", default="cold,warm", choices=["cold", "cold,warm"], help="engine starts"
    )
    p.add_argument("--loop-max", type=int, default=256, help="the plain loop up to these trials")
    p.add_argument("--out", default="runs/bench/latest.json", help="writes scaling.json beside")
    args, overrides = p.parse_known_args(argv)
    console = Console(width=max(Console().width, 150))
    counts = sorted({int(n) for n in args.counts.split(",")})
    points = measure(counts, args.starts.split(","), args.loop_max, overrides, console)
    fitted = fits(points)
    console.print(_points_table(points))
    console.print(_fit_table(fitted))
    path = Path(args.out).with_name("scaling.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "workload": "W (conf/experiment/bench.yaml)",
        "overrides": overrides,
        "fit": "seconds = fixed_s + per_trial_s * trials, least squares over the points",
        "points": points,
        "fits": fitted,
    }
    path.write_text(json.dumps(document, indent=2))
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
