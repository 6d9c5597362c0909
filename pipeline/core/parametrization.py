"""Parametrizations (``init.parametrization``): how each layer's initial scale and learning rate
change with the width and depth of the network, relative to a base model.

The engine keeps the standard parametrization (SP: the trial's initializer, one learning rate)
and expresses the others as two multipliers per parameter leaf, relative to the base model
(``model.base_width``, ``model.base_depth``; null = the trial's own size):

- ``init``: multiplies the std of the trial's initializer (its variance by ``init**2``);
- ``lr``: multiplies the trial's learning rate (a per-leaf number traced per row, applied in
  ``pipeline.core.train.make_optimizer``), for SGD (and momentum) or for Adam;
- ``decay``: multiplies the trial's L2 weight decay, traced per row the same way (below).

So at the base size every parametrization *is* SP, and what was tuned in SP at the base size
carries over; the mup library's base shapes (``set_base_shapes``) work the same way. The
multipliers depend only on ratios to the base model: ``r_in = fan_in / base fan_in`` and
``r_out = fan_out / base fan_out`` of a kernel, ``r`` the size ratio of a bias or other vector,
``d = depth / base_depth``.

μP (Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466, Table 3: μP without multipliers;
the paper's equivalent forms with an output multiplier, Table 8 as recalled here, are what the
mup library implements). Its columns, in absolute form, and "relative to base" (divided by the
same entry at the base):

=============  ==================  ==========================  ===================
               input weights,      hidden weights              output (read-out)
               all biases                                      weights
=============  ==================  ==========================  ===================
init variance  1/fan_in  -> 1      1/fan_in  -> 1              1/fan_in^2 -> 1/r_in
SGD LR         fan_out   -> r_out  1         -> r_out/r_in     1/fan_in  -> 1/r_in
Adam LR        1         -> 1      1/fan_in  -> 1/r_in         1/fan_in  -> 1/r_in
=============  ==================  ==========================  ===================

(the SGD column reads r_out / r_in for every kernel, as the mup library's ``MuSGD`` divides a
matrix's learning rate by its fan-in/fan-out width ratio; a bias is a kernel with fan_in 1, so
it takes r_out = r, its own size ratio: the read-out's bias, of fixed size, keeps ratio 1; norm
scales and embeddings are such vectors too, as in the mup library). The read-out's init variance
1/fan_in^2 is chosen over a zero read-out; ``init.readout=zero`` gives the zero read-out the mup
README recommends, and either way the logits at initialization vanish as the width grows (mean
|logit| ~ r_in^-1/2 with the variance rule), which is μP.

ntk (Jacot et al. 2018, "Neural Tangent Kernel"): weights w = (sigma / sqrt(fan_in)) omega with
omega ~ N(0, 1) trained at rate eta. Written on w (SP's variable) that is SP's initialization
and a learning rate eta / fan_in for SGD (Yang & Hu 2021, "Tensor Programs IV", arXiv
2011.14522: NTP among its abc-parametrizations), so relative to base 1/r_in for every kernel (1
for the input layer, whose fan_in is the data's). Adam's step does not scale with the gradient,
so the same change of variable gives eta / sqrt(fan_in): 1/sqrt(r_in). Biases keep their rate
(Jacot's beta b, beta fixed).

depth_mup (Yang et al. 2023, "Tensor Programs VI", arXiv 2310.02244; Bordelon et al. 2023,
arXiv 2309.16620): μP in width, and each residual branch multiplied by 1/sqrt(depth), here
1/sqrt(d) relative to the base depth (``branch_multiplier``). The learning rate of the
parameters inside the branches: unchanged for SGD, 1/sqrt(d) for Adam. From memory, with this
uncertainty stated: the branch rule and the SGD rule are the papers' central result; the Adam
rule is Tensor Programs VI's (block depth 1) and follows from the same count (an Adam step moves
each of L branches by eta / sqrt(L), correlated over L blocks: sqrt(L) eta in all, unless eta ~
1/sqrt(L)). Adam's epsilon is not rescaled here (Tensor Programs VI discusses scaling it too).

Roles come from comparing shapes, as the mup library's ``make_base_shapes(base, delta)`` does:
a dimension is "infinite" if it changes when the width does (the engine builds the module at the
width and at twice the width). A kernel whose fan_out alone is infinite is an input layer, fan_in
alone a read-out, both hidden, neither fixed (all multipliers 1); a bias or other leaf (norm
scales and offsets, embeddings) is a vector when its size is infinite, else fixed. A module whose
factory does not take ``width`` cannot be rebuilt at another width: then ``roles_by_fans`` reads
a kernel whose fan_in is the number of features as the input layer, one whose fan_out is the
number of outputs as the read-out, every other kernel as hidden, and scales the infinite
dimensions by model.width / model.base_width.

Weight decay (``train.weight_decay``: L2 added to the gradient before the optimizer's direction,
"coupled", as torch.optim's ``weight_decay``). The mup library rescales coupled decay with the
learning rate (microsoft/mup ``mup/optim.py``: ``MuAdam`` multiplies a matrix-like group's
``weight_decay`` by the width multiplier its rate is divided by; ``MuSGD`` divides a vector-like
group's by the multiplier its rate is multiplied by and multiplies a matrix's by the fan-in/fan-out
ratio its rate is divided by; ``decoupled_wd=True``, for AdamW-style decay, skips this). So under
mup and depth_mup each leaf's decay multiplier is 1 / its width learning-rate multiplier (the
decay's shrink lr x decay x w per SGD step is as at the base), with one exception that follows
from the library's read-out form: its ``MuReadout`` weight is r_in times ours (it divides its
input by the width multiplier) and is vector-like (Adam rate and decay unchanged), and Adam is
invariant to the scale of its input (epsilon aside), so Adam(g / r_in + decay x r_in w) moves our
weight as our rate 1/r_in on g + decay x r_in^2 w: the read-out's decay multiplier under Adam is
r_in^2 (under SGD the same change of variable gives r_in = 1 / lr). Not rescaled: depth_mup's
depth factor (the library has no depth rule, and from memory neither depth paper treats coupled
decay) and ntk (the engine's ntk is SP's variable with NTK's rates, Tensor Programs IV; decay on
NTK's own variable would be a different model, not a rescaling the library or the NTK paper
prescribes).

Attention (the transformer, ``model.attention_scale``): μP scales attention logits by 1/d_head
instead of 1/sqrt(d_head) (Tensor Programs V, its attention rule); the projections are hidden
weights above. That attention rule lives in ``pipeline.core.transformer.attention_scale``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import NamedTuple

PARAMETRIZATIONS = ("sp", "mup", "ntk", "depth_mup")
KERNEL_ROLES = ("input", "hidden", "readout", "fixed")
VECTOR_ROLES = ("vector", "fixed")
# The residual branches of the built-in networks: u = skip x + alpha B(N(x)), the residual MLP's
# B = fc2 phi fc1 (pipeline.core.model), a transformer block's attention and MLP
# (pipeline.core.transformer). A pre-norm N is inside the branch, a post-norm after the sum not.
BRANCH = ("blocks*/fc1/*", "blocks*/fc2/*", "blocks*/attn/*", "blocks*/mlp/*")
BRANCH_NORMS = ("blocks*/norm/*", "blocks*/attn_norm/*", "blocks*/mlp_norm/*")
PRE_NORMS = ("pre", "rmsnorm")


class LeafScaling(NamedTuple):
    """How one parameter leaf scales with the model, relative to the base model."""

    role: str  # kernels: input | hidden | readout | fixed; other leaves: vector | fixed
    fan_in_ratio: float = 1.0  # kernels: fan_in / base fan_in
    fan_out_ratio: float = 1.0  # kernels: fan_out / base fan_out; vectors: size / base size
    branch: bool = False  # inside a residual branch (depth_mup's depth rules apply)


class Multipliers(NamedTuple):
    init: float  # multiplies the std of the trial's initializer
    lr: float  # multiplies the learning rate
    decay: float = 1.0  # multiplies the coupled L2 weight decay (train.weight_decay)


def multipliers(
    parametrization: str, leaf: LeafScaling, adam: bool, depth_ratio: float = 1.0
) -> Multipliers:
    """The initial-std and learning-rate multipliers of one leaf (the tables of the module
    docstring); ``adam``: Adam's column, else SGD's (momentum too); ``depth_ratio`` d."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"init.parametrization={parametrization!r}: expected one of "
            + ", ".join(PARAMETRIZATIONS)
        )
    r_in, r_out = leaf.fan_in_ratio, leaf.fan_out_ratio
    init, lr, decay = 1.0, 1.0, 1.0
    if parametrization == "sp" or leaf.role == "fixed":
        pass
    elif parametrization == "ntk":  # Jacot et al. 2018 on SP's variable (Tensor Programs IV)
        if leaf.role != "vector":
            lr = r_in**-0.5 if adam else 1.0 / r_in
    elif leaf.role == "vector":  # mup, depth_mup: Tensor Programs V, Table 3, relative to base
        lr = 1.0 if adam else r_out
        decay = 1.0 / lr  # MuSGD: a vector-like group's weight_decay / width_mult
    else:
        init = r_in**-0.5 if leaf.role == "readout" else 1.0  # variance 1/fan_in^2
        lr = 1.0 / r_in if adam else r_out / r_in
        # MuAdam, MuSGD: a matrix's weight_decay x the factor its rate is divided by; the read-out
        # with Adam: x r_in^2, the library's decay on MuReadout's r_in-times-larger weight
        decay = r_in**2 if adam and leaf.role == "readout" else 1.0 / lr
    if parametrization == "depth_mup" and leaf.branch and adam:
        lr /= math.sqrt(depth_ratio)  # Tensor Programs VI: Adam's rate ~ 1/sqrt(L)
    return Multipliers(init, lr, decay)


