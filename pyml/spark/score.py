"""`pyml score` on a Spark target: the booster broadcast to the executors, each partition
scored with `mapInArrow`, ml.<model>_predictions swapped in (pyml.store.spark_writer).

Each executor decodes the broadcast UBJ bytes once per task and encodes its Arrow batches
with pyml.data.encode's `Encoder` (numbers as DOUBLE -> float32, categories -> codes,
NULL/unseen -> missing) and predicts with `LoadedModel.predict_matrix`: the very code
`pyml score` runs on DuckDB, so the columns and the numbers are the same as there (and as
plain XGBoost's `inplace_predict` on the same rows). Executors need pyml installed, as they
need pyspark and xgboost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pyml.data.encode import F32_MAX, Feature, Target, check_schema
from pyml.dbt.spec import ModelSpec
from pyml.engines.spark import qualified, quote, relation_columns, sql
from pyml.errors import EngineError
from pyml.modelling.model import LoadedModel, check_key_counts, check_outputs, key_types
from pyml.session import Session
from pyml.spark import frames
from pyml.store import spark_registry
from pyml.store.names import predictions_table
from pyml.store.registry import StoredModel
from pyml.store.spark_writer import replace_table
from pyml.tasks import PREDICTION_EXTRAS
from pyml.verbs.score import ScoreResult, prediction_comments

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Log = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def score(session: Session, specs: Sequence[ModelSpec], *, version: int | None = None
          ) -> list[ScoreResult]:
    """Score every spec with its champion (or the given version) on Spark."""
    spark = session.spark()
    results = []
    for spec in specs:
        stored = spark_registry.load_version(spark, spec.name, version)
        results.append(score_relation(spark, stored, session.scored_relation(spec),
                                      log=session.log))
    return results


def score_relation(spark: SparkSession, stored: StoredModel, relation: tuple[str, str], *,
                   log: Log = _noop) -> ScoreResult:
    """Score one relation with one stored version and swap in its predictions view."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{stored.name}' v{stored.version}"
    columns = relation_columns(spark, schema, name)
    check_outputs(stored, PREDICTION_EXTRAS)
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    keys = [quote(k) for k in stored.key]
    any_null = " or ".join(f"{k} is null" for k in keys)
    # One pass: the row count, the key checks and the float32 range check (an executor's
    # error would reach the driver wrapped in Spark's, so values are checked first).
    ranges = frames.range_items(stored.features)
    total, distinct, null_keys, *bad = sql(
        spark, f"select count(*), count(distinct {', '.join(keys)}), count_if({any_null})"
               f"{''.join(', ' + r for r in ranges)} from {source}",
        {"f32_max": F32_MAX} if ranges else None).collect()[0]
    check_key_counts(where, label, stored.key, int(total), int(distinct), int(null_keys))
    frames.check_range(stored.features, bad, where)
    model = LoadedModel(stored)
    frame = sql(spark, f"select {', '.join(keys)}, "
                       f"{', '.join(frames.raw_exprs(stored.features))} from {source}")
    log(f"[{stored.name}] scoring {total:,} rows of {label} with version {stored.version} "
        "on Spark")
    scored = predict_frame(spark, frame, model)
    scored_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    from pyspark.sql import functions as F

    scored = scored.withColumn("model_version", F.lit(stored.version).cast("int")) \
        .withColumn("scored_at", F.lit(scored_at).cast("timestamp"))
    written = replace_table(
        spark, predictions_table(stored.name), scored, expected_rows=int(total),
        where=f"{where}: {label}",
        comment=f"Predictions of pyml model '{stored.name}' v{stored.version} for every row "
                f"of {label} (pyml score)",
        column_comments=prediction_comments(model, label))
    seconds = time.perf_counter() - started
    log(f"[{stored.name}] wrote {written.table}: {written.rows:,} rows in {seconds:.1f}s")
    return ScoreResult(stored.name, stored.version, written.table, written.rows, seconds, None)


def predict_frame(spark: SparkSession, frame: DataFrame, model: LoadedModel) -> DataFrame:
    """`frame` (key columns, then one raw column per feature) -> keys + prediction columns,
    computed on the executors with the broadcast booster."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    stored = model.stored
    n_keys = len(stored.key)
    outputs = model.output_columns()
    schema = StructType([*frame.schema.fields[:n_keys],
                         *[StructField(c.name, from_arrow_type(c.type), True)
                           for c in outputs]])
    payload = spark.sparkContext.broadcast(model_payload(stored))
    # The closure takes plain values only: Spark pickles it for the executors.
    names = [*stored.key, *[c.name for c in outputs]]

    def predict(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        local = LoadedModel(payload_model(payload.value))  # once per task, not per batch
        where = f"model '{local.name}'"
        for batch in batches:
            cols = [batch.column(n_keys + j) for j in range(len(local.stored.features))]
            preds = local.predict_matrix(local.encoder.matrix(cols, where))
            yield pa.RecordBatch.from_arrays(
                [*[batch.column(i) for i in range(n_keys)], *preds], names=names)

    return frame.mapInArrow(predict, schema)


def model_payload(stored: StoredModel) -> dict[str, Any]:
    """What the executors need of a version, as plain picklable data (the booster as its
    own UBJ bytes: nothing of XGBoost's is pickled)."""
    return {"name": stored.name, "version": stored.version, "task": stored.task,
            "target": (stored.target.dtype, list(stored.target.classes)),
            "key": list(stored.key), "features": [f.to_dict() for f in stored.features],
            "spec": stored.spec, "relation": stored.feature_relation,
            "created_at": stored.created_at, "booster": bytes(stored.booster.save_raw("ubj"))}


def payload_model(payload: dict[str, Any]) -> StoredModel:
    """The StoredModel back from `model_payload` (on an executor)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(payload["booster"]))
    dtype, classes = payload["target"]
    return StoredModel(
        name=payload["name"], version=payload["version"], created_at=payload["created_at"],
        task=payload["task"], target=Target(dtype, tuple(classes)),
        key=tuple(payload["key"]),
        features=tuple(Feature.from_dict(f) for f in payload["features"]),
        spec=payload["spec"], feature_relation=payload["relation"], booster=booster)


def refuse_options(output: Any, explain: int | None) -> None:
    """Score's options that need DuckDB, refused in one line on Spark."""
    if output is not None:
        raise EngineError("pyml score's output file runs on DuckDB targets only for now: on "
                          "Spark, read ml.<model>_predictions (e.g. spark.table(...).write)")
    if explain is not None:
        raise EngineError("pyml score's explain runs on DuckDB targets only for now")
