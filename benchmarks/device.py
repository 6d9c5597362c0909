"""``make bench ARGS="--device"``: workload W on whatever accelerator JAX sees, beside a plain loop.

A short, prepared script for a machine we have not measured on (a GPU): each measurement a
whole process timed from launch to exit, as ``make bench`` takes them (``benchmarks.measure``).

1. **Peak**: a large float32 matrix multiply on JAX's first device (8192 x 8192 on an
   accelerator, 2048 on a CPU), at JAX's default precision (what training gets; TF32 on recent
   NVIDIA GPUs) and at ``precision=highest``. Measured in the same run, not taken from a table.
2. **Plain loops**: ``benchmarks.independent_loop`` (JAX without Flax or Optax) and
   ``benchmarks.baseline`` (Flax + Optax) on the first ``--loop-trials`` trials of W, on the
   same device. Their cost per trial (the mean over trials 2..k, so one-time costs such as the
   backend's start stay in the fixed part) gives ``fixed + per_trial x n``: **extrapolated from
   k trials** to each size, and labelled so in the table and the JSON.
3. **Engine**: ``python -m pipeline sweep --experiment bench`` at each size (default 256, 1024,
   4096), what a user waits for. The first size starts cold (empty ``runs_dir``); the later ones
   run in the same ``runs_dir`` and find its executables in JAX's persistent cache (``warm``;
   ``--cold-each``: a fresh ``runs_dir`` per size). Per size: the whole command and the
   training inside it (the sweep's ``timing.json``), trial-steps per second over each, useful
   FLOP/s (``pipeline.core.model.count_flops``, unpadded networks) over training against the
   peak, the fraction of the whole command spent outside training, and the speedup over the
   faster loop.

A size whose estimated time (the last size's whole command, scaled by trials) would pass
``--budget-s`` is skipped and said so; the JSON is written after every step (partial results
survive a limit). Results: ``runs/bench/device.json``.

    python -m benchmarks.device                                     # 256, 1024, 4096 trials
    python -m benchmarks.device --sizes 8,16 --steps 20 --loop-trials 4   # tiny, on a CPU
    python -m benchmarks.device study.batch_size=1024               # overrides: every command

On a GPU machine: ``pip install -e '.[cuda]'`` then ``make bench ARGS="--device"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.measure import fmt, peak_in_child, run_engine, run_loop
from pipeline.config import load_config

SIZES = "256,1024,4096"
LOOPS = {"independent loop": "benchmarks.independent_loop", "loop": "benchmarks.baseline"}


def loop_line(name: str, loop: dict, k: int) -> dict:
    """A plain loop's cost as ``fixed_s + per_trial_s x trials`` from its ``k`` trials: per trial
    the mean over trials 2..k (the first carries the backend's start and the data's transfer),
    fixed the rest of the whole command."""
    ends = loop["trial_ends"]
    per_trial = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
    if per_trial is None:  # one trial: all of its trials phase is per trial
        per_trial = loop["phases"]["trials (data, init, train)"] / k
    return {
        "loop": name,
        "trials_measured": k,
        "label": f"extrapolated from {k} trials",
        "wall_s": loop["wall_s"],
        "per_trial_s": per_trial,
        "fixed_s": max(loop["wall_s"] - per_trial * k, 0.0),
        "compile_s": loop["compile_s"],
        "params": loop["params"],
    }


def engine_row(n: int, start: str, engine: dict, peak: dict, loops: list[dict]) -> dict:
    """One size: the whole command and its training, rates, FLOP/s, time outside training, and
    the speedup over each loop extrapolated to ``n`` trials (over the faster one in ``speedup``)."""
    sweep, wall = engine["sweep"], engine["wall_s"]
    train_s = sweep["train_s"]
    gflops = engine["useful_flops"] / train_s / 1e9 if train_s > 0 else None
    loop_s = {
        line["loop"]: {
            "seconds": line["fixed_s"] + line["per_trial_s"] * n,
            "label": line["label"] if n > line["trials_measured"] else "measured",
        }
        for line in loops
    }
    fastest = min(loop_s, key=lambda k: loop_s[k]["seconds"]) if loop_s else None
    return {
        "trials": sweep["trials_run"],
        "start": start,
        "whole_s": wall,
        "train_s": train_s,
        "trials_phase_s": engine["phases"]["trials (ask, train, tell)"],
        "compile_wait_s": sweep["compile_wait_s"],
        "compile_s": sweep["compile_s"],
        "executables": sweep["executables"],
        "outside_training_fraction": min(max(1 - train_s / wall, 0.0), 1.0),
        "trial_steps": engine["trial_steps"],
        "trial_steps_per_s_training": engine["trial_steps"] / train_s if train_s > 0 else None,
        "trial_steps_per_s_whole": engine["trial_steps"] / wall,
        "useful_gflops_training": gflops,
        "useful_gflops_whole": engine["useful_flops"] / wall / 1e9,
        "peak_fraction": gflops / peak["peak_gflops"] if gflops is not None else None,
        "peak_rss_mb": engine["peak_rss_mb"],
        "phases": engine["phases"],
        "loops": loop_s,
        "fastest_loop": fastest,
        "speedup": loop_s[fastest]["seconds"] / wall if fastest else None,
        "speedup_label": loop_s[fastest]["label"] if fastest else None,
    }


def _engine_table(rows: list[dict], device: str) -> Table:
    t = Table(title=f"workload W on {device}: the sweep command (whole) and its training")
    cols = [
        ("trials", "trials", "d"), ("start", "start", "s"), ("whole s", "whole_s", ".1f"),
        ("training s", "train_s", ".2f"), ("outside training", "outside_training_fraction", ".0%"),
        ("trial-steps/s training", "trial_steps_per_s_training", ",.0f"),
        ("trial-steps/s whole", "trial_steps_per_s_whole", ",.0f"),
        ("GFLOP/s training", "useful_gflops_training", ",.1f"), ("of peak", "peak_fraction", ".1%"),
        ("compile wait s", "compile_wait_s", ".1f"), ("faster loop s", "loop_s", ".1f"),
        ("speedup", "speedup", ".1f"),
    ]  # fmt: skip
    for name, _, _ in cols:
        t.add_column(name, justify="right")
    labels = []
    for r in rows:
        loop = r["loops"].get(r["fastest_loop"]) or {}
        mark = ""
        if loop.get("label", "measured") != "measured":
            labels += [] if loop["label"] in labels else [loop["label"]]
            mark = "*" * (labels.index(loop["label"]) + 1)
        values = {**r, "loop_s": loop.get("seconds")}
        cells = [fmt(values.get(k), spec) for _, k, spec in cols]
        cells[-2] += mark if loop else ""
        t.add_row(*cells)
    t.caption = "; ".join(f"{'*' * (i + 1)} {label}" for i, label in enumerate(labels)) or None
    return t


def _loop_table(loops: list[dict], sizes: list[int]) -> Table:
    t = Table(title="plain per-trial loops on the same device: fixed + per trial x trials")
    for name in ("loop", "measured", "whole s", "fixed s", "per trial s", *map(str, sizes)):
        t.add_column(name if not name.isdigit() else f"{name} trials s", justify="right")
    for line in loops:
        at = [line["fixed_s"] + line["per_trial_s"] * n for n in sizes]
        t.add_row(
            line["loop"], line["label"], fmt(line["wall_s"]), fmt(line["fixed_s"]),
            fmt(line["per_trial_s"], ".3f"), *(fmt(s) for s in at),
        )  # fmt: skip
    return t


def _check_same_trials(loops: list[dict], engine: dict) -> None:
    """The loops trained the engine's first trials (the same seeded sampler)."""
    for line in loops:
        k = len(line["params"])
        if line["params"] != engine["params"][:k]:
            raise RuntimeError(f"the {line['loop']} did not train the engine's first {k} trials")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device", description=__doc__)
    p.add_argument("--sizes", default=SIZES, help=f"trial counts of W ({SIZES})")
    p.add_argument("--steps", type=int, help="train.steps (default: the bench preset's 300)")
    p.add_argument("--loop-trials", type=int, default=16, help="trials each plain loop runs")
    p.add_argument("--loops", default=",".join(LOOPS), help=f"of {', '.join(LOOPS)}; '' for none")
    p.add_argument("--matmul-size", type=int, help="n of the n x n peak matmul (auto)")
    p.add_argument("--budget-s", type=float, default=540, help="skip sizes that would pass it")
    p.add_argument("--cold-each", action="store_true", help="a fresh runs_dir for every size")
    p.add_argument("--out", default="runs/bench/latest.json", help="writes device.json beside")
    args, overrides = p.parse_known_args(argv)
    began = time.time()
    console = Console(width=max(Console().width, 200))
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    overrides = [*overrides, *([f"train.steps={args.steps}"] if args.steps else [])]
    cfg = load_config(overrides, "bench")
    peak = peak_in_child(args.matmul_size)
    device = f"{peak['device']} ({peak['platform']} x {peak['devices']}, JAX {peak['jax']})"
    console.print(
        f"device: {device}; float32 {peak['matmul_size']}² matmul: "
        f"{peak['peak_gflops']:,.0f} GFLOP/s at default precision, "
        f"{peak['peak_highest_gflops']:,.0f} at highest"
    )
    path = Path(args.out).with_name("device.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "device_kind": peak["device"],
        "device": device,
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "peak": peak,
        "peak_source": "measured in this run (a float32 matmul on the device)",
        "workload": "W (conf/experiment/bench.yaml)",
        "overrides": overrides,
        "steps": cfg.train.steps,
        "seeds": cfg.train.seeds,
        "sizes": sizes,
        "loops": [],
        "rows": [],
        "skipped": [],
    }
    save = lambda: path.write_text(json.dumps(document, indent=2))  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-device-") as tmp:
        tmp = Path(tmp)
        k = min(args.loop_trials, sizes[0])
        for name in filter(None, args.loops.split(",")):
            common = [*overrides, f"study.n_trials={k}"]
            loop = run_loop(LOOPS[name], common, tmp / f"loop-{name.replace(' ', '_')}")
            document["loops"].append(loop_line(name, loop, k))
            save()
        if document["loops"]:
            console.print(_loop_table(document["loops"], sizes))
        last = None
        for i, n in enumerate(sizes):
            estimate = last["whole_s"] * n / last["trials"] if last else 0.0
            if time.time() - began + estimate > args.budget_s:
                document["skipped"].append(
                    {"trials": n, "why": f"about {estimate:.0f} s would pass --budget-s"}
                )
                console.print(f"skipped {n} trials: {document['skipped'][-1]['why']}")
                continue
            runs_dir = tmp / (f"engine-{n}" if args.cold_each else "engine")
            start = "cold" if i == 0 or args.cold_each else "warm"
            study = [f"study.n_trials={n}", f"study.name=device{n}"]
            engine = run_engine([*overrides, *study], runs_dir)
            _check_same_trials(document["loops"], engine)
            last = engine_row(n, start, engine, peak, document["loops"])
            document["rows"].append(last)
            save()
            console.print(_engine_table([last], device))
    document["total_s"] = time.time() - began
    save()
    console.print(_engine_table(document["rows"], device))
    console.print(f"{document['total_s']:.0f} s in all; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
