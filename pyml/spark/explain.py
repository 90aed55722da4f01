"""`pyml explain` on a Spark target: exact TreeSHAP contributions computed on the executors,
ml.<model>_explanations swapped in (pyml.store.spark_writer).

The booster travels to the executors as its UBJ bytes in a broadcast, as for scoring
(pyml.spark.score); each partition's Arrow batches go through `ExplainBatch`, the very code
that explains DuckDB's batches (pyml.verbs.explain: XGBoost's `pred_contribs`, the top K by
|contribution| as pyml.modelling.shap picks them). The table has the DuckDB table's columns
and types; `feature_value` is the value as Spark casts it to a string.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from pyml.data.encode import F32_MAX, check_schema
from pyml.dbt.spec import ModelSpec
from pyml.dbt.spec_diff import yaml_notice
from pyml.engines.spark import qualified, quote, relation_columns, sql
from pyml.errors import DataError
from pyml.modelling.model import LoadedModel, check_outputs, key_types
from pyml.session import Session
from pyml.spark import frames
from pyml.spark.score import model_payload, payload_model
from pyml.store import spark_registry
from pyml.store.names import explanations_table
from pyml.store.registry import StoredModel
from pyml.store.spark_writer import replace_table
from pyml.tasks import EXPLANATION_COLUMNS
from pyml.verbs.explain import (
    DEFAULT_TOP_K,
    ExplainBatch,
    ExplainResult,
    explanation_comments,
    explanation_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Log = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def explain(session: Session, specs: Sequence[ModelSpec], *, top_k: int = DEFAULT_TOP_K,
            version: int | None = None) -> list[ExplainResult]:
    """Explain each spec's score relation with its champion (or the given version) on
    Spark."""
    spark = session.spark()
    results = []
    for spec in specs:
        stored = spark_registry.load_version(spark, spec.name, version)
        notice = yaml_notice(spec, stored.version, stored.spec, stored.target.classes)
        if notice:  # the version explains as trained, whatever the YAML says now
            session.log(notice)
        results.append(explain_relation(spark, stored, session.scored_relation(spec),
                                        top_k=top_k, log=session.log))
    return results


def explain_relation(spark: SparkSession, stored: StoredModel, relation: tuple[str, str], *,
                     top_k: int = DEFAULT_TOP_K, log: Log = _noop) -> ExplainResult:
    """Explain every row of one relation and swap in ml.<model>_explanations."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{stored.name}' v{stored.version}"
    check_outputs(stored, EXPLANATION_COLUMNS, predictions=False)
    columns = relation_columns(spark, schema, name)
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    top_k = min(top_k, len(stored.features))  # what a row can have (messages, comments)
    # The row count and the float32 range check in one pass (an executor's error would
    # reach the driver wrapped in Spark's, so values are checked first).
    ranges = frames.range_items(stored.features)
    total, *bad = sql(spark, f"select count(*){''.join(', ' + r for r in ranges)} "
                             f"from {source}",
                      {"f32_max": F32_MAX} if ranges else None).collect()[0]
    if total == 0:
        raise DataError(f"{where}: {label} is empty; nothing to explain "
                        "(did `dbt build` run?)")
    frames.check_range(stored.features, bad, where)
    model = LoadedModel(stored)
    texts = [f"cast({quote(f.name)} as string) as {quote(f'__pyml_t{i}')}"
             for i, f in enumerate(stored.features)]
    frame = sql(spark, f"select {', '.join(quote(k) for k in stored.key)}, "
                       f"{', '.join(frames.raw_exprs(stored.features))}, "
                       f"{', '.join(texts)} from {source}")
    log(f"[{stored.name}] explaining {total:,} rows of {label} with version {stored.version} "
        f"(top {top_k} features per row) on Spark")
    explained = explain_frame(spark, frame, model, top_k)
    from pyspark.sql import functions as F

    explained_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    explained = explained.withColumn("model_version", F.lit(stored.version).cast("int")) \
        .withColumn("explained_at", F.lit(explained_at).cast("timestamp"))
    written = replace_table(
        spark, explanations_table(stored.name), explained, expected_rows=int(total) * top_k,
        where=f"{where}: {label}",
        comment=f"Top {top_k} TreeSHAP contributions per row of {label} for pyml model "
                f"'{stored.name}' v{stored.version} (pyml explain)",
        column_comments=explanation_comments(model, label))
    seconds = time.perf_counter() - started
    log(f"[{stored.name}] wrote {written.table}: {int(total):,} rows x {top_k} features "
        f"in {seconds:.1f}s")
    return ExplainResult(stored.name, stored.version, written.table, int(total), top_k,
                         seconds)


def explain_frame(spark: SparkSession, frame: DataFrame, model: LoadedModel, top_k: int
                  ) -> DataFrame:
    """`frame` (key columns, one raw column per feature, then one text column per feature)
    -> the explanation rows, computed on the executors with the broadcast booster."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    stored = model.stored
    n_keys = len(stored.key)
    schema = StructType([*frame.schema.fields[:n_keys],
                         *[StructField(f.name, from_arrow_type(f.type), True)
                           for f in explanation_schema(stored, [])]])
    payload = spark.sparkContext.broadcast(model_payload(stored))

    # The closure takes plain values only: Spark pickles it for the executors.
    def explain(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        local = LoadedModel(payload_model(payload.value))  # once per task, not per batch
        run: ExplainBatch | None = None
        for batch in batches:
            if run is None:  # the keys' Arrow types as Spark delivers them
                fields = [batch.schema.field(i) for i in range(n_keys)]
                run = ExplainBatch(local, n_keys, top_k, explanation_schema(
                    local.stored, fields), batch.num_rows, _noop)
            yield run(batch)

    return frame.mapInArrow(explain, schema)
