"""Benchmark of the data path: pyml vs the naive pandas path vs bare XGBoost.

    python -m bench.data_path --rows 1000000 5000000 --variants float cat

Each path runs in its own child process (`bench.paths`) so its peak RSS is its own. Every
ratio is measured within this run: scoring against bare `inplace_predict` on an in-memory
float32 matrix (the physical limit), training against the naive `.df()` + `XGBClassifier`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.synth import synth_db


def run_path(path: str, db: Path, variant: str, batch_size: int,
             max_memory: int | None = None, rounds: int | None = None,
             unordered: bool = False) -> dict[str, Any]:
    """Run one path in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, "-m", "bench.paths", path, "--db", str(db), "--variant", variant,
           "--batch-size", str(batch_size)]
    if max_memory:
        cmd += ["--max-memory", str(max_memory)]
    if rounds:
        cmd += ["--rounds", str(rounds)]
    if unordered:
        cmd += ["--unordered"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"{path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_one(rows: int, variant: str, batch_size: int, repeat: int,
              score_only: bool = False, train_only: bool = False) -> list[dict[str, Any]]:
    """All paths on one table; returns result rows with ratios filled in."""
    db = synth_db(rows, variant)
    results = []
    # pyml trains first: it also stores the model every scoring path uses.
    paths = ["train_pyml", "train_naive", "score_limit", "score_naive", "score_pyml"]
    if score_only:
        # The model that scoring uses, trained on a 200k-row sample; not a measured path.
        run_path("train_sample", db, variant, batch_size)
        paths = paths[2:]
    elif train_only:
        paths = paths[:2]
    for path in paths:
        best = None
        for _ in range(repeat):
            r = run_path(path, db, variant, batch_size)
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        assert best is not None
        best.update(variant=variant, n=rows)
        print(json.dumps(best), file=sys.stderr)
        results.append(best)
    by = {r["path"]: r for r in results}
    for r in results:
        base = (by["score_limit"] if r["path"].startswith("score")
                else by.get("train_naive", r))
        if r["path"].startswith("score"):
            r["ratio"] = base["seconds"] / r["seconds"]  # throughput relative to the limit
        else:
            r["ratio"] = r["seconds"] / base["seconds"]  # time relative to naive
        r["rss_ratio"] = r["peak_rss_mb"] / base["peak_rss_mb"]
    return results


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of results."""
    lines = ["| path | variant | rows | seconds | rows/s | ratio | peak RSS MB | RSS ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        kind = "x limit throughput" if r["path"].startswith("score") else "x naive time"
        lines.append(
            f"| {r['path']} | {r['variant']} | {r['n']:,} | {r['seconds']:.2f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['ratio']:.2f} {kind} | "
            f"{r['peak_rss_mb']:,.0f} | {r['rss_ratio']:.2f} |"
        )
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """The issue's targets, each checked against this run's numbers."""
    lines = ["| target | measured | verdict |", "| --- | --- | --- |"]

    def row(name: str, value: float, ok: bool, fmt: str = "{:.2f}") -> None:
        lines.append(f"| {name} | {fmt.format(value)} | {'met' if ok else 'NOT met'} |")

    by = {(r["path"], r["variant"], r["n"]): r for r in results}
    sizes = sorted({r["n"] for r in results})
    for variant in sorted({r["variant"] for r in results}):
        for n in sizes:
            score = by.get(("score_pyml", variant, n))
            train = by.get(("train_pyml", variant, n))
            if score:
                row(f"score {variant} {n:,}: throughput x limit >= 0.85", score["ratio"],
                    score["ratio"] >= 0.85)
            if train:
                row(f"train {variant} {n:,}: time x naive <= 0.9", train["ratio"],
                    train["ratio"] <= 0.9)
                row(f"train {variant} {n:,}: peak RSS x naive <= 0.7", train["rss_ratio"],
                    train["rss_ratio"] <= 0.7)
        lo, hi = sizes[0], sizes[-1]
        a, b = by.get(("score_pyml", variant, lo)), by.get(("score_pyml", variant, hi))
        if a and b and hi > lo:
            scale = b["seconds"] / a["seconds"]
            expect = hi / lo
            row(f"score {variant}: time {hi:,}/{lo:,} within +-10% of {expect:.0f}", scale,
                abs(scale / expect - 1) <= 0.1)
            rss = b["peak_rss_mb"] / a["peak_rss_mb"]
            row(f"score {variant}: peak RSS {hi:,}/{lo:,} <= 1.2", rss, rss <= 1.2)
            row(f"score {variant}: peak RSS at {hi:,} <= 1 GB", b["peak_rss_mb"],
                b["peak_rss_mb"] <= 1024, "{:,.0f} MB")
    cat = {n: by.get(("score_pyml", "cat", n)) for n in sizes}
    flt = {n: by.get(("score_pyml", "float", n)) for n in sizes}
    for n in sizes:
        c, f = cat.get(n), flt.get(n)
        if c and f:
            rel = c["ratio"] / f["ratio"]
            row(f"score cat/float ratio {n:,} >= 0.7", rel, rel >= 0.7)
    return "\n".join(lines)


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000, 5_000_000])
    ap.add_argument("--variants", nargs="+", choices=("float", "cat"), default=["float", "cat"])
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2, help="runs per path (the fastest kept)")
    ap.add_argument("--score-only", action="store_true",
                    help="only the scoring paths (the model is trained on a 200k-row sample)")
    ap.add_argument("--train-only", action="store_true", help="only the training paths")
    args = ap.parse_args()
    results = []
    for variant in args.variants:
        for rows in args.rows:
            results += bench_one(rows, variant, args.batch_size, args.repeat, args.score_only,
                                 args.train_only)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(table(results))
    print()
    print(summary(results))


if __name__ == "__main__":
    main()
