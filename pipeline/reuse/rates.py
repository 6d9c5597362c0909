"""init.parametrization's learning-rate and weight-decay multipliers as a table of
parameter-path globs (``rate_table``), read from the engine (``pipeline.engine.rows
.leaf_multipliers`` on the built-in network); ``pipeline.reuse.optimizers`` builds and prints
the optimizers from it, and ``make best`` stores it (``lr_multipliers``).
"""

from __future__ import annotations

import fnmatch
from typing import NamedTuple

from pipeline.reuse.resolve import trial_of

# --- init.parametrization's learning rates and weight decay as optimizer code ------------------
#
# The multipliers are the engine's own: ``pipeline.engine.rows.leaf_multipliers`` on the
# built-in network's layout (roles from shapes at the base width and twice the width, as the
# engine infers them), written as a table of parameter-path globs so that a PyTorch module named
# like the built-in network (``torch_param_path``) reads the same rows.


class LeafRate(NamedTuple):
    """One row of a parametrization's table: the parameters whose path matches ``glob`` train
    at train.learning_rate x ``lr`` with L2 weight decay train.weight_decay x ``decay``."""

    glob: str
    lr: float
    decay: float


def _builtin_view(trial):
    """(layout, structure) of a trial's built-in network. The data's sizes stand in as 16
    features (a 4x4 image for the CNN), 2 classes and 8 tokens: they do not change with the
    width, so no role or multiplier depends on them."""
    from pipeline.core.model import BUILTIN_KINDS, Structure
    from pipeline.engine.factory import net_for

    kind = trial["model.kind"]
    if kind not in BUILTIN_KINDS:
        raise ValueError(
            f"model.kind={kind}: the per-layer rates of a user's module are not exported "
            f"(built-in kinds: {', '.join(BUILTIN_KINDS)}); train it with the engine"
        )
    transformer = kind == "transformer"
    structure = Structure(
        trial["model.activation"], trial["model.depth"], trial["model.width"], 16, 2, kind,
        None, trial["model.norm"], trial["model.heads"] if transformer else 1,
        8 if transformer else 0,
    )  # fmt: skip
    return net_for(structure).layout, structure


def row_for(rows: list[LeafRate], path: str) -> LeafRate:
    for row in rows:
        if fnmatch.fnmatchcase(path, row.glob):
            return row
    raise ValueError(
        f"no row of the rate table matches parameter {path!r} (globs: "
        f"{', '.join(r.glob for r in rows)}): name the layers as the built-in network does"
    )


def rate_table(cfg) -> list[LeafRate]:
    """The learning-rate and weight-decay multipliers of ``init.parametrization`` for the
    config's built-in network, one row per parameter-path glob, first match wins.

    A parameter of a stacked layer (``hidden/dense/kernel``: the scanned hidden layers) gets the
    glob ``hidden/*kernel``, which also matches one module per layer (``hidden/0/kernel``,
    PyTorch's ``hidden.0.weight``); leaves whose short globs coincide but whose rates differ keep
    a longer one (``blocks*/norm/bias``). ``sp``: one row, ``*``, at 1.

    >>> rate_table({"init": {"parametrization": "mup"}, "model": {"width": 256,
    ...     "base_width": 64, "depth": 2}, "train": {"optimizer": "adam"}})
    [LeafRate(glob='input/bias', lr=1.0, decay=1.0), ...,
     LeafRate(glob='hidden/*kernel', lr=0.25, decay=4.0), ...,
     LeafRate(glob='output/kernel', lr=0.25, decay=16.0)]
    """
    from pipeline.engine.rows import leaf_multipliers

    trial = trial_of(cfg)
    if trial["init.parametrization"] == "sp":
        return [LeafRate("*", 1.0, 1.0)]
    layout, structure = _builtin_view(trial)
    scaled = leaf_multipliers(trial, layout, structure)

    # The scanned modules (hidden, blocks): every leaf under one is a stack of layers, its norms
    # and gates included (the layout marks only kernels and biases as stacked).
    scanned = {leaf.path.split("/")[0] for leaf in layout.leaves if leaf.stack}

    def glob(leaf, short: bool) -> str:
        top, _, rest = leaf.path.partition("/")
        if top not in scanned or not rest:
            return leaf.path
        return f"{top}/*{rest.rsplit('/', 1)[-1]}" if short else f"{top}*/{rest}"

    groups: dict[str, list] = {}
    for leaf, m in zip(layout.leaves, scaled):
        groups.setdefault(glob(leaf, True), []).append((leaf, m))
    rows = []
    for short, members in groups.items():
        rates = {(m.lr, m.decay) for _, m in members}
        if len(rates) == 1:
            rows.append(LeafRate(short, *rates.pop()))
        else:
            rows += [LeafRate(glob(leaf, False), m.lr, m.decay) for leaf, m in members]
    for leaf, m in zip(layout.leaves, scaled):  # every leaf, as Flax and as one module per layer
        top, _, rest = leaf.path.partition("/")
        for path in {leaf.path, f"{top}/0/{rest}" if top in scanned else leaf.path}:
            row = row_for(rows, path)
            if (row.lr, row.decay) != (m.lr, m.decay):
                raise AssertionError(f"rate table: {path} reads {row}, the engine {m}")
    return rows


def lr_multipliers(cfg) -> dict[str, dict[str, float]]:
    """``rate_table`` as plain data for a best file: ``{"lr": {glob: multiplier}, "weight_decay":
    {glob: multiplier}}``."""
    rows = rate_table(cfg)
    return {
        "lr": {r.glob: float(r.lr) for r in rows},
        "weight_decay": {r.glob: float(r.decay) for r in rows},
    }
