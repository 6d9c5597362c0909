"""``make report STUDY=<name>``: one self-contained HTML page per study, to explore.

The page is drawn from the study storage alone, so it can be written at any time, for a study
that is still running or one a colleague ran, and mailed as one file. It leads with the answer
(``recommend.recommendations``): per network, which initialization at which learning rate and
how sure, each arm's numbers, the framework default beside it, and the LR x arm heatmap
(``heatmap``) that shows the evidence. The evidence follows: the single fastest trials, two
interactive figures (the per-layer gradient at initialization, and steps to target against gain
with theory's critical gain), and the static figures (``plots``) as inlined PNGs. Filters (each
network key the study varies, and the initializers) hide table rows and redraw the interactive
figures. Python computes every number (``trial_rows.layer_profiles``, ``cells.study_cells``)
into one JSON block; ``report_page.js`` only selects and draws, with Plotly's JavaScript inlined,
so nothing is fetched when the page opens.
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

from pipeline.reports import cells, plots, recommend, trial_rows
from pipeline.reports.heatmap import STAR
from pipeline.reports.report import COLUMNS, reached
from pipeline.search.study import ranked_trials, trial_spec
from pipeline.writing import write_text

# The per-layer traces a sweep stores at initialization (``metrics.compact_trace``): the key,
# what the figure's y axis says, what its x axis says.
QUANTITIES = (
    ("init_backprop_norm", "||dL/dh_l||, back-propagated signal", "layer (1 = input layer)"),
    ("init_grad_norm", "||dL/dW_l||, weight gradient", "layer (last = read-out)"),
    ("init_act_var", "activation variance", "layer (1 = input layer)"),
)
MAX_PANELS = 8  # interactive panels per figure; the filters reach the others

CAPTIONS = {
    "lr_heatmap.png": "Each cell estimates, for one arm at one learning rate tried, the median "
    "over the seeds of the steps to reach the target (one colour scale per network, fewer is "
    "better; grey 'never': the median seed did not reach it within the budget; hatched 'div': "
    "half or more of the seeds diverged; blank: not tried); the black box is the arm's basin "
    f"(every seed reached the target), the red box its best learning rate, {STAR} the "
    "recommended arms.",
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
table.answer { font-size: 0.9em; } table.answer tr.net th { background: #eef3f8; text-align: left;
  padding-top: 0.6em; } table.answer .summary { font-weight: normal; margin: 0.2em 0 0.1em; }
table.answer tr.rec td { font-weight: bold; } table.answer td.fails { color: #a33; }
table.answer tr.base td { color: #555; }
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
        row = trial_rows.trial_row(study, trial)
        m, spec, pred = row.metrics, row.config, trial_rows.prediction(row)
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


ANSWER_COLUMNS = (
    "arm",
    "best LR",
    f"steps [{recommend.LEVEL:.0%} CI]",
    f"×best [{recommend.LEVEL:.0%} CI]",
    "P(best)",
    "basin (LR)",
    "divergence LR",
)


def _steps_text(arm: dict) -> str:
    """``161 (102–176)``; ``≥301`` when only bounded (most seeds never got there)."""
    if arm["steps"] is None:
        return "-"
    if arm["steps_censored"]:
        return f"≥{arm['steps']:.0f}"
    ci = arm["steps_ci"]
    if not ci:
        return f"{arm['steps']:.0f}"
    lo, hi = ci
    return f"{arm['steps']:.0f} ({lo:.0f}–{'∞' if hi is None else f'{hi:.0f}'})"


def _ratio_text(value: float | None, ci: list | None, censored: bool) -> str:
    """``1.17× (1.04–1.36)``; ``≥4.2×`` for a lower bound."""
    if value is None:
        return "-"
    if censored:
        return f"≥{value:.3g}×"
    text = f"{value:.3g}×"
    if ci:
        lo, hi = ci
        text += f" ({'?' if lo is None else f'{lo:.3g}'}–{'∞' if hi is None else f'{hi:.3g}'})"
    return text


def _tried(lrs: list) -> str:
    return recommend.span_text([lrs[0], lrs[-1]]) if lrs else "-"


def _arm_row(arm: dict, recommended: list[str]) -> str:
    """One arm of the answer table: a failing arm says so across the columns it has no value
    for."""
    star = arm["arm"] in recommended
    name = html.escape(("★ " if star else "") + arm["arm"])
    divergence = html.escape(recommend.lr_text(arm["divergence_lr"]))
    head = f'<tr class="{"rec" if star else "arm"}"><td class="t">{name}</td>'
    if arm["fails"]:
        text = f"fails at every LR tried ({_tried(arm['lrs_tried'])})"
        fails = f'<td class="t fails" colspan="5">{html.escape(text)}</td>'
        return f"{head}{fails}<td>{divergence}</td></tr>"
    best = recommend.lr_text(arm["best_lr"])
    if arm["best_lr_at_edge"]:
        best += " (edge)"
    basin = recommend.span_text(arm["basin"])
    if arm["basin_decades"] is not None:
        basin += f" ({arm['basin_decades']:.2g} dec.)"
    cells = [
        best,
        _steps_text(arm),
        _ratio_text(arm["ratio_to_best"], arm["ratio_ci"], arm["ratio_censored"]),
        "-" if arm["p_best"] is None else f"{arm['p_best']:.2f}",
        basin,
    ]
    return (
        head + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{divergence}</td></tr>"
    )


def baseline_text(answer: dict) -> str:
    """The framework default as it ships, beside the recommendation, in one line."""
    base = answer["baseline"]
    arm = base.get("arm", "")
    name = (
        f"{recommend.who(arm)} ({arm}, gain 1, its own bias)" if recommend.who(arm) != arm else arm
    )
    if not base.get("measured", False):
        return f"Baseline {arm}: not measured (add it to space.init.weights)."
    if base["fails"]:
        return f"Baseline {name}: fails at every LR tried ({_tried(answer['lrs_tried'])})."
    steps = ("≥" if base["steps_censored"] else "") + f"{base['steps']:.0f}"
    text = f"Baseline {name}: {steps} steps at its own best LR {recommend.lr_text(base['best_lr'])}"
    if arm in answer["recommended"]:
        return text + ", among the ties."
    if base["ratio_own_lr"] is None:
        return text + " (nothing recommended to compare it with)."
    lead = next(a for a in answer["arms"] if a["arm"] == answer["recommended"][0])
    text += (
        ", "
        + _ratio_text(base["ratio_own_lr"], base["ratio_own_lr_ci"], base["ratio_own_lr_censored"])
        + f" the steps of {lead['arm']}"
    )
    same_lr = base["best_lr"] == lead["best_lr"]  # then the two ratios are one
    if base["ratio_at_recommended_lr"] is not None and not same_lr:
        ratio = _ratio_text(
            base["ratio_at_recommended_lr"],
            base["ratio_at_recommended_lr_ci"],
            base["ratio_at_recommended_lr_censored"],
        )
        text += f"; at {lead['arm']}'s best LR ({recommend.lr_text(lead['best_lr'])}): {ratio}"
    return text + "."


def _answer_section(document: dict, heatmap: Path | None) -> list[str]:
    """The answer first: per network its sentence, its arms, the baseline (one ``<tbody>`` of
    ``recommend-table`` each, hidden by the filters), then the LR x arm heatmap."""
    width = len(ANSWER_COLUMNS)
    bodies = []
    for answer in document["networks"]:
        title = (
            f"{answer['network']}: LR {_tried(answer['lrs_tried'])} tried, "
            f"{answer['seeds']} seeds, {answer['budget']} steps"
        )
        rows = [
            f'<tr class="net"><th class="t" colspan="{width}">{html.escape(title)}'
            f'<div class="summary">{html.escape(answer["summary"])}</div></th></tr>',
            *(_arm_row(arm, answer["recommended"]) for arm in answer["arms"]),
            f'<tr class="base"><td class="t note" colspan="{width}">'
            f"{html.escape(baseline_text(answer))}</td></tr>",
            *(
                f'<tr class="base"><td class="t note" colspan="{width}">note: '
                f"{html.escape(note)}</td></tr>"
                for note in answer["notes"]
            ),
        ]
        bodies.append(f"<tbody>{''.join(rows)}</tbody>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ANSWER_COLUMNS)
    baseline = document["baseline"]
    design = (
        "was trained at every learning rate of a shared grid with the same seeds,"
        if document["design"] == "grid"
        else "was trained at the learning rates its search drew (not one shared grid: arms "
        "were not tried at the same points),"
    )
    parts = [
        "<h2>The answer: which initialization per network</h2>",
        f"<p>Each arm (an initializer as defined: gain 1, a framework default with its own bias) "
        f"{design} and is judged at its own best learning rate. steps: the median over the "
        "seeds of the steps to target "
        f"there, {document['level']:.0%} bootstrap interval (the best LR re-selected in every "
        "replicate); ×best: its ratio to the fastest arm; P(best): how often it is the fastest "
        "in the bootstrap; basin: the learning rates where every seed reached the target; "
        "divergence LR: the smallest at which half the seeds diverged; ≥: a lower bound (most "
        f"seeds never got there); (edge): the best LR is the edge of those tried. ★ recommended: "
        f"the arms that tie with the best (inside the noise or within "
        f"{document['tie_margin']:.0%}), the widest basin first. Baseline: "
        f"{html.escape(baseline)} as it ships, at its own best learning rate. "
        '<span class="note" id="recommend-count"></span></p>',
        f'<table id="recommend-table" class="answer"><thead><tr>{head}</tr></thead>'
        f"{''.join(bodies)}</table>",
    ]
    if heatmap is not None:
        png = base64.b64encode(heatmap.read_bytes()).decode()
        parts.append(
            f'<figure id="lr-heatmap"><img alt="{heatmap.stem}" '
            f'src="data:image/png;base64,{png}"><figcaption>'
            f"{html.escape(CAPTIONS[heatmap.name])} Not filtered.</figcaption></figure>"
        )
    return parts


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


def _points(trials: list[cells.Trial]) -> dict:
    """Steps to target against gain and learning rate, per initializer: each trial's median
    over its seeds and their range; theory's critical gain per initializer."""
    groups: dict[str, list[cells.Trial]] = {}
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
        name: cells.critical_gain(min(ts, key=lambda t: t.median)) for name, ts in groups.items()
    }
    return {"points": points, "critical_gain": critical}


