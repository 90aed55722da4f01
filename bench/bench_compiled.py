"""Compiled tree predictors (treelite GTIL, tl2cgen) against XGBoost's own `inplace_predict`.

    python -m bench.bench_compiled [--site /tmp/compiled_site] [--rows 1000000] [--repeat 3]
                                   [--threads 2]

Issue #14: a compiled predictor is only worth a dependency if it is exact (bit-identical to
XGBoost) and faster than `inplace_predict` on the same machine. Neither library is a pyml
dependency: install them into a folder of their own
(`pip install --target /tmp/compiled_site treelite tl2cgen`) and pass `--site`; that folder
goes first on `sys.path` (numpy is imported from the project's environment before it).

One process, one model and one input: the benchmark model of `bench.bench_sql.train_model`
(binary:logistic, 100 trees, depth 6, trained on a 200k-row sample of
bench/out/synth_<rows>_float.duckdb) and that table's rows as the float32 matrix pyml scores
(`Encoder.matrix`, NaN = missing), all in memory before any clock starts. Every path runs
`--threads` threads, best of `--repeat` (wall time, and the process CPU time of that run); a
tl2cgen prediction includes building its DMatrix from the numpy array. "compile s" is the
one-off cost: treelite's conversion of the booster, plus for tl2cgen C generation, gcc and
(annotated variant) the branch annotation on the first 200k rows. Each output is compared with
XGBoost's as float32 bit patterns, probabilities against `inplace_predict(X)` and margins
against `inplace_predict(X, predict_type="margin")`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import xgboost as xgb

from bench.bench_sql import train_model
from bench.synth import TABLE, synth_db
from pyml.data.encode import Encoder, select_exprs

TREES = 100
DEPTH = 6
ANNOTATE_ROWS = 200_000


@dataclass
class Row:
    """One line of the table."""

    path: str
    seconds: float | None = None
    cpu: float | None = None
    differing: int | None = None
    max_abs: float | None = None
    compile_s: float | None = None
    error: str | None = None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_of(repeat: int, run: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """(fastest wall seconds, CPU seconds of that run, its output) over `repeat` runs."""
    best, best_cpu, out = float("inf"), 0.0, np.empty(0)
    for _ in range(repeat):
        cpu = _cpu()
        started = time.perf_counter()
        result = run()
        took = time.perf_counter() - started
        if took < best:
            best, best_cpu, out = took, _cpu() - cpu, result
    return best, best_cpu, out


def positive(out: Any, rows: int) -> np.ndarray:
    """One value per row: treelite 4 returns (rows, targets, classes); take the last column
    (the only one for binary:logistic, the positive class if there were two)."""
    arr = np.asarray(out).reshape(rows, -1)
    return arr[:, -1]


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """(rows whose float32 bit pattern differs from `ref`, max absolute difference)."""
    got = np.ascontiguousarray(out, dtype=np.float32)
    differing = int(np.count_nonzero(got.view(np.uint32) != ref.view(np.uint32)))
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return differing, float(np.nanmax(diff)) if diff.size else 0.0


def load_input(rows: int, threads: int) -> tuple[xgb.Booster, np.ndarray]:
    """The benchmark model and the table's rows as the float32 matrix pyml scores."""
    db = synth_db(rows, "float")
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute(f"set threads = {threads}")
        stored = train_model(con, TREES, DEPTH, threads)
        table = con.sql(f"select {', '.join(select_exprs(stored.features))} "
                        f"from {TABLE}").to_arrow_table()
    finally:
        con.close()
    X = Encoder(stored.features).matrix([table.column(i) for i in range(table.num_columns)],
                                        "bench")
    return stored.booster, X


def measure(path: str, repeat: int, run: Callable[[], np.ndarray], ref: np.ndarray,
            compile_s: float | None = None) -> Row:
    """Time one prediction path and compare its output with XGBoost's."""
    try:
        seconds, cpu, out = best_of(repeat, run)
        differing, max_abs = compare(positive(out, len(ref)), ref)
        return Row(path, seconds, cpu, differing, max_abs, compile_s)
    except Exception as exc:  # a library failing is a result, not a crash
        traceback.print_exc()
        return Row(path, compile_s=compile_s, error=f"{type(exc).__name__}: {exc}")


