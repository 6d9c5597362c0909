"""Command line: ``python -m pipeline <command> [key=value ...]``, one function per command.

Only parsing and calling lives here. Bad input (a key, a value, a port, a study, a folder that
cannot be written) prints one ``error:`` line and exits with 2 before anything is created; Ctrl-C
prints one line that says what was kept and exits with 130. Files are written whole or not at
all; a server (``ui``) runs as a child process that Ctrl-C stops quietly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from pipeline import serving, writing
from pipeline.config import (
    SCHEMA,
    SEARCHABLE_KEYS,
    ConfigError,
    Space,
    load_config,
    load_with_space,
    markdown_table,
    read_yaml,
    redacted,
)

EXIT_BAD_INPUT = 2
EXIT_STALLED = 3  # a compiled call stalled (engine.stall_timeout_s); what it trained is saved
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
# What Ctrl-C leaves, per command: the one line printed before exiting with 130.
INTERRUPTED = {
    "sweep": "interrupted: finished trials are saved; rerun the same command to continue",
    "train": "interrupted: nothing was written; rerun the same command to train it",
    "best": "interrupted: no best-config file was written (an earlier one is unchanged)",
    "report": "interrupted: no report was written (an earlier one is unchanged)",
    "recommend": "interrupted: nothing was written",
    "coord-check": "interrupted: no figure was written (an earlier one is unchanged)",
    "transfer": "interrupted: no figure was written (earlier ones are unchanged)",
    "ui": "stopped the MLflow UI",
    "dashboard": "stopped optuna-dashboard",
    "keys": "interrupted",
}
DESCRIPTION = (
    "Sweep weight initialization with JAX, Optuna and MLflow, then reuse the winners. Every "
    "command takes key=value overrides (`python -m pipeline keys` lists them)."
)


def _parser() -> argparse.ArgumentParser:
    prog = "initsweep" if Path(sys.argv[0]).name == "initsweep" else "python -m pipeline"
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")
    s = sub.add_parser("sweep", help="run (or continue) a study")
    s.add_argument("--experiment", help="preset from conf/experiment/")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue the stored study as it was asked (its stored settings win)",
    )
    s.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by --workers for each
    s.add_argument("--parent-run", help=argparse.SUPPRESS)  # the launcher's MLflow run
    t = sub.add_parser("train", help="train one configuration and print its metrics")
    t.add_argument("--config", help="a best-config file (conf/best/<study>.yaml)")
    t.add_argument("--rank", type=int, default=0, help="which config of --config (0 = best)")
    t.add_argument("--json", action="store_true", help="print metrics as JSON")
    t.add_argument("--experiment", help="preset from conf/experiment/")
    b = sub.add_parser(
        "best", help="write the answer (then the top trials) to conf/best/<study>.yaml"
    )
    b.add_argument("--top", type=int, help="how many top trials after the answer (study.top_k)")
    b.add_argument("--out", help="output file (default conf/best/<study>.yaml)")
    b.add_argument(
        "--format",
        choices=("table", "flax", "keras", "torch"),
        default="table",
        help="print the table (default) or a ready-to-paste initializer snippet per config",
    )
    u = sub.add_parser("ui", help="serve the MLflow UI on the study's store")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--print-url", action="store_true", help="print the runs-table address and exit")
    d = sub.add_parser("dashboard", help="serve optuna-dashboard on the study's storage")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    r = sub.add_parser("report", help="write runs/<study>/report.html, filterable")
    r.add_argument("--top", type=int, help="rows of the best-config table (default 10)")
    c = sub.add_parser("recommend", help="which initializer per network, and how sure")
    c.add_argument("--json", action="store_true", help="print the answer as JSON (the contract)")
    m = sub.add_parser(
        "coord-check", help="mean |coordinate| per layer against width, steps 0..3 (docs/mup.md)"
    )
    m.add_argument("--experiment", help="preset from conf/experiment/")
    m.add_argument("--json", action="store_true", help="print the log-log slopes as JSON")
    m.add_argument(
        "--widths",
        default="64,128,256,512,1024,2048",
        help="comma-separated widths (default 64,...,2048)",
    )
    m.add_argument("--seeds", type=int, default=3, help="seeds per width (default 3)")
    m.add_argument("--steps", type=int, default=3, help="training steps recorded (default 3)")
    m.add_argument("--batch", type=int, default=64, help="the recorded batch's size (default 64)")
    x = sub.add_parser(
        "transfer", help="does the proxy's best learning rate or init stay best? (docs/mup.md)"
    )
    x.add_argument("--json", action="store_true", help="print the tables as a JSON dict")
    k = sub.add_parser("keys", help="list every config key and what it accepts")
    k.add_argument("--markdown", action="store_true", help="as docs/configuration.md's table")
    return p


def run() -> None:
    """``python -m pipeline`` and the ``initsweep`` command: ``main``, then leave without the
    interpreter's teardown (JAX's backends, thread pools, module cleanup: 1.4 s of a sweep
    command on 2 cores); every store is written and closed by now."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's line was printed
        code = EXIT_INTERRUPTED
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # leaving: a late Ctrl-C changes nothing
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come before or after the options, as in Hydra.
    args, rest = parser.parse_known_args(argv)
    flags = [a for a in rest if a.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.overrides = rest
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 120  # logs and CI: keep tables readable
    try:
        return COMMANDS[args.command](args, console)
    except (ConfigError, LookupError) as e:
        console.print(f"[red]error:[/] {_printable(str(e))}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except OSError as e:  # what a command did not foresee; its writes say which file (_writing)
        where = f" ({e.filename})" if e.filename else ""
        message = f"[red]error:[/] {_printable(e.strerror or str(e))}{_printable(where)}"
        console.print(message, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        console.print(INTERRUPTED[args.command], highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except Exception as e:
        # Only a command that trained can raise StalledCall, and then the engine is imported:
        # importing it here would load JAX before a mistyped key is reported.
        timing = sys.modules.get("pipeline.engine.timing")
        if timing is None or not isinstance(e, timing.StalledCall):
            raise
        after = (
            "; the trials of that call failed and were re-enqueued, finished trials are saved: "
            "rerun the same command to continue"
            if args.command == "sweep"
            else ""
        )
        message = f"[red]error:[/] {_printable(str(e))}{after}"
        console.print(message, highlight=False, soft_wrap=True)
        # The stalled call's thread is still inside XLA: leave without waiting for it (an
        # interpreter shutdown would wait on the wedged runtime).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STALLED)


def _printable(text: str) -> str:
    """One line whatever the input held: control characters (newlines too) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_results(study, cfg, console: Console) -> None:
    """The end of a sweep: the answer per network (what `make recommend` prints)."""
    from pipeline.reports.answer_text import answer_text
    from pipeline.reports.recommend import recommendations

    document = recommendations(study, cfg.report.baseline, cfg.report.tie_margin)
    if document["networks"]:
        console.print(answer_text(document), highlight=False, markup=False, soft_wrap=True)


def cmd_sweep(args, console: Console) -> int:
    phases = {"command": time.time()}  # the interpreter started and imported the CLI
    cfg, space = load_with_space(args.overrides, args.experiment)  # the config alone: no JAX
    if args.workers < 1:
        raise ConfigError(f"--workers={args.workers} is invalid: expected an integer >= 1")
    if cfg.tracking.enabled and cfg.tracking.uri:  # before the heavy imports: fail in seconds
        from pipeline.tracking import check_reachable

        check_reachable(cfg.tracking.uri)
    from pipeline.engine.preflight import preflight
    from pipeline.search.study import check_question, resume_config

    cfg = preflight(cfg)  # the data, before anything is written
    if args.resume:
        cfg, ignored = resume_config(cfg, space)
        cfg = preflight(cfg)
        space = Space.parse(cfg.space)  # the stored question's
        if ignored and args.worker is None:
            console.print(
                f"resuming study {cfg.study.name!r} as it was asked; ignoring "
                + ", ".join(ignored),
                highlight=False,
                soft_wrap=True,
            )
    elif args.worker is None:  # a question with new settings never gets an old answer
        check_question(cfg, space)
    from pipeline.reports.figures import log_sweep_artifacts
    from pipeline.search.sweep import run_sweep

    phases["imports"] = time.time()
    if args.workers > 1:
        from pipeline.search.workers import launch

        code = launch(
            cfg,
            space,
            args.experiment,
            args.overrides,
            args.workers,
            console,
            args.resume,
            log_sweep_artifacts,
        )
        if code == 0:
            from pipeline.search.study import load_study

            _print_results(load_study(cfg), cfg, console)
        return code
    from pipeline.engine.devices import setup_jax

    setup_jax(cfg)  # the process's JAX set-up, here at the entry point only
    summary = run_sweep(
        cfg, args.experiment, console, args.parent_run, args.worker, space, log_sweep_artifacts
    )
    if args.worker is not None:
        console.print(f"worker {args.worker}: {summary.trials_run} trials")
        return 0
    _print_results(summary.study, cfg, console)
    phases = {**phases, **summary.phases, "results": time.time()}
    _write_timing(cfg, phases, summary)
    wall = max(summary.wall_s, 1e-9)
    console.print(
        f"{summary.trials_run} trials in {summary.wall_s:.1f} s: "
        f"compile {summary.compile_s:.1f} s, "
        f"training {summary.train_s:.1f} s; the sweep waited {summary.optuna_s:.1f} s "
        f"({100 * summary.optuna_s / wall:.1f}%) for Optuna and {summary.logging_wait_s:.1f} s "
        f"for MLflow, which took {summary.optuna_thread_s:.1f} s and {summary.logging_s:.1f} s "
        "on background threads"
    )
    if summary.parent_run_id:
        console.print("see it with `make ui`; reuse the winners with `make best`")
    return 0


def _write_timing(cfg, phases: dict[str, float], summary) -> None:
    """``runs/<study>/timing.json``: when each phase of this command ended (seconds since the
    epoch; ``started`` = the package's first import) and where the sweep's time went."""
    import pipeline

    spent = {
        k: v
        for k, v in vars(summary).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    out = Path(cfg.runs_dir) / cfg.study.name / "timing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started": pipeline.STARTED, "phases": phases, **spent}, indent=2))


def cmd_train(args, console: Console) -> int:
    from pipeline.config import Space, TrialSpec
    from pipeline.engine import Engine, check_fits
    from pipeline.engine.datasets import load_dataset
    from pipeline.engine.devices import setup_jax
    from pipeline.engine.preflight import preflight
    from pipeline.reuse.best import config_overrides, read_best

    layers = []
    if args.config:
        if Path(args.config).exists():
            read_yaml(Path(args.config))  # a one-line error for a file that is not YAML
        try:
            layers.append((config_overrides(read_best(args.config, args.rank)), args.config))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{args.config} is not a best-config file (write one with `make best`)"
            ) from None
    # One configuration: the overrides describe it, so the search space plays no part.
    cfg = load_config(args.overrides, args.experiment, layers)
    cfg.space = {}
    cfg = preflight(cfg)
    setup_jax(cfg)
    check_fits(cfg, Space())
    engine = Engine(cfg, load_dataset(cfg.data), Space())
    trial = TrialSpec.of_config(cfg)
    [result] = engine.run([trial])
    if result.diagnostics:  # what theory predicts beside what was measured, as a sweep logs it
        from pipeline.core.predict import trial_prediction

        result.theory = trial_prediction(trial)
    report = {
        **result.metrics,
        **result.theory,
        "seeds": result.seeds,
        "layer_grad_norm_init": [float(v) for v in result.layer_grad_norm_init],
        "config": trial.flat(),
    }
    if args.json:
        print(json.dumps(report, indent=2, default=float, allow_nan=True))
    else:
        for k, v in result.metrics.items():
            print(f"{k:>20}: {v:.6g}")
    return 0


def cmd_best(args, console: Console) -> int:
    from pipeline.reports.recommend import recommendations
    from pipeline.reports.report import answer_lines, best_table
    from pipeline.reuse.best import answer_trial, best_document, write_best
    from pipeline.search.study import load_study, ranked_trials, storage_spec
    from pipeline.tracking import Tracker, default_uri, find_trial_run, latest_parent

    cfg = load_config(args.overrides)
    study = load_study(cfg)
    top = args.top or cfg.study.top_k
    if not ranked_trials(study):
        raise LookupError(f"study {cfg.study.name!r} has no completed trial yet")
    # The answer first (`make recommend`): per network, its recommended arm at its best LR.
    answers = recommendations(study, cfg.report.baseline, cfg.report.tie_margin)
    picked = [answer_trial(n) for n in answers["networks"]]
    numbers = [p[1] for p in picked if p is not None]
    numbers += [t.number for t in ranked_trials(study)[:top] if t.number not in numbers]
    run_ids, parent, tracker = {}, None, None
    if cfg.tracking.enabled:
        tracker = Tracker(
            cfg.tracking.uri or default_uri(cfg.runs_dir), cfg.study.name, cfg.runs_dir
        )
        for number in numbers:
            run_ids[number] = find_trial_run(tracker.client, tracker.experiment_id, number)
        parent = latest_parent(tracker.client, tracker.experiment_id)
    document = best_document(
        study, top, run_ids, parent, redacted(storage_spec(cfg)), answers=answers
    )
    out = Path(args.out or f"conf/best/{cfg.study.name}.yaml")
    try:
        with writing.writing(out, "choose another file with --out"):
            path = write_best(document, out)
        if parent is not None:  # the file beside the sweep it came from
            tracker.attach_parent(parent)
            tracker.log_parent_artifact(path, "best")
    finally:
        if tracker is not None:
            tracker.close()
    configs = document["configs"]
    n_answers = sum(c["source"] == "recommendation" for c in configs)
    if args.format == "table":
        for line in answer_lines(document):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        console.print(best_table(study, top, first_rank=n_answers))
    else:
        from pipeline.reuse.export import snippet
        from pipeline.tracking import run_name

        for entry in configs:
            flat = {f"{s}.{k}": v for s in ("model", "init") for k, v in entry[s].items()}
            steps = entry["measured"].get("steps_to_target", math.inf)
            limit = entry["train"]["steps"]
            reached = f"{steps:.0f} steps to target" if steps <= limit else "target not reached"
            what = ""
            if entry.get("answer"):
                a = entry["answer"]
                what = f"the answer for {a['network']} at LR {a['learning_rate']:.3g}; "
            title = (
                f"--- rank {entry['rank']}: {run_name(flat)} ({what}study {cfg.study.name}, "
                f"trial {entry['provenance']['trial']}, {reached}) ---"
            )
            try:
                print(snippet(entry, args.format, title), flush=True)
            except ValueError as e:  # e.g. LSUV: data-dependent, no framework equivalent
                print(f"{title}\n# {e}", flush=True)
    top_entry = (configs or [{}])[0]
    if top_entry.get("model", {}).get("kind") == "custom" or top_entry.get("init", {}).get("rules"):
        # a whole module, per parameter path (rules, a user's module): one call
        use = f"pipeline.init_params({str(path)!r}, module, jax.random.key(0), x)"
    else:
        use = f"pipeline.load_initializer({str(path)!r}, rank=0)"
    if top_entry.get("answer"):
        a = top_entry["answer"]
        rank0 = (
            f"rank 0 is the answer for {a['network']}: {a['arm']} at LR {a['learning_rate']:.3g}"
        )
    else:
        rank0 = "rank 0 is the fastest single trial (nothing recommended)"
    console.print(f"wrote {path}; {rank0}; use it with {use}", highlight=False, markup=False)
    return 0


def cmd_ui(args, console: Console) -> int:
    from pipeline.tracking import check_reachable, default_uri, experiment_id, runs_table_url

    cfg = load_config(args.overrides)
    serving.check_port(args.port)
    if not args.print_url:  # --print-url: the address of a server already running there
        serving.check_free(args.host, args.port, args.command)
    uri = cfg.tracking.uri or default_uri(cfg.runs_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise LookupError(f"no MLflow store at {uri}: run `make sweep` first")
    check_reachable(uri)
    found = experiment_id(uri, cfg.study.name)
    if found is None:
        studies = ", ".join(_mlflow_studies(uri)) or "none yet"
        raise LookupError(
            f"no study named {cfg.study.name!r} in the MLflow store {redacted(uri)} "
            f"(studies: {studies})"
        )
    url = runs_table_url(args.host, args.port, found)
    print(f"MLflow UI for study {cfg.study.name!r}: {url}", flush=True)
    if args.print_url:
        return 0
    mlflow = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "server", "--backend-store-uri", uri, "--host", args.host]
    command += ["--port", str(args.port)]
    return serving.serve(command, "the MLflow server", console, env=mlflow_server_env())


def mlflow_server_env() -> dict:
    """The environment of ``mlflow server``: without MLflow's job execution, unless the user
    turns it on. It starts huey consumers (Python processes that import MLflow, about 4 s of
    CPU per server here) for MLflow's GenAI jobs; the runs table needs none of them."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def _mlflow_studies(uri: str) -> list[str]:
    """The studies (experiments) an MLflow store holds, without MLflow's own Default."""
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri=uri).search_experiments()
    return sorted(e.name for e in experiments if e.name != "Default")


def cmd_dashboard(args, console: Console) -> int:
    from pipeline.search.study import load_study, make_storage, storage_spec

    cfg = load_config(args.overrides)
    serving.check_port(args.port)
    serving.check_free(args.host, args.port, args.command)
    load_study(cfg)  # a one-line error when the storage or the study is missing
    storage = make_storage(storage_spec(cfg))
    if isinstance(storage, str):  # a URL: optuna-dashboard wants a storage object or URL alike
        import optuna

        storage = optuna.storages.get_storage(storage)
    study_id = storage.get_study_id_from_name(cfg.study.name)
    url = f"http://{args.host}:{args.port}/dashboard/studies/{study_id}"
    print(f"optuna-dashboard for study {cfg.study.name!r}: {url}", flush=True)
    import optuna_dashboard

    # The WSGI app takes a storage object, so the journal file works as well as any URL; it is
    # served until Ctrl-C, which reaches this command as KeyboardInterrupt.
    app = optuna_dashboard.wsgi(storage)
    return serving.serve_wsgi(app, "optuna-dashboard", args.host, args.port, console)


def cmd_report(args, console: Console) -> int:
    from pipeline.reports.html_report import write_report
    from pipeline.search.study import load_study

    cfg = load_config(args.overrides)
    study = load_study(cfg)
    out_dir = Path(cfg.runs_dir) / cfg.study.name
    with writing.staged(out_dir, writing.ELSEWHERE) as stage:
        path = out_dir / write_report(study, stage, args.top or 10, cfg.report.baseline).name
    console.print(f"wrote {path} (one self-contained page: open it in any browser)")
    return 0


def cmd_recommend(args, console: Console) -> int:
    """Per network: the initializers to use, at which learning rate, and how sure."""
    from pipeline.reports.answer_text import answer_text
    from pipeline.reports.recommend import recommendations
    from pipeline.search.study import load_study

    cfg = load_config(args.overrides)
    document = recommendations(load_study(cfg), cfg.report.baseline, cfg.report.tie_margin)
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(answer_text(document), flush=True)
    return 0


def cmd_coord_check(args, console: Console) -> int:
    """Train one configuration at each width for a few steps; slopes, figure (docs/mup.md)."""
    from pipeline.config import TrialSpec
    from pipeline.engine.devices import setup_jax
    from pipeline.engine.preflight import preflight
    from pipeline.reports import coord_check

    try:
        widths = sorted({int(w) for w in args.widths.split(",")})
    except ValueError:
        raise ConfigError(
            f"--widths={args.widths} is invalid: expected comma-separated integers"
        ) from None
    if len(widths) < 2 or widths[0] < 1 or widths[-1] > 8192:
        raise ConfigError(f"--widths={args.widths}: expected at least 2 widths from 1 to 8192")
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--batch", args.batch)):
        if value < 1:
            raise ConfigError(f"{flag}={value} is invalid: expected an integer >= 1")
    cfg = load_config(args.overrides, args.experiment)
    cfg.space = {}
    cfg = preflight(cfg)
    setup_jax(cfg)
    trial = TrialSpec.of_config(cfg)
    data = coord_check.coord_data(cfg, [trial], widths, args.seeds, args.steps, args.batch)
    name = coord_check.figure_name(trial)
    path = Path(cfg.runs_dir) / "coord_check" / f"{name}.png"
    with writing.staged(path.parent, writing.ELSEWHERE) as stage:
        title = coord_check.title_of(trial, args.seeds, args.batch)
        coord_check.plot(data, 0, title, stage / path.name)
    out = {**coord_check.slopes_json(data), "figure": str(path)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"log-log slope of mean |x| against width ({name})")
    table.add_column("layer")
    for t in range(args.steps + 1):
        table.add_column(f"step {t}", justify="right")
    for layer, per_step in out["slopes"].items():
        cells = ["-" if v is None else f"{v:+.2f}" for v in per_step.values()]
        table.add_row(layer, *cells)
    console.print(table)
    console.print(f"wrote {path}")
    return 0


def cmd_transfer(args, console: Console) -> int:
    """Optimal learning rate per size, or rank correlation of inits, proxy against larger."""
    from pipeline.reports import transfer
    from pipeline.search.study import load_study

    cfg = load_config(args.overrides)
    study = load_study(cfg)
    result = transfer.analyse(study)
    out_dir = Path(cfg.runs_dir) / cfg.study.name
    with writing.staged(out_dir, writing.ELSEWHERE) as stage:
        paths = [out_dir / p.name for p in transfer.write_figures(study, result, stage)]
    if args.json:
        print(json.dumps({**result, "figures": [str(p) for p in paths]}, indent=2, default=str))
        return 0
    for line in transfer.summary_lines(result):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_keys(args, console: Console) -> int:
    """Every key from the schema: default, allowed values, role, what it does."""
    if args.markdown:
        print(markdown_table())
        return 0
    for key in SCHEMA.values():
        mark = " (searchable)" if key.name in SEARCHABLE_KEYS else ""
        print(f"{key.name} = {key.default!r}: {key.rule.expected}; {key.role}{mark}: {key.doc}")
    return 0


COMMANDS = {
    "sweep": cmd_sweep,
    "train": cmd_train,
    "best": cmd_best,
    "ui": cmd_ui,
    "dashboard": cmd_dashboard,
    "report": cmd_report,
    "recommend": cmd_recommend,
    "keys": cmd_keys,
    "coord-check": cmd_coord_check,
    "transfer": cmd_transfer,
}