def _page_data(study: optuna.Study, ranked: list, answers: list[dict], top_k: int) -> dict:
    """Everything the filters and figures read: the networks (their key values, per-layer
    profiles, steps-against-gain points), and which network and initializer each table row is
    (``recommend``: the network of each of the answer's networks, one ``<tbody>`` each)."""
    specs = [trial_spec(study, t) for t in ranked]
    rows = trial_rows.study_rows(study)
    keys = trial_rows.network_keys(specs or [r.config for r in rows])
    nets: dict[str, dict] = {}

    def network(values: dict) -> dict:
        label = cells.network_label(values)
        return nets.setdefault(
            label, {"label": label, "values": values, "profiles": {}, "points": {}}
        )

    for members in trial_rows.networks(rows, keys).values():
        net = network({k: members[0].config[k] for k in keys})
        net["depth"] = int(members[0].config["model.depth"])
        net["steps"] = max(r.config.train.steps for r in members)
        net["profiles"] = {
            key: {name: p._asdict() for name, p in trial_rows.layer_profiles(members, key).items()}
            for key, _, _ in QUANTITIES
        }
    for cell, trials in cells.study_cells(study).items():
        net = network(dict(cell))
        net.update(_points(trials))
        net.setdefault("steps", max(t.steps for t in trials))
    for answer in answers:  # the answer's networks: there already, unless a study is odd
        network({k: answer["keys"][k] for k in keys if k in answer["keys"]})
    order = list(nets)
    index = {label: i for i, label in enumerate(order)}
    varying = [k for k in keys if len({str(n["values"].get(k)) for n in nets.values()}) > 1]
    groups = sorted(
        {cells.group_name(s.init.weights) for s in specs}
        | {cells.group_name(r.config.init.weights) for r in rows}
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
                    index[cells.network_label({k: s[k] for k in keys})],
                    cells.group_name(s.init.weights),
                ]
                for s in specs
            ],
            "recommend": [
                index[cells.network_label({k: a["keys"][k] for k in keys if k in a["keys"]})]
                for a in answers
            ],
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
<h3>The gradient at initialization, per layer</h3>
<p>One line per initializer: the median over its trials on the network (each trial's profile is
the median over its seeds) and the 25-75% band over those trials (their gains differ).
Vanishing gradients fall towards the input layer, exploding ones rise. Show
<select id="quantity"></select> <span class="note" id="profile-count"></span></p>
<div class="panels" id="profile-panels"></div>
<h3>Steps to target against gain</h3>
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
    document = recommend.recommendations(study, baseline) if ranked else None
    answers = document["networks"] if document else []
    data = _page_data(study, ranked, answers, top_k)
    figures = plots.sweep_plots(study, out_dir, answer=document)
    heatmap = next((p for p in figures if p.name == "lr_heatmap.png"), None)
    parts = [
        f"<h1>Initialization study <code>{html.escape(study.study_name)}</code></h1>",
        f"<p>{sum(states.values())} trials ("
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f"); objective: steps to reach training loss {goal} (lower is faster). "
        f"Written {datetime.now():%Y-%m-%d %H:%M}. The filters below hide table rows and "
        "redraw the figures.</p>",
        '<div id="filters"></div>',
        *(_answer_section(document, heatmap) if document else ["<p>No completed trial yet.</p>"]),
        "<h2>The evidence</h2>",
        "<h3>Single fastest trials (for reference: the answer above compares arms at their "
        "tuned learning rate)</h3>",
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
        FIGURES_HTML,
        "<h3>Figures of the whole study</h3>",
        "<p class='note'>Not filtered: one panel per network (or activation) where they "
        "differ.</p>",
    ]
    for path in figures:
        if path == heatmap:  # in the answer
            continue
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
    return write_text(out_dir / "report.html", page)  # whole: a failed write keeps the old page
