"""Deliberate faults added to a built demo database: a label leak and a drifted feature.

Not part of the committed demo: the tests and the README use them to show `pyml profile`,
`pyml train` and `pyml drift` catching what they are meant to catch.
"""

from __future__ import annotations

import duckdb

LEAK_COLUMN = "account_closed_flag"  # the deliberately leaky demo column


def add_label_leak(con: duckdb.DuckDBPyConnection, relation: str = "main.customer_features",
                   target: str = "churned_next_90d", column: str = LEAK_COLUMN,
                   flip_per_mille: int = 5) -> None:
    """Add a column copied from the label (flipped for ~0.5% of rows): a deliberate leak.

    It mimics a status field written after the outcome (NULL where the label is unknown, as
    it would be at scoring time). `pyml profile` must warn about it and `pyml train` must
    refuse it; the demo tests prove both. Not part of the committed demo.
    """
    schema, table = relation.split(".")
    rel = f'"{schema}"."{table}"'
    con.execute(f'alter table {rel} add column "{column}" integer')
    con.execute(f'update {rel} set "{column}" = case when "{target}" is null then null '
                f'when hash(customer_id, as_of_date) % 1000 < {int(flip_per_mille)} '
                f'then 1 - "{target}"::integer else "{target}"::integer end')


def shift_feature(con: duckdb.DuckDBPyConnection, column: str,
                  relation: str = "main.customer_features", factor: float = 3.0) -> None:
    """Multiply one numeric feature by `factor` (a unit change upstream): deliberate drift."""
    schema, table = relation.split(".")
    con.execute(f'update "{schema}"."{table}" set "{column}" = "{column}" * ?', [factor])