def run_all(booster: xgb.Booster, X: np.ndarray, repeat: int, threads: int,
            workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    """Every path, probabilities and margins; returns the rows and version facts."""
    facts: dict[str, Any] = {}
    bst = booster.copy()
    bst.set_param({"nthread": threads})
    prob = np.ascontiguousarray(bst.inplace_predict(X), dtype=np.float32)
    margin = np.ascontiguousarray(bst.inplace_predict(X, predict_type="margin"),
                                  dtype=np.float32)
    facts["xgboost_output_dtype"] = str(bst.inplace_predict(X[:10]).dtype)
    rows = [
        measure("xgboost inplace_predict", repeat, lambda: bst.inplace_predict(X), prob),
        measure("xgboost inplace_predict (margin)", repeat,
                lambda: bst.inplace_predict(X, predict_type="margin"), margin),
    ]

    try:
        import treelite
        import treelite.gtil
        facts["treelite"] = treelite.__version__
        started = time.perf_counter()
        model = treelite.frontend.from_xgboost(booster)
        convert_s = time.perf_counter() - started
    except Exception as exc:
        traceback.print_exc()
        rows.append(Row("treelite GTIL", error=f"{type(exc).__name__}: {exc}"))
        return rows, facts
    facts["treelite_output_shape"] = list(np.shape(treelite.gtil.predict(model, X[:10])))
    facts["treelite_output_dtype"] = str(treelite.gtil.predict(model, X[:10]).dtype)
    rows += [
        measure("treelite GTIL", repeat,
                lambda: treelite.gtil.predict(model, X, nthread=threads), prob, convert_s),
        measure("treelite GTIL (margin)", repeat,
                lambda: treelite.gtil.predict(model, X, nthread=threads, pred_margin=True),
                margin, convert_s),
    ]

    try:
        import tl2cgen
        facts["tl2cgen"] = tl2cgen.__version__
    except Exception as exc:
        traceback.print_exc()
        rows.append(Row("tl2cgen", error=f"{type(exc).__name__}: {exc}"))
        return rows, facts

    def annotated() -> dict[str, Any]:
        notes = workdir / "annotation.json"
        tl2cgen.annotate_branch(model, tl2cgen.DMatrix(X[:ANNOTATE_ROWS], dtype="float32"),
                                notes, nthread=threads)
        return {"annotate_in": str(notes)}

    variants: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("tl2cgen", dict),
        ("tl2cgen quantize", lambda: {"quantize": 1}),
        ("tl2cgen annotate", annotated),
    ]
    for name, extra in variants:
        libpath = workdir / f"{name.replace(' ', '_')}.so"
        try:
            started = time.perf_counter()
            params = {"parallel_comp": 8, **extra()}
            tl2cgen.export_lib(model, toolchain="gcc", libpath=str(libpath), params=params,
                               nthread=threads)
            compile_s = convert_s + time.perf_counter() - started
            predictor = tl2cgen.Predictor(str(libpath), nthread=threads)
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(name, error=f"{type(exc).__name__}: {exc}"))
            continue
        sample = predictor.predict(tl2cgen.DMatrix(X[:10], dtype="float32"))
        facts[f"{name}_output_shape"] = list(np.shape(sample))
        facts[f"{name}_output_dtype"] = str(np.asarray(sample).dtype)

        def predict(p: Any = predictor, pred_margin: bool = False) -> np.ndarray:
            return p.predict(tl2cgen.DMatrix(X, dtype="float32"), pred_margin=pred_margin)

        rows += [
            measure(name, repeat, predict, prob, compile_s),
            measure(f"{name} (margin)", repeat, lambda p=predictor: predict(p, True), margin,
                    compile_s),
        ]
    return rows, facts


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def table(rows: list[Row], n: int) -> str:
    """The markdown table; "vs inplace_predict" is the baseline's seconds over this path's
    (> 1 = faster), probabilities against the probability baseline, margins against margins."""
    base = {False: rows[0].seconds, True: rows[1].seconds}
    lines = ["| path | seconds | rows/s | vs inplace_predict | CPU s | rows differing "
             "(float32 bits) | max abs diff | compile s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.error:
            error = r.error.splitlines()[0].replace("|", "/")
            lines.append(f"| {r.path} | failed: {error} | | | | | | "
                         f"{_num(r.compile_s, '.2f')} |")
            continue
        assert r.seconds is not None
        ref = base[r.path.endswith("(margin)")]
        ratio = f"{ref / r.seconds:.2f}x" if ref else "n/a"
        lines.append(f"| {r.path} | {r.seconds:.3f} | {n / r.seconds:,.0f} | {ratio} | "
                     f"{_num(r.cpu, '.2f')} | {r.differing:,} | {_num(r.max_abs, '.3g')} | "
                     f"{_num(r.compile_s, '.2f')} |")
    return "\n".join(lines)


def gcc_version() -> str:
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
        return out.stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unavailable: {exc}"


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, default=Path("/tmp/compiled_site"),
                    help="folder holding treelite and tl2cgen (first on sys.path)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(args.site))

    load_before = os.getloadavg()
    booster, X = load_input(args.rows, args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_compiled_") as tmp:
        rows, facts = run_all(booster, X, args.repeat, args.threads, Path(tmp))
    load_end = os.getloadavg()

    print(table(rows, len(X)))
    print(json.dumps({
        "rows": len(X), "features": X.shape[1], "trees": TREES, "depth": DEPTH,
        "threads": args.threads, "repeat": args.repeat,
        "xgboost": xgb.__version__, "treelite": facts.pop("treelite", None),
        "tl2cgen": facts.pop("tl2cgen", None), "gcc": gcc_version(), "numpy": np.__version__,
        "python": platform.python_version(), "processor": platform.processor(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "loadavg_before_load": load_before, "loadavg_start": load_start,
        "loadavg_end": load_end, **facts,
    }))


if __name__ == "__main__":
    main()
