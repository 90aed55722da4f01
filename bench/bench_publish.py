"""Publishing for BI tools: the two designs issue 17 weighed, timed in one process.

    python -m bench.bench_publish --db demo.duckdb      # after `make demo`
    python -m bench.bench_publish --rows 1000000        # a synthetic 1M-row predictions table

(a) "copy": a new DuckDB file with each relation copied in (ATTACH, CREATE TABLE AS, COMMENTs,
DETACH), renamed over the old BI file. (b) "parquet" (what `pyml publish` does,
pyml.store.publish): each relation to a Parquet file renamed over the old one, and a new
DuckDB file of views over them renamed over the old BI file. Both leave readers of the old
file undisturbed; they differ in what a connection held open reads after a publish (see
docs/reliability.md): (a) its old snapshot until every connection of its process to that
file has closed (DuckDB shares one instance per file and process), (b) the new rows on its
next query. Prints one line per design and size, and the ratio parquet / copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from pyml.store.publish import publish

REPEATS = 5


def copy_publish(con: duckdb.DuckDBPyConnection, relations: Sequence[tuple[str, str]],
                 path: Path) -> None:
    """Design (a): a whole new DuckDB file, then one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    con.execute(f"attach '{tmp}' as bi (read_write)")
    try:
        for schema, name in relations:
            con.execute(f'create schema if not exists bi."{schema}"')
            con.execute(f'create table bi."{schema}"."{name}" as select * from '
                        f'"{schema}"."{name}"')
            for column, comment in con.execute(
                    "select column_name, comment from duckdb_columns() where database_name = "
                    "current_database() and schema_name = ? and table_name = ? and comment "
                    "is not null", [schema, name]).fetchall():
                text = comment.replace("'", "''")
                con.execute(f'comment on column bi."{schema}"."{name}"."{column}" is '
                            f"'{text}'")
    finally:
        con.execute("detach bi")
    os.replace(tmp, path)


def synthetic(folder: Path, rows: int) -> tuple[Path, list[tuple[str, str]]]:
    """A database with one predictions table of `rows` rows, shaped like the demo's churn
    predictions (key, as-of date, probability, prediction, model_version, scored_at)."""
    db = folder / "synthetic.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema ml")
    con.execute(f"""create table ml.churn_predictions as select range as customer_id,
        date '2024-01-01' + (range % 365)::integer as as_of_date,
        hash(range) % 1000 / 1000.0 as probability, hash(range) % 2 = 0 as prediction,
        3 as model_version, now()::timestamp as scored_at from range({rows})""")
    con.execute("comment on column ml.churn_predictions.probability is 'P(churn)'")
    con.close()
    return db, [("ml", "churn_predictions")]


def existing(db: Path, folder: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A copy of a built demo database: its prediction tables and customers_at_risk."""
    copy = folder / "demo.duckdb"
    shutil.copyfile(db, copy)
    con = duckdb.connect(str(copy), read_only=True)
    found = con.execute("select schema_name, table_name from duckdb_tables() where "
                        "(schema_name = 'ml' and table_name like '%\\_predictions' escape '\\')"
                        " or table_name = 'customers_at_risk' order by all").fetchall()
    con.close()
    return copy, [(str(s), str(t)) for s, t in found]


def _read_all(path: Path, relations: Sequence[tuple[str, str]]) -> None:
    """What a dashboard does on a fresh connection: scan each published table once."""
    con = duckdb.connect(str(path), read_only=True)
    for schema, name in relations:
        columns = [c for (c,) in con.execute(
            "select column_name from duckdb_columns() where schema_name = ? and table_name = ?",
            [schema, name]).fetchall()]
        counts = ", ".join(f'count("{c}")' for c in columns)
        con.execute(f'select count(*), {counts} from "{schema}"."{name}"').fetchall()
    con.close()


def timed(run: Callable[[], None]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a built demo database (copied first)")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows of the synthetic predictions table (without --db)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db, relations = existing(args.db, folder) if args.db else synthetic(folder, args.rows)
        con = duckdb.connect(str(db), read_only=True)
        rows = sum(con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0]  # type: ignore[index]
                   for s, t in relations)
        copy = timed(lambda: copy_publish(con, relations, folder / "copy_bi.duckdb"))
        parquet = timed(lambda: publish(con, relations, folder / "parquet_bi.duckdb") and None)
        con.close()
        reads = {name: timed(lambda name=name: _read_all(folder / f"{name}_bi.duckdb",
                                                         relations))
                 for name in ("copy", "parquet")}
    what = f"{len(relations)} tables, {rows:,} rows"
    print(f"copy (new DuckDB file + rename):      {copy:.3f}s  ({what}, median of {REPEATS})")
    print(f"parquet (files + views, pyml publish): {parquet:.3f}s  ({what}, median of {REPEATS})")
    print(f"ratio parquet / copy: {parquet / copy:.2f}")
    print(f"a reader's full scan (connect, count every column, close): copy "
          f"{reads['copy']:.3f}s, parquet {reads['parquet']:.3f}s, ratio "
          f"{reads['parquet'] / reads['copy']:.2f}")


if __name__ == "__main__":
    main()
