"""`python -m pyml.demo_data`: write the CSV seeds and/or raw DuckDB tables."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb

from pyml import demo_data
from pyml.demo_data import (
    LEAK_COLUMN,
    add_label_leak,
    generate,
    row_count,
    write_csv,
    write_scaled_duckdb,
)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: write CSV seeds and/or raw DuckDB tables."""
    parser = argparse.ArgumentParser(prog="python -m pyml.demo_data",
                                     description=demo_data.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory for the raw_*.csv seeds")
    parser.add_argument("--customers", type=int, default=3000, help="customers (default 3000)")
    parser.add_argument("--scale", type=int, help="customers for a --duckdb benchmark run")
    parser.add_argument("--duckdb", type=Path, help="DuckDB file to write raw.* tables into")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--leaky", type=Path, metavar="DUCKDB",
                        help="add the leaky column account_closed_flag to main.customer_features "
                             "in this built demo database (to see `pyml profile` / `pyml "
                             "train` catch it)")
    args = parser.parse_args(argv)
    if args.leaky is not None:
        with duckdb.connect(str(args.leaky)) as con:
            add_label_leak(con)
        print(f"added {LEAK_COLUMN} (a copy of churned_next_90d) to main.customer_features "
              f"in {args.leaky}")
        return
    if args.out is None and args.duckdb is None:
        parser.error("give --out DIR and/or --duckdb PATH")
    if args.scale is not None and args.duckdb is None:
        parser.error("--scale needs --duckdb PATH")
    n = args.scale or args.customers
    began = time.perf_counter()
    if args.out is not None:
        tables = generate(n, args.seed)
        for path in write_csv(tables, args.out):
            print(f"wrote {path} ({row_count(tables[path.stem]):,} rows)")
    if args.duckdb is not None:
        counts = write_scaled_duckdb(args.duckdb, n, args.seed)
        for name, rows in counts.items():
            print(f"wrote raw.{name} in {args.duckdb} ({rows:,} rows)")
    print(f"done in {time.perf_counter() - began:.1f}s")


if __name__ == "__main__":
    main()
