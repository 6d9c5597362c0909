"""Per-layer initialization rules (``init.rules``): which parameters get which init.

A rule set is an ordered list of mappings ``{match: <glob>, <override>: value, ...}``. ``match`` is
an ``fnmatch`` glob over a parameter's path (``"hidden/dense/kernel"``, ``"*/out_proj/kernel"``);
an override is an init key (``weights``, ``gain``, ``mode``, ``std``, ``limit``, ``value``,
``bias``, ``bias_value``, ``bias_std``) or ``scale``, a multiplier of the leaf's initial values
that may be a formula of the trial's structure (``"1/sqrt(2*depth)"``: GPT-2's residual
projections, Radford et al. 2019, section 2.3). Every rule whose glob matches a path applies, in
order, so a later rule overrides an earlier one key by key.

Weight keys act on kernels, bias keys on biases; ``scale`` acts on any leaf (a leaf that is
neither, such as a norm scale, keeps the module's own initializer times its ``scale``).
"""

from __future__ import annotations

import ast
import fnmatch
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

WEIGHT_KEYS = ("weights", "gain", "mode", "std", "limit", "value")
BIAS_KEYS = ("bias", "bias_value", "bias_std")
OVERRIDES = (*WEIGHT_KEYS, *BIAS_KEYS, "scale")
NAMES = ("depth", "width", "n_features", "n_classes")  # what a scale formula may use
FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp}
_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}  # fmt: skip


def formula_problem(text: str) -> str | None:
    """Why ``text`` is not a scale formula (None: it is one)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return f"scale {text!r} is not a formula"
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in (*NAMES, *FUNCTIONS):
            allowed = ", ".join((*NAMES, *FUNCTIONS))
            return f"scale {text!r} uses {node.id!r}; a formula may use {allowed}"
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and len(node.args) == 1
        ):
            return f"scale {text!r}: only {', '.join(FUNCTIONS)} of one argument may be called"
        allowed_nodes = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call)
        if not isinstance(node, allowed_nodes + tuple(_OPS) + (ast.Load,)):
            return f"scale {text!r} has {type(node).__name__}; use numbers, + - * / ** and ()"
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            return f"scale {text!r} has {node.value!r}; only numbers may appear"
    return None


def evaluate(scale: float | str, structure: Mapping[str, float]) -> float:
    """A rule's ``scale``: a number, or its formula over ``structure`` (depth, width, ...)."""
    if not isinstance(scale, str):
        return float(scale)

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(structure[node.id])
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            return _OPS[type(node.op)](value(node.operand))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](value(node.args[0]))
        raise ValueError(f"scale {scale!r}: {type(node).__name__} is not allowed")

    return float(value(ast.parse(scale, mode="eval")))


def rules_problem(rules: Any, check_value=None) -> str | None:
    """Why ``rules`` is not a rule set (None: it is one). ``check_value(key, value)`` returns the
    problem of one override's value (the config's rule for ``init.<key>``), or None."""
    if not isinstance(rules, list | tuple):
        return "init.rules must be a list of {match: <glob>, <override>: value} mappings"
    for i, rule in enumerate(rules):
        where = f"init.rules[{i}]"
        if not isinstance(rule, Mapping):
            return f"{where} is {rule!r}: each rule is a mapping with match and overrides"
        match = rule.get("match")
        if not isinstance(match, str) or not match:
            return f"{where} needs match: a glob over parameter paths such as '*/kernel'"
        unknown = [k for k in rule if k != "match" and k not in OVERRIDES]
        if unknown:
            return f"{where} has {unknown[0]!r}; a rule may set {', '.join(OVERRIDES)}"
        if len(rule) == 1:
            return f"{where} sets nothing; a rule may set {', '.join(OVERRIDES)}"
        for k, v in rule.items():
            if k == "match":
                continue
            if k == "scale":
                if isinstance(v, str):
                    problem = formula_problem(v)
                    if problem:
                        return f"{where}: {problem}"
                elif not (isinstance(v, int | float) and not isinstance(v, bool)) or not (
                    math.isfinite(v)
                ):
                    return f"{where}: scale must be a finite number or a formula, got {v!r}"
            elif check_value is not None:
                problem = check_value(k, v)
                if problem:
                    return f"{where}: {problem}"
    return None


def matching(rules: Sequence[Mapping[str, Any]], path: str) -> list[Mapping[str, Any]]:
    """The rules whose glob matches ``path``, in order."""
    return [r for r in rules if fnmatch.fnmatchcase(path, r["match"])]


def resolve(base: Mapping[str, Any], rules: Sequence[Mapping[str, Any]], path: str) -> dict:
    """The init keys (and ``scale``, default 1) in force for the parameter at ``path``:
    ``base`` (the trial's ``init.*`` keys, short names) overridden by each matching rule."""
    out = {**base, "scale": 1.0}
    for rule in matching(rules, path):
        out.update({k: v for k, v in rule.items() if k != "match"})
    return out


def unmatched(rules: Sequence[Mapping[str, Any]], paths: Sequence[str]) -> list[str]:
    """The globs of ``rules`` that match none of ``paths`` (a typo the user should hear of)."""
    return [r["match"] for r in rules if not any(fnmatch.fnmatchcase(p, r["match"]) for p in paths)]
