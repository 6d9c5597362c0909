"""``make report STUDY=<name>``: one self-contained HTML page per study, to explore.

The page is drawn from the study storage alone, so it can be written at any time, for a study
that is still running or one a colleague ran, and mailed as one file. Filters (each network key
the study varies, and the initializers) hide table rows and redraw two interactive figures, one
per question: the per-layer gradient at initialization, and steps to target against gain with
theory's critical gain. Python computes every number (``plots.layer_profiles``,
``recommend.study_cells``) into one JSON block; ``report_page.js`` only selects and draws, with
Plotly's JavaScript inlined, so nothing is fetched when the page opens. The static figures
(``plots``) follow as inlined PNGs.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path

import optuna

from pipeline.core import theory
from pipeline.search.study import ranked_trials, trial_spec
from pipeline.tracking import plots, recommend
from pipeline.tracking.report import COLUMNS, family_verdicts, reached

# The per-layer traces a sweep stores at initialization (``metrics.compact_trace``): the key,
# what the figure's y axis says, what its x axis says.
QUANTITIES = (
    ("init_backprop_norm", "||dL/dh_l||, back-propagated signal", "layer (1 = input layer)"),
    ("init_grad_norm", "||dL/dW_l||, weight gradient", "layer (last = read-out)"),
    ("init_act_var", "activation variance", "layer (1 = input layer)"),
)
MAX_PANELS = 8  # interactive panels per figure; the filters reach the others

CAPTIONS = {
    "depth_x_sigma_w2.png": "Steps to target over hidden depth and weight variance "
    "sigma_w^2 = fan_in x Var(W), per activation. The red dashed line is the mean-field "
    "prediction 6 xi_c of the deepest trainable network (Schoenholz et al. 2017).",
    "layer_gradients_at_init.png": "The back-propagated signal ||dL/dh_l|| at initialization "
    "per network: the median over each initializer's trials and its 25-75% band reveal "
    "vanishing and exploding gradients. What is exactly zero is said in words. The "
    "interactive figure above also shows the weight gradient ||dL/dW_l||, which can stay "
    "level even then.",
    "layer_variance_at_init.png": "The forward signal: the variance of each layer's "
    "activations at initialization, per network.",
    "loss_curves_by_init.png": "Training loss per network: each trial faint, the median "
    "curve of each initializer's trials bold.",
    "steps_vs_depth.png": "Median steps to target against depth, one line per initializer, "
    "one panel per activation.",
    "explosions_vs_gain.png": "Steps whose gradient norm exploded (or was NaN/Inf), against "
    "init.gain, per network.",
    "theory_vs_measurement.png": "Before training, theory predicts chi1, the per-layer gain of "
    "the gradient's squared norm, for plain networks; for residual networks and transformers, "
    "the residual stream's variance ratio and the attention logits' std. Each point is a "
    "trial's measurement at init against its prediction.",
    "param_importances.png": "Optuna's parameter importances (fANOVA) for the objective.",
    "parallel_coordinates.png": "Optuna's parallel coordinates: each line a trial, coloured "
    "by its objective.",
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1240px; margin: 0 auto 2em; padding: 0 1em;
  color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f3f3f3; } td.t { text-align: left; }
figure { margin: 2em 0; } img { max-width: 100%; } figcaption, .note { color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
#filters { position: sticky; top: 0; z-index: 10; background: #fafafa; border-bottom: 1px solid
  #ddd; padding: 0.6em 0.4em; display: flex; flex-wrap: wrap; gap: 0.6em 1.4em; }
#filters label { white-space: nowrap; } .inits label { margin-left: 0.6em; }
.panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
  gap: 0.5em 1em; }
.panel { min-height: 340px; }
"""


def _table(header: list[str], rows: list[list], table_id: str, shown: int | None = None) -> str:
    """A table whose rows beyond the first ``shown`` start hidden (the filters show them)."""

    def cell(v) -> str:
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        cls = "" if isinstance(v, int | float) else ' class="t"'
        return f"<td{cls}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ("<tr>" if shown is None or i < shown else "<tr hidden>")
        + "".join(cell(v) for v in r)
        + "</tr>"
        for i, r in enumerate(rows)
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _best_rows(study: optuna.Study, ranked: list) -> list[list]:
    rows = []
    for rank, trial in enumerate(ranked):
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


