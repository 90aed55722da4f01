"""Deterministic, seeded generator of a dirty subscription business: the pyml demo data.

The business is simulated month by month from 2024-01-01 to 2025-12-31. Each customer has a
latent engagement that random-walks; usage events follow it, payments are monthly (some fail,
more often for a latent bad-card trait), support tickets rise when things go wrong, and the
monthly churn hazard rises with falling usage, failed payments, unhappy tickets and a plan that
does not fit the customer. After churn there is no activity, so churn and revenue in the next
90 days are learnable, but not trivially, from behaviour before an as-of date.

Every raw column is text, as it would arrive from a source system, and every table carries a
few percent of dirt: exact duplicate rows, repeated ids with newer versions, messy case and
whitespace, several date formats, impossible dates, blank strings, absurd amounts, unknown
codes and orphan foreign keys. Cleansing is the job of the dbt staging models.

    python -m pyml.demo_data --out seeds/                        # the committed dbt seeds
    python -m pyml.demo_data --scale 200000 --duckdb bench.duckdb   # raw.* tables for benchmarks

The same seed gives byte-identical CSV files.
"""

# The docstring above is also `python -m pyml.demo_data --help`. The modules: `business` (the
# catalogue and the clean simulation), `dirt` (text rendering and the dirt), `tables` (the raw
# tables, `generate`), `write` (CSV and DuckDB), `faults` (a label leak and a drifted feature
# for the demo's checks) and `__main__` (the command line).

from __future__ import annotations

from .business import Columns, Tables
from .faults import LEAK_COLUMN, add_label_leak, shift_feature
from .tables import generate
from .write import row_count, write_csv, write_duckdb, write_scaled_duckdb

__all__ = ["LEAK_COLUMN", "Columns", "Tables", "add_label_leak", "generate", "row_count",
           "shift_feature", "write_csv", "write_duckdb", "write_scaled_duckdb"]
