"""Margins -> predictions in SQL, bit for bit as XGBoost computes them in float32.

XGBoost turns margins into probabilities in float32 with C's ``expf`` (xgboost's
``common::Sigmoid`` and ``common::Softmax``)::

    sigmoid(m)  = 1.0f / ((expf(min(-m, 88.7f)) + 1.0f) + 1e-16f)
    softmax(m)_g = expf(m_g - max(m)) / (float)(sum in double of the expf values)

Every + and / is a float32 operation; ``+ 1e-16f`` never changes a sum that is at least 1.
A database's ``exp`` works in double: rounding it to float32 differs from glibc's ``expf`` on
about 1 input in 3,000 (``expf`` is not correctly rounded: its double polynomial is only good
to 2^-34, and the result is rounded from that). So the SQL computes glibc's own algorithm
(``sysdeps/ieee754/flt-32/e_expf.c``: ``x = (k + r) ln2/32``, ``2^(k/32)`` from a 32-entry
table, a cubic in r, each step a double operation in the same order) and rounds its double
result to float32 once, as ``expf`` does. On x86-64 glibc may use a fused multiply-add for the
cubic; that changes the double result by at most a double ulp, far below float32's rounding.
``python -m bench.sql_expf_proof`` checks these operations against C's ``expf`` on every
float32 input; tests/test_sqlgen.py checks the SQL against XGBoost itself.

Float32 operations run natively where the database has a float32 type (DuckDB FLOAT,
PostgreSQL REAL, Spark FLOAT; Spark's ``/`` returns DOUBLE and is cast back: the double
quotient of two float32 values rounds to the float32 quotient, as 53 >= 2 * 24 + 2). Elsewhere
each float32 result is the double result rounded to 24 bits by Veltkamp's split (ties to
even), or to a multiple of 2^-149 below 2^-126 (float32's subnormals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pyml.engines.duckdb import quote
from pyml.sqlgen.trees import Forest
from pyml.store.registry import StoredModel

F32 = np.float32
Cte = tuple[str, str, str]  # name, body, "materialized " or ""

# glibc's expf (e_exp2f_data.c, EXP2F_TABLE_BITS = 5).
_N = 32
_INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * _N
_SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds to an integer, ties to even
_C0 = float.fromhex("0x1.c6af84b912394p-5") / _N / _N / _N
_C1 = float.fromhex("0x1.ebfce50fac4f3p-3") / _N / _N
_C2 = float.fromhex("0x1.62e42ff0c52d6p-1") / _N
# T[i] + (i << 47) of glibc's table: the double 2^(i/32) the algorithm scales by.
_TAB_BITS = (
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
)
EXP2_TABLE = tuple(float(np.array([b + (i << 47)], dtype=np.uint64).view(np.float64)[0])
                   for i, b in enumerate(_TAB_BITS))
EXPF_ZERO_BELOW = float(F32(float.fromhex("-0x1.9fe368p6")))  # expf(x) = 0 below this
# The only float32 inputs on which glibc's expf with fused multiply-adds (x86-64 with FMA,
# aarch64) differs from the same operations without (the SQL's), by one float32 ulp: found by
# bench/sql_expf_proof.py over every float32 input. The SQL gives the FMA value, XGBoost's
# on such machines; on an x86-64 CPU without FMA, XGBoost's expf is the other one.
EXPF_FMA = ((float.fromhex("0x1.04845ep+5"), float.fromhex("0x1.f93e38p+46")),
            (float.fromhex("-0x1.f8cbb2p+5"), float.fromhex("0x1.f45326p-92")))
SIGMOID_CLAMP = float(F32(88.7))  # XGBoost's min(-x, 88.7f)
# expf(x) + 1.0f is exactly 1.0f for every x <= -20 (expf(-20) < 2^-25): clamping there
# keeps the sigmoid's expf argument in a small range without changing any result.
SIGMOID_FLOOR = -20.0
VELTKAMP = "536870913.0"  # 2^29 + 1: splits a double's 53 bits into 24 + 29
SUBNORMAL_SHIFT = 1.5 * 2.0 ** -97  # a double of that size has an ulp of 2^-149
MIN_NORMAL = 2.0 ** -126
ZERO_QUOTIENT = 2.0 ** -150  # a float32 quotient at or below this rounds to zero


def num(value: float) -> str:
    """A double literal that every dialect reads back exactly (an exponent keeps it DOUBLE)."""
    text = repr(float(value))
    return text if ("e" in text or "inf" in text or "nan" in text) else text + "e0"


def f32(value: float) -> str:
    """A float32 constant in a native float32 dialect."""
    return f"cast({num(float(F32(value)))} as float)"


def expf_steps(x: str, out: str, lists: bool) -> list[list[str]]:
    """Projections (one list per step) that compute glibc's expf of the DOUBLE column `x`
    (a float32 value in [EXPF_ZERO_BELOW, 88.72]) into the DOUBLE column `out`, before its
    final rounding to float32. Each step reads only the columns of the steps before it.
    `lists`: look the table up in a list literal (DuckDB; 1.8x faster than a CASE)."""
    z = f"{x} * {num(_INV_LN2_N)}"
    k, r, i, q = (f"{out}_k", f"{out}_r", f"{out}_i", f"{out}_q")
    if lists:
        table = "[" + ", ".join(map(num, EXP2_TABLE)) + f"][{i} + 1]"
    else:
        table = "case " + f"{i} " + " ".join(f"when {n} then {num(v)}"
                                             for n, v in enumerate(EXP2_TABLE)) + " end"
    return [
        # x * 32/ln2 = k + r, k rounded to an integer (ties to even) by adding 1.5 * 2^52.
        [f"({z} + {num(_SHIFT)}) - {num(_SHIFT)} as {k}"],
        [f"{z} - {k} as {r}", f"cast({k} - 32 * floor({k} / 32e0) as integer) as {i}",
         f"floor({k} / 32e0) as {q}"],
        # 2^(k/32) = T[k mod 32] * 2^(k div 32): the power of two is exact.
        [f"(({num(_C0)} * {r} + {num(_C1)}) * ({r} * {r}) + ({num(_C2)} * {r} + 1e0))"
         f" * ({table} * power(2e0, {q})) as {out}"],
    ]


def expf32(x: str, y: str, native: bool) -> str:
    """expf(x) as float32 (native) or as a double holding it: `y` (expf_steps' result)
    rounded, or the FMA value on EXPF_FMA's inputs."""
    value = (lambda v: f"cast({num(v)} as float)") if native else num
    rounded = f"cast({y} as float)" if native else _round32(y)
    if not EXPF_FMA:
        return rounded
    fma = " ".join(f"when {x} = {num(a)} then {value(b)}" for a, b in EXPF_FMA)
    return f"case {fma} else {rounded} end"


def _round32(v: str) -> str:
    """The DOUBLE column `v` rounded to float32 (ties to even) in double arithmetic."""
    shift = num(SUBNORMAL_SHIFT)
    return (f"case when abs({v}) < {num(MIN_NORMAL)} then ({v} + {shift}) - {shift} "
            f"else {v} * {VELTKAMP} - ({v} * {VELTKAMP} - {v}) end")


class _Steps:
    """CTEs that each add columns to the previous one."""

    def __init__(self, first: str, fence: str, lists: bool) -> None:
        self.prev = first
        self.fence = fence
        self.lists = lists  # DuckDB list literals may be used
        self.ctes: list[Cte] = []

    def add(self, cols: Sequence[str]) -> None:
        name = f"__pyml_out_{len(self.ctes) + 1}"
        self.ctes.append((name, "    select\n        *,\n        " + ",\n        ".join(cols)
                          + f"\n    from {self.prev}", self.fence))
        self.prev = name


def output_ctes(stored: StoredModel, forest: Forest, keys: Sequence[str], native: bool,
                cut: float | None, class_literal: Callable[[object], str],
                fence: str, lists: bool = False) -> list[Cte]:
    """CTEs from __pyml_scores (keys, float32 margins __pyml_m<g>) to `final`; `lists`: the
    dialect is DuckDB (list literals)."""
    version = f"{stored.version} as model_version"
    keys = list(keys)
    if stored.task == "regression":
        cols = [*keys, "cast(__pyml_m0 as double) as prediction", version]
        return [("final", "    select\n        " + ",\n        ".join(cols)
                 + "\n    from __pyml_scores", "")]
    steps = _Steps("__pyml_scores", fence, lists)
    classes = stored.target.classes
    if stored.task == "binary":
        _sigmoid(steps, native)
        if cut is None:  # XGBoost could not be asked for the cut: the exact probability
            test = f"__pyml_p >= {num(stored.threshold)}"
        elif cut in (float("inf"), float("-inf")):
            test = "false" if cut > 0 else "true"
        else:  # the label XGBoost's float32 sigmoid gives, decided on the exact margin
            test = f"__pyml_m0 >= {num(cut)}"
        label = (f"case when {test} then {class_literal(classes[1])} "
                 f"else {class_literal(classes[0])} end as prediction")
        cols = [*keys, label, "cast(__pyml_p as double) as probability", version]
    else:
        groups = forest.num_groups
        _softmax(steps, native, groups)
        top = f"greatest({', '.join(f'__pyml_p{g}' for g in range(groups))})"
        steps.add([f"{top} as __pyml_pmax"])
        # numpy's argmax on the float32 probabilities: the first class with the largest.
        label = ("case " + " ".join(f"when __pyml_p{g} = __pyml_pmax then {class_literal(c)}"
                                    for g, c in enumerate(classes)) + " end as prediction")
        cols = [*keys, label, "cast(__pyml_pmax as double) as probability",
                *[f"cast(__pyml_p{g} as double) as {quote(f'probability_{c}')}"
                  for g, c in enumerate(classes)], version]
    return [*steps.ctes, ("final", "    select\n        " + ",\n        ".join(cols)
                          + f"\n    from {steps.prev}", "")]


def _sigmoid(steps: _Steps, native: bool) -> None:
    """__pyml_p: XGBoost's float32 sigmoid of __pyml_m0."""
    if native:
        x = (f"cast(greatest(least(-__pyml_m0, {f32(SIGMOID_CLAMP)}), {f32(SIGMOID_FLOOR)}) "
             "as double)")
    else:  # the margin is a DOUBLE holding a float32 value: negating and clamping are exact
        x = f"greatest(least(-__pyml_m0, {num(SIGMOID_CLAMP)}), {num(SIGMOID_FLOOR)})"
    steps.add([f"{x} as __pyml_x"])
    for cols in expf_steps("__pyml_x", "__pyml_y", steps.lists):
        steps.add(cols)
    if native:
        one = f32(1.0)
        # expf's float32, + 1.0f, 1.0f / denominator: float32 operations (Spark's / is a
        # double division, exact once cast back, see the module docstring).
        steps.add([f"{expf32('__pyml_x', '__pyml_y', True)} as __pyml_e"])
        steps.add([f"cast({one} / (__pyml_e + {one}) as float) as __pyml_p"])
        return
    steps.add([f"{expf32('__pyml_x', '__pyml_y', False)} as __pyml_e"])
    steps.add(["__pyml_e + 1e0 as __pyml_d0"])
    steps.add([f"{_round32('__pyml_d0')} as __pyml_d"])
    steps.add(["1e0 / __pyml_d as __pyml_q0"])
    steps.add([f"{_round32('__pyml_q0')} as __pyml_p"])


def _softmax(steps: _Steps, native: bool, groups: int) -> None:
    """__pyml_p<g>: XGBoost's float32 softmax of the margins __pyml_m<g>."""
    g_range = range(groups)
    steps.add([f"greatest({', '.join(f'__pyml_m{g}' for g in g_range)}) as __pyml_mx"])
    if native:
        steps.add([f"cast(greatest(__pyml_m{g} - __pyml_mx, {f32(EXPF_ZERO_BELOW)}) as double) "
                   f"as __pyml_x{g}" for g in g_range])
    else:
        steps.add([f"__pyml_m{g} - __pyml_mx as __pyml_d{g}" for g in g_range])
        steps.add([f"{_round32(f'__pyml_d{g}')} as __pyml_s{g}" for g in g_range])
        steps.add([f"greatest(__pyml_s{g}, {num(EXPF_ZERO_BELOW)}) as __pyml_x{g}"
                   for g in g_range])
    per_group = [expf_steps(f"__pyml_x{g}", f"__pyml_y{g}", steps.lists) for g in g_range]
    for level in range(len(per_group[0])):
        steps.add([col for g in g_range for col in per_group[g][level]])
    # Below EXPF_ZERO_BELOW expf is 0 (the clamped argument computed a value just above it).
    zero = ("cast(0 as float)" if native else "0e0")
    def rounded(g: int) -> str:
        return expf32(f"__pyml_x{g}", f"__pyml_y{g}", native)

    # The float32 difference (native: m - max is a float32 subtraction).
    diff = (lambda g: f"__pyml_m{g} - __pyml_mx") if native else (lambda g: f"__pyml_s{g}")
    steps.add([f"case when {diff(g)} < {num(EXPF_ZERO_BELOW)} then {zero} "
               f"else {rounded(g)} end as __pyml_e{g}" for g in g_range])
    # The sum is a double (XGBoost's wsum), of the float32 values in class order.
    total = " + ".join(f"cast(__pyml_e{g} as double)" for g in g_range)
    steps.add([f"{total} as __pyml_w0"])
    if native:
        steps.add(["cast(__pyml_w0 as float) as __pyml_w"])
        # A float32 quotient at or below 2^-150 is 0 (PostgreSQL raises an underflow error
        # instead, so it is written out); the double quotient decides that exactly.
        steps.add([f"case when cast(__pyml_e{g} as double) / cast(__pyml_w as double) <= "
                   f"{num(ZERO_QUOTIENT)} then {zero} "
                   f"else cast(__pyml_e{g} / __pyml_w as float) end as __pyml_p{g}"
                   for g in g_range])
        return
    steps.add([f"{_round32('__pyml_w0')} as __pyml_w"])
    steps.add([f"__pyml_e{g} / __pyml_w as __pyml_q{g}" for g in g_range])
    steps.add([f"{_round32(f'__pyml_q{g}')} as __pyml_p{g}" for g in g_range])
