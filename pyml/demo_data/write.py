"""Writing the raw tables: CSV seeds for dbt, or raw.* tables straight into DuckDB."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from .business import Columns, Tables
from .tables import generate


def row_count(cols: Columns) -> int:
    """Number of rows of a table given as columns."""
    return len(next(iter(cols.values())))


def write_csv(tables: Tables, out_dir: Path) -> list[Path]:
    """Write each table to `out_dir/<name>.csv` (header row, '\\n' line ends); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cols in tables.items():
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(cols)
            writer.writerows(zip(*cols.values(), strict=True))
        paths.append(path)
    return paths


def write_duckdb(tables: Tables, con: duckdb.DuckDBPyConnection, schema: str = "raw",
                 append: bool = False) -> None:
    """Write each table to `<schema>.<name>` (all VARCHAR) via Arrow; replace unless `append`."""
    import pyarrow as pa  # only needed for this path

    con.execute(f'create schema if not exists "{schema}"')
    for name, cols in tables.items():
        arrow = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
        con.register("_pyml_chunk", arrow)
        verb = "insert into {} select" if append else "create or replace table {} as select"
        con.execute(verb.format(f'"{schema}"."{name}"') + " * from _pyml_chunk")
        con.unregister("_pyml_chunk")


def write_scaled_duckdb(path: Path, n_customers: int, seed: int, chunk: int = 50_000,
                        ) -> dict[str, int]:
    """Generate `n_customers` in chunks of `chunk` straight into DuckDB; returns rows per table.

    Chunk k uses seed `seed + k` and an id offset, so memory stays bounded by the chunk size.
    """
    counts: dict[str, int] = {}
    with duckdb.connect(str(path)) as con:
        for k, first in enumerate(range(0, n_customers, chunk)):
            tables = generate(min(chunk, n_customers - first), seed + k, id_offset=first)
            if k:
                del tables["raw_plans"]
            write_duckdb(tables, con, append=k > 0)
            for name, cols in tables.items():
                counts[name] = counts.get(name, 0) + row_count(cols)
    return counts