def _recommendation_section(
    study: optuna.Study, baseline: str, rows: list[dict] | None = None
) -> list[str]:
    """Which initializer per network, how sure, and the framework default beside it."""
    rows = recommend.recommendations(study, baseline) if rows is None else rows
    return [
        f"<h2>Which initialization per network (baseline {html.escape(baseline)})</h2>",
        f"<p>Median steps to target over every seed of each initializer's trials; "
        f"{recommend.LEVEL:.0%} bootstrap interval of the runner-up's median minus the "
        f"recommendation's (trials, then seeds, resampled); no recommendation with fewer than "
        f"{recommend.MIN_TRIALS} trials of either. "
        '<span class="note" id="recommend-count"></span></p>',
        _table(
            [*recommend.COLUMNS, "verdict"],
            [[*recommend.row_cells(r), r["note"]] for r in rows],
            "recommend-table",
        ),
    ]


def _number(v):
    """JSON for the page: 4 significant digits (the figures show 3), None for NaN and inf."""
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    v = float(v)
    return float(f"{v:.4g}") if math.isfinite(v) else None


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # a numpy array or scalar
        return _clean(obj.tolist())
    return _number(obj)


def _points(trials: list[recommend.Trial]) -> dict:
    """Steps to target against gain and learning rate, per initializer: each trial's median
    over its seeds and their range; theory's critical gain per initializer."""
    groups: dict[str, list[recommend.Trial]] = {}
    for t in trials:
        groups.setdefault(t.init, []).append(t)
    points = {
        name: {
            "gain": [t.gain for t in ts],
            "lr": [t.learning_rate for t in ts],
            "median": [t.median for t in ts],
            "low": [min(t.seed_steps) for t in ts],
            "high": [max(t.seed_steps) for t in ts],
        }
        for name, ts in sorted(groups.items())
    }
    critical = {
        name: recommend.critical_gain(min(ts, key=lambda t: t.median))
        for name, ts in groups.items()
    }
    return {"points": points, "critical_gain": critical}


def _page_data(study: optuna.Study, ranked: list, rec_rows: list[dict], top_k: int) -> dict:
    """Everything the filters and figures read: the networks (their key values, per-layer
    profiles, steps-against-gain points), and which network and initializer each table row is."""
    specs = [trial_spec(study, t) for t in ranked]
    rows = plots.study_rows(study)
    keys = plots.network_keys(specs or [r.config for r in rows])
    nets: dict[str, dict] = {}

    def network(values: dict) -> dict:
        label = recommend.network_label(values)
        return nets.setdefault(
            label, {"label": label, "values": values, "profiles": {}, "points": {}}
        )

    for members in plots.networks(rows, keys).values():
        net = network({k: members[0].config[k] for k in keys})
        net["depth"] = int(members[0].config["model.depth"])
        net["steps"] = max(r.config.train.steps for r in members)
        net["profiles"] = {
            key: {name: p._asdict() for name, p in plots.layer_profiles(members, key).items()}
            for key, _, _ in QUANTITIES
        }
    for cell, trials in recommend.study_cells(study).items():
        net = network(dict(cell))
        net.update(_points(trials))
        net.setdefault("steps", max(t.steps for t in trials))
    order = list(nets)
    index = {label: i for i, label in enumerate(order)}
    varying = [k for k in keys if len({str(n["values"].get(k)) for n in nets.values()}) > 1]
    groups = sorted(
        {recommend.group_name(s.init.weights) for s in specs}
        | {recommend.group_name(r.config.init.weights) for r in rows}
    )
    return _clean(
        {
            "keys": [
                {
                    "key": k,
                    "label": k.split(".")[-1],
                    "values": sorted(
                        {v for n in nets.values() if (v := n["values"].get(k)) is not None}
                    ),
                }
                for k in varying
            ],
            "groups": groups,
            "quantities": [{"key": k, "label": y, "x_label": x} for k, y, x in QUANTITIES],
            "networks": [nets[label] for label in order],
            "best": [
                [
                    index[recommend.network_label({k: s[k] for k in keys})],
                    recommend.group_name(s.init.weights),
                ]
                for s in specs
            ],
            "recommend": [index[recommend.network_label(r["network"])] for r in rec_rows],
            "top_k": top_k,
            "max_panels": MAX_PANELS,
        }
    )


