"""`pyml score`: stream a relation through a model and swap in ml.<model>_predictions.

Rows travel as Arrow record batches: DuckDB -> float32 matrix -> XGBoost -> Arrow -> DuckDB,
one batch at a time, so memory is bounded by the batch size. The new table is built under a
temporary name and swapped in with one short transaction: readers see the old table or the
new one, never a half-written one, and a failure leaves the old one in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pyml.data.encode import check_schema, is_range_error, matrix_sql, range_error
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.dbt.spec_diff import yaml_notice
from pyml.engines.duckdb import first_row, qualified, quote, relation_columns, stream_arrow
from pyml.errors import OutputError, UsageError
from pyml.modelling.model import LoadedModel, check_key_counts, check_outputs, key_types
from pyml.session import Session
from pyml.store.names import predictions_table
from pyml.store.registry import load_version
from pyml.store.writer import Constant, replace_table
from pyml.tasks import EXPLANATION_COLUMNS, PREDICTION_EXTRAS
from pyml.verbs.explain import ExplainResult, explain_relation

Log = Callable[[str], None]


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run wrote."""

    name: str  # model name
    version: int  # model version used
    table: str  # ml.<name>_predictions
    rows: int  # rows written
    seconds: float  # wall time
    output: Path | None  # file written with --output, if any
    explanation: ExplainResult | None = None  # with `explain`: the explanations written


def _noop(_: str) -> None:
    pass


def score(session: Session, specs: Sequence[ModelSpec], *, version: int | None = None,
          output: Path | None = None, explain: int | None = None) -> list[ScoreResult]:
    """Score every spec with its champion (or the given version); write the predictions tables.

    `explain` = K also writes each row's top K SHAP contributions (pyml.verbs.explain) with
    the very model object that scored, on the same connection: a promotion by another process
    in between cannot make predictions and explanations come from different versions.
    """
    if output is not None and len(specs) > 1:
        raise UsageError("an output file holds one model's predictions: select a single model "
                         "to score")
    if output is not None and output.suffix.lower() not in (".parquet", ".csv"):
        raise OutputError(f"output file {output}: use a .parquet or .csv file name")
    if output is not None and not output.expanduser().resolve().parent.is_dir():
        # Checked before scoring, so a mistyped folder leaves the predictions table as it was.
        path = output.expanduser().resolve()
        raise OutputError(f"output file {path}: folder {path.parent} does not exist")
    with session.database() as con:
        results = []
        for spec in specs:
            relation = session.scored_relation(spec)
            model = LoadedModel(load_version(con, spec.name, version))
            notice = yaml_notice(spec, model.version, model.stored.spec)
            if notice:  # the version scores as trained; say so when the YAML says otherwise
                session.log(notice)
            if explain is not None:  # refused before the predictions table is replaced
                check_outputs(model.stored, EXPLANATION_COLUMNS, predictions=False)
            result = score_relation(con, model, relation, batch_size=spec.score.batch_size,
                                    output=output, log=session.log)
            if explain is not None:
                result = replace(result, explanation=explain_relation(
                    con, model, relation, top_k=explain, batch_size=spec.score.batch_size,
                    log=session.log))
            results.append(result)
        return results


class _Predict:
    """One batch of keys + `FLOAT[k]` inputs -> keys + predictions; logs progress."""

    def __init__(self, model: LoadedModel, n_keys: int, schema: pa.Schema, total: int,
                 log: Log) -> None:
        self.model, self.n_keys, self.schema, self.total, self.log = (
            model, n_keys, schema, total, log)
        self.where = f"model '{model.name}'"
        self.rows = 0
        self.started = self.last = time.perf_counter()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keys = [batch.column(i) for i in range(self.n_keys)]
        X = self.model.encoder.from_fixed(batch.column(self.n_keys), self.where)
        out = pa.record_batch([*keys, *self.model.predict_matrix(X)], schema=self.schema)
        self.rows += batch.num_rows
        now = time.perf_counter()
        if now - self.last > 2.0:
            self.last = now
            rate = self.rows / (now - self.started)
            self.log(f"[{self.model.name}] scored {self.rows:,}/{self.total:,} rows "
                     f"({rate:,.0f} rows/s)")
        return out


