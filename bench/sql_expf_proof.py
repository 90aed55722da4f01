"""Exhaustive check that `pyml sql`'s expf equals C's expf on every float32 input it meets.

    python -m bench.sql_expf_proof      # needs a C compiler (cc); about a minute per pass

XGBoost computes its sigmoid and softmax with C's float32 ``expf``; the SQL computes glibc's
expf algorithm in double operations (pyml.sqlgen.outputs.expf_steps). This writes the SQL's
operations, in the SQL's order and with the module's own constants, as C compiled without
contraction into fused multiply-adds (a database does one operation at a time), and compares
them with the C library's ``expf`` bit for bit:

1. every float32 x in [EXPF_ZERO_BELOW, 88.7f]: the SQL's rounded value == expf(x) (without
   the two EXPF_FMA exceptions, 2 of 2,239,846,428 differ on an x86-64 CPU with FMA: glibc
   contracts the cubic into fused multiply-adds there);
2. every float32 x below EXPF_ZERO_BELOW (and -inf): expf(x) == 0, as the SQL writes it;
3. every float32 margin m (all 2^32 bit patterns but NaN): XGBoost's sigmoid
   ``1.0f / (expf(min(-m, 88.7f)) + 1.0f + 1e-16f)`` == the SQL's, which clamps the argument
   at SIGMOID_FLOOR before its expf.

That the database evaluates those double operations as C does is checked by
tests/test_sqlgen.py against XGBoost itself (DuckDB, SQLite) and tests/test_sql_postgres.py.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pyml.sqlgen import outputs as O

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double TAB[32] = {%(table)s};

static float sql_expf(float xf) {  /* pyml.sqlgen.outputs.expf_steps, then expf32 */
%(fma)s
    double x = (double)xf;
    double k = (x * %(inv)s + %(shift)s) - %(shift)s;
    double r = x * %(inv)s - k;
    double q = floor(k / 32.0);  /* SQL: T[i] * power(2, q), an exact power of two */
    int i = (int)(k - 32 * floor(k / 32.0));
    double y = ((%(c0)s * r + %(c1)s) * (r * r) + (%(c2)s * r + 1.0)) * ldexp(TAB[i], (int)q);
    return (float)y;
}

static float from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

int main(void) {
    const float lo = %(zero_below)s, clamp = %(clamp)s, floor_ = %(floor)s;
    uint64_t n1 = 0, bad1 = 0, n2 = 0, bad2 = 0, n3 = 0, bad3 = 0;
    for (uint64_t u = 0; u <= 0xFFFFFFFFu; ++u) {
        float x = from_bits((uint32_t)u);
        if (isnan(x)) continue;
        if (x >= lo && x <= clamp) {
            ++n1;
            if (bits(sql_expf(x)) != bits(expf(x)) && bad1++ < 5) printf("expf %%a\n", x);
        } else if (x < lo) {
            ++n2;
            if (expf(x) != 0.0f && bad2++ < 5) printf("zero %%a\n", x);
        }
        /* x read as a margin m */
        float a = fminf(-x, 88.7f);
        volatile float theirs = 1.0f / (expf(a) + 1.0f + 1e-16f);
        float c = fmaxf(fminf(-x, clamp), floor_);
        volatile float ours = 1.0f / (sql_expf(c) + 1.0f);
        ++n3;
        if (bits(theirs) != bits(ours) && bad3++ < 5) printf("sigmoid %%a\n", x);
    }
    printf("expf on [EXPF_ZERO_BELOW, 88.7f]: %%llu inputs, %%llu differ\n",
           (unsigned long long)n1, (unsigned long long)bad1);
    printf("expf below EXPF_ZERO_BELOW is 0: %%llu inputs, %%llu differ\n",
           (unsigned long long)n2, (unsigned long long)bad2);
    printf("sigmoid of every float32 margin: %%llu inputs, %%llu differ\n",
           (unsigned long long)n3, (unsigned long long)bad3);
    return (bad1 || bad2 || bad3) ? 1 : 0;
}
"""


def main() -> int:
    """Write, compile and run the check; exit status 1 if any input differs."""
    source = SOURCE % {
        "table": ", ".join(float.hex(v) for v in O.EXP2_TABLE),
        "fma": "\n".join(f"    if (xf == {float.hex(a)}f) return {float.hex(b)}f;"
                         for a, b in O.EXPF_FMA),
        **{k: float.hex(v) for k, v in (
            ("inv", O._INV_LN2_N), ("shift", O._SHIFT), ("c0", O._C0), ("c1", O._C1),
            ("c2", O._C2), ("zero_below", O.EXPF_ZERO_BELOW), ("clamp", O.SIGMOID_CLAMP),
            ("floor", O.SIGMOID_FLOOR))},
    }
    with tempfile.TemporaryDirectory() as tmp:
        c, exe = Path(tmp) / "proof.c", Path(tmp) / "proof"
        c.write_text(source)
        subprocess.run(["cc", "-O2", "-ffp-contract=off", "-fno-builtin", str(c), "-o", str(exe),
                        "-lm"], check=True)
        return subprocess.run([str(exe)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