def _script_json(data: dict) -> str:
    """JSON that cannot close its <script> element early."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _plotly_gz() -> str:
    """Plotly's JavaScript bundle, gzip-compressed and base64-encoded (``report_page.js``
    inflates it in the browser)."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), 9, mtime=0)).decode()


FIGURES_HTML = """
<h2>The gradient at initialization, per layer</h2>
<p>One line per initializer: the median over its trials on the network (each trial's profile is
the median over its seeds) and the 25-75% band over those trials (their gains differ).
Vanishing gradients fall towards the input layer, exploding ones rise. Show
<select id="quantity"></select> <span class="note" id="profile-count"></span></p>
<div class="panels" id="profile-panels"></div>
<h2>Steps to target against gain</h2>
<p>Each point is a trial: the median over its seeds and their range. The dashed vertical line of
each initializer is the gain at which mean-field theory puts it at the edge of chaos
(chi1 = 1; Poole et al. 2016, Schoenholz et al. 2017), for the network's activation and that
initializer's bias. x axis <select id="x-axis"><option value="gain">init.gain</option>
<option value="lr">train.learning_rate</option></select>
<span class="note" id="steps-count"></span></p>
<div class="panels" id="steps-panels"></div>
"""


def write_report(
    study: optuna.Study, out_dir: Path, top_k: int = 10, baseline: str = "torch_default"
) -> Path:
    """Draw the figures and write ``out_dir/report.html``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = ranked_trials(study)
    specs = [trial_spec(study, t) for t in ranked]
    targets = sorted({(s.train.target_loss, s.train.steps) for s in specs})
    goal = " or ".join(f"{loss:g} within {steps} steps" for loss, steps in targets) or "?"
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    rec_rows = recommend.recommendations(study, baseline) if ranked else []
    data = _page_data(study, ranked, rec_rows, top_k)
    figures = plots.sweep_plots(study, out_dir)
    parts = [
        f"<h1>Initialization study <code>{html.escape(study.study_name)}</code></h1>",
        f"<p>{sum(states.values())} trials ("
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f"); objective: steps to reach training loss {goal} (lower is faster). "
        f"Written {datetime.now():%Y-%m-%d %H:%M}. The filters below hide table rows and "
        "redraw the figures.</p>",
        '<div id="filters"></div>',
        "<h2>Best configurations</h2>",
        '<p class="note" id="best-count"></p>',
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
            _best_rows(study, ranked),
            "best-table",
            shown=top_k,
        ),
        *_recommendation_section(study, baseline, rec_rows),
        FIGURES_HTML,
        "<h2>Verdict per initializer family, pooled over every network</h2>",
        "<p class='note'>Not filtered: the table above answers per network.</p>",
        "<pre>" + html.escape("\n".join(family_verdicts(study))) + "</pre>",
        "<h2>Figures of the whole study</h2>",
        "<p class='note'>Not filtered: one panel per network (or activation) where they "
        "differ.</p>",
    ]
    for path in figures:
        png = base64.b64encode(path.read_bytes()).decode()
        caption = html.escape(CAPTIONS.get(path.name, path.stem))
        parts.append(
            f'<figure><img alt="{path.stem}" src="data:image/png;base64,{png}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    script = (Path(__file__).with_name("report_page.js")).read_text()
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(study.study_name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}"
        f'<script type="application/json" id="report-data">{_script_json(data)}</script>'
        f'<script type="application/octet-stream" id="plotly-gz">{_plotly_gz()}</script>'
        f"<script>{script}</script></body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path
