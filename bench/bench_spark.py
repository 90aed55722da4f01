"""Spark engine vs pyml's DuckDB path: train and score the same generated table.

    python -m bench.bench_spark --rows 1000000 5000000

For each size, bench.synth writes the `float` table (N rows x 20 DOUBLE features, 5% NULL,
binary target) to DuckDB and the same rows to Parquet, which a Spark child loads into the
catalog table bench.synth. Then each path runs in its own child process, one at a time:

- `duckdb_train` / `duckdb_score`: pyml's DuckDB library path (bench.paths train_pyml /
  score_pyml: split in SQL, float32 matrix, QuantileDMatrix, everything `pyml train` stores;
  scoring into ml.bench_predictions), XGBoost on 2 threads.
- `spark_train` / `spark_score`: pyml.spark.train.train_one (xgboost.spark, one worker per
  core of local[2]) and pyml.spark.score.score_relation (the booster broadcast to the
  executors, predictions written to the catalog), in a local[2] session with a Hive catalog
  in bench/out/spark_home. The session's start-up is timed apart, not in the path.

The model is bench.paths' (binary, 100 trees of depth 6, hist, random split holding out 20%,
no early stopping), so both engines do the same work. The parent samples the resident memory
of each child's whole process tree (the JVM and Python workers included) every 0.2 s and
reports its peak (or the child's own ru_maxrss where larger: the DuckDB paths report it).
Rows/s per core divides by the 2 cores both engines use. `--from-log FILE` prints the table
again from a run's stderr (one JSON line per path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.synth import OUT, TABLE, generate

CORES = 2
SPARK_HOME = OUT / "spark_home"
SPARK_SCHEMA = "bench"
SPARK_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "8g",  # local mode: the executors live in the driver's JVM
    "spark.sql.warehouse.dir": str(SPARK_HOME / "warehouse"),
    "spark.hadoop.javax.jdo.option.ConnectionURL":
        f"jdbc:derby:;databaseName={SPARK_HOME / 'metastore_db'};create=true",
    "spark.driver.extraJavaOptions": f"-Dderby.system.home={SPARK_HOME}",
}


# -- children -------------------------------------------------------------------------------

def _spark() -> Any:
    from pyml.engines.spark import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    started = time.perf_counter()
    spark = spark_session("local[2]", SPARK_CONF, "bench")
    spark.sparkContext.setLogLevel("ERROR")
    spark.sql("select 1").collect()
    _spark.startup = time.perf_counter() - started  # type: ignore[attr-defined]
    return spark


def spark_load(parquet: Path) -> dict[str, Any]:
    """bench.synth in the Spark catalog from the Parquet copy of the DuckDB table."""
    spark = _spark()
    started = time.perf_counter()
    spark.sql(f"create database if not exists {SPARK_SCHEMA}")
    spark.sql(f"drop table if exists {SPARK_SCHEMA}.{TABLE}")
    spark.read.parquet(str(parquet)).write.format("parquet").saveAsTable(
        f"{SPARK_SCHEMA}.{TABLE}")
    rows = spark.table(f"{SPARK_SCHEMA}.{TABLE}").count()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def spark_train(parquet: Path) -> dict[str, Any]:
    """pyml.spark.train.train_one on bench.synth (the bench.paths model)."""
    from bench.paths import bench_spec
    from pyml.spark.train import train_one

    spark = _spark()
    spec = replace(bench_spec(), schema=SPARK_SCHEMA, feature_model=f"{SPARK_SCHEMA}.{TABLE}")
    started = time.perf_counter()
    result = train_one(spark, None, spec)
    auc = next(m.value for m in result.metrics if m.name == "auc")
    return {"seconds": time.perf_counter() - started, "rows": sum(result.rows[:3]), "auc": auc}


def spark_score(parquet: Path) -> dict[str, Any]:
    """pyml.spark.score.score_relation of bench.synth with the version just trained."""
    from bench.paths import MODEL
    from pyml.spark.score import score_relation
    from pyml.store.spark_registry import load_version

    spark = _spark()
    stored = load_version(spark, MODEL)
    started = time.perf_counter()
    result = score_relation(spark, stored, (SPARK_SCHEMA, TABLE))
    return {"seconds": time.perf_counter() - started, "rows": result.rows}


CHILDREN = {"spark_load": spark_load, "spark_train": spark_train, "spark_score": spark_score}


# -- parent ---------------------------------------------------------------------------------

def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        stack += [c for c, p in parents.items() if p == pid]
    return total / 2**20


def run_child(argv: list[str]) -> dict[str, Any]:
    """Run one path in a child process; its JSON line plus the tree's peak RSS."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    # The 0.2 s sampling can miss a short spike that the child's own ru_maxrss caught (the
    # DuckDB paths report it): the peak is the larger of the two.
    result["tree_peak_mb"] = round(max(peak[0], result.get("peak_rss_mb", 0.0)))
    return result


def bench_rows(rows: int) -> list[dict[str, Any]]:
    """Every path at one size."""
    db = OUT / f"spark_synth_{rows}.duckdb"
    parquet = OUT / f"spark_synth_{rows}.parquet"
    db.unlink(missing_ok=True)
    generate(db, rows, "float")
    import duckdb

    con = duckdb.connect(str(db))
    con.execute(f"copy {TABLE} to '{parquet}' (format parquet)")
    con.close()
    results = []
    for name, argv in [
        ("duckdb_train", ["-m", "bench.paths", "train_pyml", "--db", str(db)]),
        ("duckdb_score", ["-m", "bench.paths", "score_pyml", "--db", str(db)]),
        ("spark_load", ["-m", "bench.bench_spark", "--child", "spark_load", str(parquet)]),
        ("spark_train", ["-m", "bench.bench_spark", "--child", "spark_train", str(parquet)]),
        ("spark_score", ["-m", "bench.bench_spark", "--child", "spark_score", str(parquet)]),
    ]:
        result = run_child(argv)
        result.update(path=name, rows=rows)
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: time, rows/s per core, peak memory, AUC, Spark/DuckDB ratios."""
    by = {(r["path"], r["rows"]): r for r in results}
    lines = ["| path | rows | seconds | rows/s per core | peak RSS MB (tree) | AUC | "
             "Spark / DuckDB time | Spark / DuckDB RSS |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["path"] == "spark_load":
            continue
        ratio_t = ratio_m = ""
        if r["path"].startswith("spark_"):
            base = by.get(("duckdb_" + r["path"][6:], r["rows"]))
            if base:
                ratio_t = f"{r['seconds'] / base['seconds']:.2f}"
                ratio_m = f"{r['tree_peak_mb'] / base['tree_peak_mb']:.2f}"
        auc = f"{r['auc']:.4f}" if "auc" in r else ""
        lines.append(f"| {r['path']} | {r['rows']:,} | {r['seconds']:.1f} | "
                     f"{r['rows'] / r['seconds'] / CORES:,.0f} | {r['tree_peak_mb']:,} | "
                     f"{auc} | {ratio_t} | {ratio_m} |")
    sizes = sorted({r["rows"] for r in results})
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        growth = ", ".join(
            f"{p} {by[(p, hi)]['seconds'] / by[(p, lo)]['seconds']:.2f}x"
            for p in ("duckdb_train", "spark_train", "duckdb_score", "spark_score")
            if (p, lo) in by and (p, hi) in by)
        lines.append(f"\nTime from {lo:,} to {hi:,} rows ({hi / lo:.0f}x the rows): {growth}.")
    starts = [r["spark_startup_s"] for r in results if "spark_startup_s" in r]
    if starts:
        lines.append(f"Spark session start-up (not in the times above): "
                     f"{min(starts):.1f}-{max(starts):.1f} s per process.")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark (or, with --child, one Spark path) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--from-log", type=Path,
                    help="print the table of an earlier run's JSON lines (its stderr)")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("parquet", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = CHILDREN[args.child](args.parquet)
        result["spark_startup_s"] = round(_spark.startup, 1)  # type: ignore[attr-defined]
        print(json.dumps(result), flush=True)
        return
    if args.from_log:
        logged = [json.loads(line) for line in args.from_log.read_text().splitlines()
                  if line.startswith("{")]
        for r in logged:
            r["tree_peak_mb"] = round(max(r["tree_peak_mb"], r.get("peak_rss_mb", 0.0)))
        print(table(logged))
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    results = []
    for rows in args.rows:
        results += bench_rows(rows)
    print(table(results))


if __name__ == "__main__":
    main()
