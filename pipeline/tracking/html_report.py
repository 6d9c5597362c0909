"""``make report STUDY=<name>``: one self-contained HTML page per study (figures inlined).

The page is drawn from the study storage alone, so it can be written at any time, for a study
that is still running or one a colleague ran, and mailed as one file.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from datetime import datetime
from pathlib import Path

import optuna

from pipeline.core import theory
from pipeline.search.study import ranked_trials, trial_spec
from pipeline.tracking import plots
from pipeline.tracking.report import COLUMNS, family_verdicts, reached

CAPTIONS = {
    "loss_curves_by_init.png": "Training loss of every trial, one panel per initializer; the "
    "black line is the median curve.",
    "depth_x_sigma_w2.png": "Steps to target over hidden depth and weight variance "
    "sigma_w^2 = fan_in x Var(W), per activation. The red dashed line is the mean-field "
    "prediction 6 xi_c of the deepest trainable network (Schoenholz et al. 2017).",
    "layer_gradients_at_init.png": "Per-layer norms at initialization: the back-propagated "
    "signal ||dL/dh_l|| (solid) reveals vanishing and exploding gradients; the weight gradient "
    "||dL/dW_l|| (dotted) can stay level even then.",
    "explosions_vs_gain.png": "Steps whose gradient norm exploded (or was NaN/Inf), against "
    "init.gain.",
    "theory_vs_measurement.png": "Before training, theory predicts chi1, the per-layer gain of "
    "the gradient's squared norm; each point is a trial's measured per-layer ratio at init.",
    "param_importances.png": "Optuna's parameter importances (fANOVA) for the objective.",
    "parallel_coordinates.png": "Optuna's parallel coordinates: each line a trial, coloured "
    "by its objective.",
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.t { text-align: left; }
figure { margin: 2em 0; } img { max-width: 100%; } figcaption { color: #555; }
pre { background: #f7f7f7; padding: 0.8em; }
"""


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        cls = "" if isinstance(v, int | float) else ' class="t"'
        return f"<td{cls}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _best_rows(study: optuna.Study, top_k: int) -> list[list]:
    rows = []
    for rank, trial in enumerate(ranked_trials(study)[:top_k]):
        m = trial.user_attrs.get("metrics", {})
        spec = trial_spec(study, trial)
        pred = theory.trial_prediction(spec)
        hit = reached(m, spec.train.steps)
        rows.append(
            [
                rank,
                trial.number,
                f"{hit:.0f}" if hit < math.inf else "never",
                m.get("explosion_count", math.nan),
                m.get("final_val_accuracy", math.nan),
                *(spec[k] for k in COLUMNS),
                pred.get("theory.chi1", math.nan),
                pred.get("theory.max_trainable_depth", math.nan),
                m.get("diag.init.backprop_ratio", math.nan),
            ]
        )
    return rows


def _recommendation_section(study: optuna.Study, baseline: str) -> list[str]:
    """Which initializer per network, how sure, and the framework default beside it."""
    from pipeline.tracking import recommend

    rows = recommend.recommendations(study, baseline)
    return [
        f"<h2>Which initialization per network (baseline {html.escape(baseline)})</h2>",
        f"<p>Median steps to target over every seed of each initializer's trials; "
        f"{recommend.LEVEL:.0%} bootstrap interval of the runner-up's median minus the "
        f"recommendation's (trials, then seeds, resampled); no recommendation with fewer than "
        f"{recommend.MIN_TRIALS} trials of either.</p>",
        _table(
            [*recommend.COLUMNS, "verdict"], [[*recommend.row_cells(r), r["note"]] for r in rows]
        ),
    ]


def write_report(
    study: optuna.Study, out_dir: Path, top_k: int = 10, baseline: str = "torch_default"
) -> Path:
    """Draw the figures and write ``out_dir/report.html``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [trial_spec(study, t) for t in ranked_trials(study)]
    targets = sorted({(s.train.target_loss, s.train.steps) for s in specs})
    goal = " or ".join(f"{loss:g} within {steps} steps" for loss, steps in targets) or "?"
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    figures = plots.sweep_plots(study, out_dir)
    parts = [
        f"<h1>Initialization study <code>{html.escape(study.study_name)}</code></h1>",
        f"<p>{sum(states.values())} trials ("
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f"); objective: steps to reach training loss {goal} (lower is faster). "
        f"Written {datetime.now():%Y-%m-%d %H:%M}.</p>",
        "<h2>Best configurations</h2>",
        _table(
            [
                "rank",
                "trial",
                "steps to target",
                "explosions",
                "val acc",
                *COLUMNS.values(),
                "theory chi1",
                "theory 6 xi_c",
                "measured dL/dh first/last",
            ],
            _best_rows(study, top_k),
        ),
        "<h2>Verdict per initializer family</h2>",
        "<pre>" + html.escape("\n".join(family_verdicts(study))) + "</pre>",
        *_recommendation_section(study, baseline),
        "<h2>Figures</h2>",
    ]
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        caption = html.escape(CAPTIONS.get(path.name, path.stem))
        parts.append(
            f'<figure><img alt="{path.stem}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{study.study_name}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path