def prediction_comments(model: LoadedModel, label: str) -> dict[str, str]:
    """What each column of ml.<model>_predictions holds (its COMMENTs)."""
    stored = model.stored
    out = {k: f"key column from {label}" for k in stored.key}
    if stored.task == "regression":
        out["prediction"] = "predicted value"
    elif stored.task == "binary":
        out["prediction"] = ("predicted class: the positive class when probability is at "
                             f"least {stored.threshold:g} (the model's threshold)")
        out["probability"] = f"probability of the positive class ({stored.target.classes[1]})"
    else:
        out["prediction"] = "predicted class (the most probable one)"
        out["probability"] = "probability of the predicted class"
        out.update({f"probability_{c}": f"probability of class {c}"
                    for c in stored.target.classes})
    out["model_version"] = f"version of model '{model.name}' in ml.models that scored the row"
    out["scored_at"] = "when pyml score wrote this table (UTC)"
    return out


def score_relation(con: duckdb.DuckDBPyConnection, model: LoadedModel,
                   relation: tuple[str, str], *, batch_size: int = DEFAULT_BATCH_ROWS,
                   output: Path | None = None, log: Log = _noop) -> ScoreResult:
    """Score one relation with one loaded model and swap in its predictions table."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{model.name}' v{model.version}"
    columns = relation_columns(con, schema, name)
    stored = model.stored
    check_outputs(stored, PREDICTION_EXTRAS)
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    keys_sql = ", ".join(quote(k) for k in stored.key)
    any_null = " or ".join(f"{quote(k)} is null" for k in stored.key)
    row = first_row(con, f"select count(*), count(distinct ({keys_sql})), "
                         f"count(*) filter (where {any_null}) from {source}")
    total, distinct, null_keys = (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
    check_key_counts(where, label, stored.key, total, distinct, null_keys)
    reader_con = con.cursor()
    reader = None
    try:
        exprs = [quote(k) for k in stored.key] + [matrix_sql(stored.features)]
        try:  # the first batch is computed here: a value beyond float32 fails already
            reader = stream_arrow(reader_con, f"select {', '.join(exprs)} from {source}",
                                  batch_size)
        except duckdb.Error as e:
            if is_range_error(e):
                raise range_error(con, source, stored.features, where) from None
            raise
        key_fields = [reader.schema.field(i).with_name(k) for i, k in enumerate(stored.key)]
        out_schema = pa.schema(
            key_fields
            + [pa.field(c.name, c.type) for c in model.output_columns()]
        )
        scored_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        log(f"[{model.name}] scoring {total:,} rows of {label} with version {model.version}")
        try:
            written = replace_table(
                con, predictions_table(model.name), reader,
                transform=_Predict(model, len(stored.key), out_schema, total, log),
                schema=out_schema,
                constants=[Constant("model_version", "integer", model.version),
                           Constant("scored_at", "timestamp", scored_at)],
                expected_rows=total, where=f"{where}: {label}", output=output,
                comment=f"Predictions of pyml model '{model.name}' v{model.version} for "
                        f"every row of {label} (pyml score)",
                column_comments=prediction_comments(model, label))
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            # DuckDB's DOUBLE -> FLOAT overflow, met in a later batch than the first.
            if is_range_error(e):
                raise range_error(con, source, stored.features, where) from None
            raise
    finally:
        if reader is not None:
            reader.close()  # replace_table closed it already, unless it never got it
        reader_con.close()
    seconds = time.perf_counter() - started
    log(f"[{model.name}] wrote {written.table}: {total:,} rows in {seconds:.1f}s "
        f"({total / max(seconds, 1e-9):,.0f} rows/s)")
    return ScoreResult(model.name, model.version, written.table, total, seconds, output)
