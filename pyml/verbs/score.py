"""`pyml score`: stream a relation through a model and swap in ml.<model>_predictions.

Rows travel as Arrow record batches: DuckDB -> float32 matrix -> XGBoost -> Arrow -> DuckDB,
one batch at a time, so memory is bounded by the batch size. The new table is built under a
temporary name and swapped in with one short transaction: readers see the old table or the
new one, never a half-written one, and a failure leaves the old one in place.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pyml.data.encode import check_schema, is_range_error, matrix_sql, range_error
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.dbt.spec_diff import yaml_notice
from pyml.engines.duckdb import first_row, qualified, quote, relation_columns, stream_arrow
from pyml.errors import DataError, OutputError, UsageError
from pyml.modelling.model import (
    DENSE_KEY_TYPES,
    KeyRepeats,
    LoadedModel,
    StreamedKeyCheck,
    check_key_counts,
    check_outputs,
    key_types,
)
from pyml.session import Session
from pyml.store import fingerprints as fp
from pyml.store.names import predictions_table
from pyml.store.registry import load_version
from pyml.store.schema import comment_table
from pyml.store.writer import Constant, replace_table, update_table
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
    rescored: int | None = None  # incremental: rows scored anew (None: every row was)


def _noop(_: str) -> None:
    pass


def score(session: Session, specs: Sequence[ModelSpec], *, version: int | None = None,
          output: Path | None = None, explain: int | None = None,
          incremental: bool | None = None) -> list[ScoreResult]:
    """Score every spec with its champion (or the given version); write the predictions tables.

    `incremental` (None: each spec's score.incremental) rescores only new and changed rows
    where it can (score_relation).

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
    modes = {spec.name: spec.score.incremental if incremental is None else incremental
             for spec in specs}
    if output is not None and any(modes.values()):
        raise UsageError(INCREMENTAL_OUTPUT)
    with session.database() as con:
        results = []
        for spec in specs:
            relation = session.scored_relation(spec)
            model = LoadedModel(load_version(con, spec.name, version))
            notice = yaml_notice(spec, model.version, model.stored.spec,
                                 model.stored.target.classes)
            if notice:  # the version scores as trained; say so when the YAML says otherwise
                session.log(notice)
            if explain is not None:  # refused before the predictions table is replaced
                check_outputs(model.stored, EXPLANATION_COLUMNS, predictions=False)
            fix = (f"the dbt model (or point score.relation in {spec.source_file} at one that "
                   "has it)" if spec.score.relation else "the dbt model")
            result = score_relation(con, model, relation, batch_size=spec.score.batch_size,
                                    output=output, log=session.log,
                                    incremental=modes[spec.name], fix=fix)
            if explain is not None:
                result = replace(result, explanation=explain_relation(
                    con, model, relation, top_k=explain, batch_size=spec.score.batch_size,
                    log=session.log))
            results.append(result)
        return results


class _Predict:
    """One batch of keys + `FLOAT[k]` inputs (+ columns passed through) -> keys +
    predictions (+ those columns); logs progress. Thread-safe: the writer's workers call it
    on consecutive batches at once (`workers`)."""

    def __init__(self, model: LoadedModel, n_keys: int, schema: pa.Schema, total: int,
                 batch_size: int, log: Log, keys: StreamedKeyCheck | None = None) -> None:
        self.workers = prediction_workers(total, batch_size)
        # Each worker predicts whole batches (pyml.store.writer._in_order) on its share of
        # the cores: one thread each up to MAX_WORKERS cores.
        self.model = (model.with_threads(max(1, _cores() // self.workers))
                      if self.workers > 1 else model)
        self.n_keys, self.schema, self.total, self.log = n_keys, schema, total, log
        self.where = f"model '{model.name}'"
        self.rows = 0
        self.started = self.last = time.perf_counter()
        self._lock = threading.Lock()
        self.keys = keys

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keys = [batch.column(i) for i in range(self.n_keys)]
        if self.keys is not None:
            self.keys.add(keys[0])
        X = self.model.encoder.from_fixed(batch.column(self.n_keys), self.where)
        rest = [batch.column(i) for i in range(self.n_keys + 1, batch.num_columns)]
        out = pa.record_batch([*keys, *self.model.predict_matrix(X), *rest],
                              schema=self.schema)
        with self._lock:
            self.rows += batch.num_rows
            now = time.perf_counter()
            if now - self.last > 2.0:
                self.last = now
                rate = self.rows / (now - self.started)
                self.log(f"[{self.model.name}] scored {self.rows:,}/{self.total:,} rows "
                         f"({rate:,.0f} rows/s)")
        return out


# Batches predicted side by side at most: each holds a batch in memory (plus one queued), so
# memory stays bounded however many cores; beyond it, each worker's XGBoost gets more threads.
MAX_WORKERS = 4


def prediction_workers(rows: int, batch_size: int) -> int:
    """Threads that predict batches side by side: one per core this process may use (at most
    MAX_WORKERS), when there is more than one batch."""
    if rows <= batch_size:
        return 1
    return max(1, min(_cores(), MAX_WORKERS))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
                   output: Path | None = None, log: Log = _noop,
                   incremental: bool = False, fix: str = "the dbt model") -> ScoreResult:
    """Score one relation with one loaded model and swap in its predictions table.

    `incremental`: when the table was written by this version with fingerprints, score only
    the rows whose key is new or whose features changed, drop the rows whose key is gone,
    all in place in one transaction (the result equals a full score's, row for row);
    otherwise score in full, keeping fingerprints, and log one line saying why. `fix`: where
    a missing or retyped feature column is put right (messages).
    """
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{model.name}' v{model.version}"
    columns = relation_columns(con, schema, name)
    stored = model.stored
    check_outputs(stored, PREDICTION_EXTRAS)
    check_schema(where, stored.features, columns, label, source=fix)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    if incremental and output is not None:
        raise UsageError(INCREMENTAL_OUTPUT)
    keys_sql = ", ".join(quote(k) for k in stored.key)
    any_null = " or ".join(f"{quote(k)} is null" for k in stored.key)

    types = dict(columns)

    def counts(distinct: bool, bounds: bool = False) -> tuple[int, ...]:
        # One pass: rows, distinct keys (rows again unless `distinct`), rows with a NULL key
        # part, and with `bounds` the key's min and max (left out when every key is NULL).
        row = first_row(con, "select count(*), "
                             + (f"count(distinct ({keys_sql}))" if distinct else "count(*)")
                             + f", count(*) filter (where {any_null})"
                             + (f", min({keys_sql}), max({keys_sql})" if bounds else "")
                             + f" from {source}")
        return tuple(int(v) for v in row if v is not None) if row and row[0] else (0, 0, 0)

    def job(unique: bool) -> _Job:
        # `unique`: check that no key repeats; an incremental score leaves that to its
        # merge, which finds a duplicate key in the rows it changes. A single integer key
        # whose values are dense is checked as the batches stream (StreamedKeyCheck), any
        # other with a count(distinct) pass here.
        streamed = unique and len(stored.key) == 1 and types[stored.key[0]] in DENSE_KEY_TYPES
        total, distinct_keys, null_keys, *bounds = counts(unique and not streamed, streamed)
        keys = None
        if bounds and not null_keys:
            if StreamedKeyCheck.fits(bounds[0], bounds[1], total):
                keys = StreamedKeyCheck(bounds[0], bounds[1])
            else:
                distinct_keys = counts(True)[1]
        check_key_counts(where, label, stored.key, total, distinct_keys, null_keys)
        scored_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return _Job(con, model, source, label, where, total, batch_size, scored_at, log, keys)

    def replaced(job: _Job, fingerprints: bool) -> ScoreResult:
        try:
            return job.replace(started, output, fingerprints=fingerprints)
        except KeyRepeats:  # rolled back; count as the check before would have
            check_key_counts(where, label, stored.key, *counts(True)[:3])
            raise DataError(f"{where}: {label} changed while it was scored, rerun") from None

    reason = (fp.stale_reason(con, model.name, model.version,
                              [(k, types[k]) for k in stored.key]) if incremental else None)
    if incremental and reason is None:
        try:
            return job(unique=False).update(started)
        except fp.Stale as e:  # found in the update's transaction, which rolled back
            reason = str(e)
        except fp.Duplicates as e:  # rolled back too; the full key check names duplicates
            full = job(unique=True)  # raises a full score's DataError if the key repeats
            reason = (f"{e} (its rows and fingerprints disagree)")
            log(f"[{model.name}] full score instead of an incremental one: {reason}")
            return replaced(full, fingerprints=True)
    if incremental:
        log(f"[{model.name}] full score instead of an incremental one: {reason}")
    return replaced(job(unique=True), fingerprints=incremental)


CHANGED = "__pyml_changed_rows"  # the incremental join's result (a temporary table)
INCREMENTAL_OUTPUT = ("pyml score --incremental updates ml.<model>_predictions in place and "
                      "writes no --output file; drop --output, or score in full with "
                      "--no-incremental")


@dataclass(frozen=True)
class _Job:
    """One relation being scored by one model, after its checks: the two ways to write."""

    con: duckdb.DuckDBPyConnection
    model: LoadedModel
    source: str  # quoted schema.name
    label: str  # schema.name as users read it
    where: str  # model 'x' vN, for messages
    total: int  # rows of the relation
    batch_size: int
    scored_at: datetime
    log: Log
    keys: StreamedKeyCheck | None = None  # the key's uniqueness, checked as rows stream

    def replace(self, started: float, output: Path | None, *, fingerprints: bool
                ) -> ScoreResult:
        """Score every row and swap in the table (with fingerprints beside it, or none)."""
        name, stored = self.model.name, self.model.stored
        sql = (fp.full_rows_sql(self.source, stored.key, stored.features) if fingerprints
               else f"select {', '.join(quote(k) for k in stored.key)}, "
                    f"{matrix_sql(stored.features)} from {self.source}")
        self.log(f"[{name}] scoring {self.total:,} rows of {self.label} with version "
                 f"{self.model.version}")

        def finish(cursor: duckdb.DuckDBPyConnection, tmp: str) -> list[tuple[str, str]]:
            if fingerprints:
                return fp.split_off(cursor, tmp, name, stored.key, self.label)
            return fp.drop_stale(cursor, name)

        with self._stream(sql) as (reader, schema):
            predict = self._predict(schema)
            written = replace_table(
                self.con, predictions_table(name), reader,
                transform=predict, workers=predict.workers, schema=schema,
                constants=[Constant("model_version", "integer", self.model.version),
                           Constant("scored_at", "timestamp", self.scored_at)],
                expected_rows=self.total, where=f"{self.where}: {self.label}", output=output,
                comment=self.comment(), column_comments=prediction_comments(self.model,
                                                                            self.label),
                finish=finish)
        seconds = time.perf_counter() - started
        self.log(f"[{name}] wrote {written.table}: {self.total:,} rows in {seconds:.1f}s "
                 f"({self.total / max(seconds, 1e-9):,.0f} rows/s)")
        return ScoreResult(name, self.model.version, written.table, self.total, seconds,
                           output)

    def update(self, started: float) -> ScoreResult:
        """Score the new and changed rows only and merge them in (pyml.store.fingerprints)."""
        name, stored = self.model.name, self.model.stored
        sql = fp.changed_rows_sql(name, self.source, stored.key, stored.features)
        self.log(f"[{name}] scoring the new and changed rows of {self.label} with version "
                 f"{self.model.version} (incremental)")

        merged: list[fp.Merged] = []

        def apply(cursor: duckdb.DuckDBPyConnection, tmp: str) -> int:
            merged.append(fp.merge(cursor, tmp, model=name, version=self.model.version,
                                   key=stored.key, scored_at=self.scored_at,
                                   total=self.total))
            comment_table(cursor, predictions_table(name), self.comment(),
                          prediction_comments(self.model, self.label))
            comment_table(cursor, fp.fingerprints_table(name),
                          *fp.fingerprint_comments(name, stored.key, self.label))
            return merged[0].rows

        with self._stream(sql, materialize=True) as (reader, schema):
            predict = self._predict(schema)
            written = update_table(
                self.con, predictions_table(name), reader,
                transform=predict, workers=predict.workers, schema=schema, apply=apply,
                expected_rows=self.total,
                where=f"{self.where}: {self.label}")
        seconds = time.perf_counter() - started
        self.log(f"[{name}] updated {written.table}: rescored {merged[0].rescored:,} new or "
                 f"changed of {self.total:,} rows, dropped {merged[0].gone:,} gone, in "
                 f"{seconds:.1f}s")
        return ScoreResult(name, self.model.version, written.table, self.total, seconds, None,
                           rescored=merged[0].rescored)

    def _predict(self, schema: pa.Schema) -> _Predict:
        return _Predict(self.model, len(self.model.stored.key), schema, self.total,
                        self.batch_size, self.log, self.keys)

    def comment(self) -> str:
        """The predictions table's COMMENT."""
        return (f"Predictions of pyml model '{self.model.name}' v{self.model.version} for "
                f"every row of {self.label} (pyml score)")

    @contextmanager
    def _stream(self, sql: str, *, materialize: bool = False
                ) -> Iterator[tuple[pa.RecordBatchReader, pa.Schema]]:
        """The query's batches and the output schema: the keys, the prediction columns and
        any column after the input row (the fingerprint), passed through.

        `materialize`: run the query to the end into a temporary table first, then stream
        that. For the incremental join: streamed, it runs while the writer's statement holds
        one of DuckDB's threads waiting for batches, and took 1.7x as long (a 5M-row join,
        docs/benchmarks.md); its result is the few changed rows.
        """
        stored = self.model.stored
        reader_con = self.con.cursor()
        reader = None
        try:
            try:  # the first batch is computed here: a value beyond float32 fails already
                if materialize:  # a temporary table: this cursor's own, gone when it closes
                    reader_con.execute(f"create temporary table {CHANGED} as {sql}")
                    sql = f"select * from {CHANGED}"
                reader = stream_arrow(reader_con, sql, self.batch_size)
                n = len(stored.key)
                fields = [reader.schema.field(i) for i in range(len(reader.schema))]
                schema = pa.schema(
                    [f.with_name(k) for f, k in zip(fields, stored.key, strict=False)]
                    + [pa.field(c.name, c.type) for c in self.model.output_columns()]
                    + fields[n + 1:])
                yield reader, schema
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                # DuckDB's DOUBLE -> FLOAT overflow, in the first batch or a later one.
                if is_range_error(e):
                    raise range_error(self.con, self.source, stored.features,
                                      self.where) from None
                raise
        finally:
            if reader is not None:
                reader.close()  # the writer closed it already, unless it never got it
            reader_con.close()
