"""What the staleness check (pyml.store.staleness) adds to `pyml models` / `predictions`.

    python -m bench.bench_staleness [--rows 1000000 10000000] [--repeat 5]

For each size, one ml.m_predictions table (id, probability, model_version) in a fresh DuckDB
file: first written by one version, then with a tenth of the rows by another (an incremental
score over a promotion). The baseline, measured in the same run, is what `pyml predictions`
reads anyway: the top 10 rows by probability. Best of `--repeat`; prints milliseconds and the
check's cost as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import duckdb

from bench.timing import best
from pyml.store import staleness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| rows | table | versions | check ms | top-10 read ms (baseline) | check / baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        con = duckdb.connect(str(Path(folder) / "bench.duckdb"))
        con.execute("create schema ml")
        for n in args.rows:
            con.execute("create or replace table ml.m_predictions as select range as id, "
                        "random() as probability, 3::integer as model_version from range(?)",
                        [n])
            for label in ("one version", "mixed"):
                if label == "mixed":
                    con.execute("update ml.m_predictions set model_version = 2 "
                                "where id % 10 = 0")
                versions = staleness._versions(con, "m_predictions")
                check = 1000 * best(lambda: staleness._versions(con, "m_predictions"),
                                    args.repeat)
                top = 1000 * best(lambda: con.execute("select * from ml.m_predictions order "
                                                      "by probability desc limit 10").fetchall(),
                                  args.repeat)
                print(f"| {n:,} | {label} | {versions} | {check:.1f} | {top:.1f} | "
                      f"{check / top:.2f} |")
        con.close()


if __name__ == "__main__":
    main()
