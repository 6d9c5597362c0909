"""The answer in a terminal: one block per network, every line at most 80 columns, no cell split
inside a token (a long arm name gets a line of its own). Full detail: ``recommend --json`` and
the HTML report."""

from __future__ import annotations

import textwrap

from pipeline.reports.recommend import lr_text, span_text

WIDTH = 80
ARM = 18  # an arm name longer than this gets its own line
HEADER = ("arm", "best LR", "steps [95% CI]", "×best [95% CI]", "P(best)", "basin")


def _steps(arm: dict) -> str:
    value = f"{'≥' if arm['steps_censored'] else ''}{arm['steps']:.0f}"
    ci = arm["steps_ci"]
    if not ci or arm["steps_censored"]:
        return value
    lo, hi = ci
    return f"{value} [{lo:.0f}–{'∞' if hi is None else f'{hi:.0f}'}]"


def _ratio(arm: dict) -> str:
    if arm["ratio_to_best"] is None:
        return "-"
    if arm["ratio_censored"]:
        return f"≥{arm['ratio_to_best']:.3g}"
    text = f"{arm['ratio_to_best']:.3g}"
    ci = arm["ratio_ci"]
    if ci:
        lo, hi = ci
        text += f" [{lo:.3g}–{'∞' if hi is None else f'{hi:.3g}'}]"
    return text


def _cells(arm: dict, recommended: set) -> tuple[str, ...]:
    name = ("* " if arm["arm"] in recommended else "  ") + arm["arm"]
    if arm["fails"]:
        return (name, "-", "fails at every LR tried")
    return (
        name,
        lr_text(arm["best_lr"]) + ("!" if arm["best_lr_at_edge"] else ""),
        _steps(arm),
        _ratio(arm),
        "-" if arm["p_best"] is None else f"{arm['p_best']:.2f}",
        span_text(arm["basin"]),
    )


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows in columns as wide as their widest cell; a name wider than ``ARM`` on a line of its
    own; the basin on a line of its own when a row would pass ``WIDTH``."""
    full = [r for r in rows if len(r) == len(HEADER)]
    widths = [min(ARM, max(len(r[0]) for r in rows))]
    widths += [max(len(r[i]) for r in full) for i in range(1, len(HEADER) - 1)]
    used = 2 + sum(widths) + len(widths)
    basin_apart = used + max(len(r[-1]) for r in full) > WIDTH

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.ljust(w) for c, w in zip(cells, widths)] + list(cells[len(widths) :])
        return ("  " + " ".join(parts)).rstrip()

    out = []
    for r in rows:
        shown = r[:-1] if basin_apart and len(r) == len(HEADER) else r
        if len(r[0]) > ARM:
            out.append("  " + r[0])
            shown = ("", *shown[1:])
        out.append(line(shown))
        if basin_apart and len(r) == len(HEADER) and r is not rows[0]:
            out.append(line(("", "basin " + r[-1])))
    return out


def network_lines(answer: dict) -> list[str]:
    """One network's block: a title, a row per arm, the sentence wrapped at 80 columns."""
    tried = answer["lrs_tried"]
    title = (
        f"{answer['network']}: LR {span_text([tried[0], tried[-1]]) if tried else '-'} tried, "
        f"{answer['seeds']} seeds, {answer['budget']} steps"
    )
    recommended = set(answer["recommended"])
    rows = [HEADER, *(_cells(arm, recommended) for arm in answer["arms"])]
    lines = [title, *_table(rows)]
    wrap = textwrap.TextWrapper(
        WIDTH,
        initial_indent="  ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    lines += wrap.wrap(answer["summary"])
    for note in answer["notes"]:
        lines += wrap.wrap("note: " + note)
    return lines


def answer_text(document: dict) -> str:
    """Every network's block, then the legend."""
    blocks = ["\n".join(network_lines(a)) for a in document["networks"]]
    legend = textwrap.wrap(
        f"* recommended (ties with the best, {document['tie_margin']:.0%} margin, widest basin "
        f"first); ! best LR at the edge of those tried; steps: median steps to target at the "
        f"arm's best LR, {document['level']:.0%} bootstrap interval re-selecting the LR; ×best: "
        f"ratio to the fastest arm; basin: LRs where every seed reached the target. Baseline: "
        f"{document['baseline']} at gain 1 with its own bias. recommend --json: every number.",
        WIDTH,
        break_long_words=False,
        break_on_hyphens=False,
    )
    title = f"which initialization, per network (study {document['study']})"
    return "\n\n".join([title, *blocks, "\n".join(legend)])
