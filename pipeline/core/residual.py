"""The residual-rule table: what each ``init.residual`` sets at initialization, as a function of
the depth L (data, not theory: the model builds its generated rules from it, theory predicts the
stream from it, the export writes it into every framework's snippet).

A stack of ``depth`` = L blocks on a stream x of width n:
    u_{l+1} = a x_l + alpha B(x_l),   B(x) = W2 phi(W1 N(x) + b1) + b2,
with W1, W2 ~ N(0, sigma_w2 s / n), s the rule's factor below (``pipeline.core.theory`` derives
what the stream does; ``pipeline.core.model`` and ``pipeline.core.transformer`` apply it).
"""

from __future__ import annotations

from typing import NamedTuple

RESIDUALS = ("none", "scaled", "gpt2", "fixup", "skipinit", "rezero", "deepnorm")  # resmlp's
INIT_RESIDUALS = (*RESIDUALS, "t_fixup")  # every init.residual: t_fixup is the transformer's
NORMS = ("none", "pre", "rmsnorm", "post")


class ResidualScales(NamedTuple):
    """What a residual rule sets at initialization: u = skip x + alpha B(x), B's variances."""

    alpha: float  # multiplier on the branch
    skip: float  # multiplier on the identity path (DeepNet's alpha; 1 for every other rule)
    w1_var: float  # factor on W1's variance sigma_w2 / fan_in
    w2_var: float  # factor on W2's variance


# Each rule as a function of the depth L; constants as the papers give them for a branch of
# m = 2 layers (one MLP block per residual branch here).
RESIDUAL_RULES = {
    "none": lambda L: ResidualScales(1.0, 1.0, 1.0, 1.0),
    "scaled": lambda L: ResidualScales(L**-0.5, 1.0, 1.0, 1.0),
    # Radford et al. 2019 (GPT-2) scale the last layer of each branch by 1/sqrt(N), N residual
    # layers; nanoGPT counts two per transformer block (attention + MLP), std / sqrt(2 L).
    "gpt2": lambda L: ResidualScales(1.0, 1.0, 1.0, 1.0 / (2 * L)),
    # Zhang et al. 2019 (Fixup): last layer of each branch at 0, the others scaled by
    # L^(-1/(2m-2)) = L^(-1/2) in std for m = 2, so 1/L in variance.
    "fixup": lambda L: ResidualScales(1.0, 1.0, 1.0 / L, 0.0),
    # De & Smith 2020 (SkipInit), Bachlechner et al. 2020 (ReZero): a learnable alpha = 0.
    "skipinit": lambda L: ResidualScales(0.0, 1.0, 1.0, 1.0),
    "rezero": lambda L: ResidualScales(0.0, 1.0, 1.0, 1.0),
    # Wang et al. 2022 (DeepNet), encoder-only: skip a = (2L)^(1/4), branch weights scaled by
    # beta = (8L)^(-1/4) in std (the paper's FFN layers and value/output projections).
    "deepnorm": lambda L: ResidualScales(1.0, (2 * L) ** 0.25, (8 * L) ** -0.5, (8 * L) ** -0.5),
    # Huang et al. 2020 (T-Fixup), transformer only, no LayerNorm: the encoder's value and output
    # projections and MLP weights scaled by 0.67 N^(-1/4) in std (its input embeddings:
    # ``embedding_var``; ``pipeline.core.transformer`` says what is uncertain in this reading).
    "t_fixup": lambda L: ResidualScales(1.0, 1.0, 0.67**2 * L**-0.5, 0.67**2 * L**-0.5),
}


def embedding_var(residual: str, depth: int) -> float:
    """The factor a rule puts on a transformer's embedding tables' variance: T-Fixup scales the
    input embeddings by (9N)^(-1/4) in std (Huang et al. 2020, the decoder's constant, which the
    paper applies to the encoder's input embedding too), so (9N)^(-1/2); 1 for every other."""
    return (9 * int(depth)) ** -0.5 if residual == "t_fixup" else 1.0


def residual_scales(residual: str, depth: int) -> ResidualScales:
    """The constants ``init.residual`` sets for ``depth`` blocks, one place for theory and model."""
    if residual not in RESIDUAL_RULES:
        raise ValueError(f"init.residual={residual!r}: expected one of {', '.join(INIT_RESIDUALS)}")
    if int(depth) < 1:
        raise ValueError(f"model.depth={depth!r}: a residual stack needs at least 1 block")
    return RESIDUAL_RULES[residual](int(depth))
