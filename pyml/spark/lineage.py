"""Fingerprints of a Spark training run's inputs, so `pyml train` skips what has not changed.

The same rule as on DuckDB (pyml.data.lineage): the spec, the feature model's SQL from dbt's
manifest, and the data — the used columns' names and types, the row count and two sums of
per-row 64-bit hashes (Spark's xxhash64, once plain and once salted), computed in Spark SQL
so no row leaves the cluster. A sum does not depend on row order or partitioning, and a
duplicated row counts twice. The sums are Spark's own hashes, so a Spark fingerprint is only
ever compared with versions in the Spark registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyml.data.encode import Feature
from pyml.data.lineage import data_digest, lineage_of, used_columns
from pyml.dbt.project import Project
from pyml.dbt.spec import ModelSpec
from pyml.engines.spark import qualified, quote, sql
from pyml.store.registry import Lineage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SALT = "pyml-lineage"


def fingerprints(spark: SparkSession, project: Project | None, spec: ModelSpec,
                 features: Sequence[Feature], types: Mapping[str, str],
                 how: Mapping[str, Any]) -> Lineage:
    """All of a Spark training run's fingerprints (one aggregate job over the relation);
    `how` it trains (the engine, the number of workers) is part of the spec's."""
    names = used_columns(spec, features)
    cols = ", ".join(quote(n) for n in names)
    row = sql(spark, f"select count(*), "
                     f"cast(sum(cast(xxhash64({cols}) as decimal(38, 0))) as string), "
                     f"cast(sum(cast(xxhash64(:salt, {cols}) as decimal(38, 0))) as string) "
                     f"from {qualified(spec.schema, spec.relation)}", {"salt": SALT}).collect()[0]
    rows = int(row[0])
    data = data_digest(names, types, rows, (row[1], row[2]))
    return lineage_of(project, spec, how, data, rows)