def branch_multiplier(parametrization: str, depth_ratio: float) -> float:
    """depth_mup's factor on each residual branch, 1/sqrt(depth / base_depth) (Tensor Programs
    VI; Bordelon et al. 2023); 1 for every other parametrization."""
    return depth_ratio**-0.5 if parametrization == "depth_mup" else 1.0


def in_branch(path: str, norm: str = "none") -> bool:
    """Is the leaf at ``path`` inside a residual branch of a built-in residual network?"""
    globs = BRANCH + (BRANCH_NORMS if norm in PRE_NORMS else ())
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def _fans(shape: Sequence[int]) -> tuple[float, float]:
    """(fan_in, fan_out) as ``initializers.compute_fans``: a convolution's window multiplies
    both, which cancels in every ratio."""
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def _kernel_role(infinite_in: bool, infinite_out: bool) -> str:
    if infinite_in and infinite_out:
        return "hidden"
    if infinite_out:
        return "input"
    return "readout" if infinite_in else "fixed"


def roles_by_shapes(leaves, base_leaves, delta_leaves, norm: str = "none") -> tuple:
    """One ``LeafScaling`` per leaf of ``leaves`` (``pipeline.core.net.Leaf``s): roles from
    which dimensions differ in ``delta_leaves`` (the module at another width), ratios to
    ``base_leaves`` (the module at the base width); leaves matched by path. A leaf missing from
    either is fixed."""
    base = {leaf.path: leaf for leaf in base_leaves}
    delta = {leaf.path: leaf for leaf in delta_leaves}
    out = []
    for leaf in leaves:
        b, dl = base.get(leaf.path), delta.get(leaf.path)
        branch = in_branch(leaf.path, norm)
        if b is None or dl is None:
            out.append(LeafScaling("fixed", branch=branch))
        elif leaf.role == "kernel" and leaf.fan_shape:
            (fi, fo), (bi, bo), (di, do) = (_fans(x.fan_shape) for x in (leaf, b, dl))
            role = _kernel_role(di != fi, do != fo)
            out.append(LeafScaling(role, fi / bi, fo / bo, branch))
        else:
            size, base_size = math.prod(leaf.layer_shape), math.prod(b.layer_shape)
            role = "vector" if math.prod(dl.layer_shape) != size else "fixed"
            out.append(LeafScaling(role, 1.0, size / base_size, branch))
    return tuple(out)


def roles_by_fans(leaves, n_in: int, n_out: int, width_ratio: float) -> tuple:
    """``LeafScaling``s of a module that cannot be rebuilt at another width: the input layer is
    the kernel whose fan_in is ``n_in`` (the data's features), the read-out the one whose fan_out
    is ``n_out``, every other kernel hidden; a bias or other leaf of size ``n_out`` is fixed,
    any other a vector; infinite dimensions scale by ``width_ratio``."""
    out = []
    for leaf in leaves:
        if leaf.role == "kernel" and leaf.fan_shape:
            fan_in, fan_out = leaf.fan_shape[-2], leaf.fan_shape[-1]
            role = _kernel_role(fan_in != n_in, fan_out != n_out)
            r_in = width_ratio if role in ("hidden", "readout") else 1.0
            r_out = width_ratio if role in ("hidden", "input") else 1.0
            out.append(LeafScaling(role, r_in, r_out))
        elif leaf.layer_shape and leaf.layer_shape[-1] != n_out:
            out.append(LeafScaling("vector", 1.0, width_ratio))
        else:
            out.append(LeafScaling("fixed"))
    return tuple(out)
