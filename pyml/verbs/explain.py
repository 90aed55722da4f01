"""`pyml explain`: per-row feature contributions (exact TreeSHAP) as a table.

XGBoost's `pred_contribs=True` gives, for every row, one contribution per feature plus a bias
term, and they add up to the model's margin (log-odds for binary, the value for regression,
the predicted class's score for multiclass). `ml.<model>_explanations` keeps the top K
features of each row by |contribution|, and on every row of it the columns
`other_contribution` (the sum of the contributions not shown), `bias` and `margin`, so that
for each key: sum(contribution) + other_contribution + bias = margin.

Rows stream like scoring does: DuckDB -> Arrow batches -> XGBoost -> Arrow batches ->
`CREATE TABLE AS` under a temporary name, then one atomic swap; memory is bounded by the
batch size, not the relation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import xgboost as xgb

from pyml.data.encode import Feature, check_schema, select_exprs
from pyml.dbt.project import Project, resolve_relation
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import connect, first_row, qualified, quote, relation_columns, stream_arrow
from pyml.errors import DataError
from pyml.modelling.model import LoadedModel, key_types
from pyml.store.registry import SCHEMA, load_version
from pyml.verbs.score import _drop_leftovers, _drop_quietly, _swap

Log = Callable[[str], None]
DEFAULT_TOP_K = 5
SHAP_IMPORTANCE_ROWS = 2_000  # holdout rows behind mean |SHAP| (a seeded sample above that)


def _noop(_: str) -> None:
    pass


def explanations_table(name: str) -> str:
    """Name (in the ml schema) of a model's explanations table."""
    return f"{name}_explanations"


def contributions(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP values: (n, F + 1) or, multiclass, (n, classes, F + 1); last = bias."""
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    return np.asarray(booster.predict(dm, pred_contribs=True))


def mean_abs_shap(booster: xgb.Booster, features: Sequence[Feature], X: np.ndarray
                  ) -> list[tuple[str, str, float]]:
    """ml.feature_importance rows of type 'mean_abs_shap' on the rows of X (the holdout).

    Multiclass: the sum over classes of each class's mean |SHAP| (the total bar of a stacked
    SHAP summary plot).
    """
    if len(X) > SHAP_IMPORTANCE_ROWS:
        rng = np.random.default_rng(0)
        X = X[np.sort(rng.choice(len(X), SHAP_IMPORTANCE_ROWS, replace=False))]
    if len(X) == 0:
        return []
    c = np.abs(contributions(booster, X).astype(np.float64))
    per_feature = c.mean(axis=0)
    if per_feature.ndim == 2:
        per_feature = per_feature.sum(axis=0)
    return [(f.name, "mean_abs_shap", float(per_feature[j])) for j, f in enumerate(features)]


def margin_contributions(model: LoadedModel, X: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row contributions (n, F + 1) of the margin that the prediction rests on.

    For multiclass that is the predicted class's margin; its class index comes second.
    """
    c = contributions(model.stored.booster, X)
    if c.ndim == 2:
        return c, None
    cls = c.sum(axis=2).argmax(axis=1)
    return c[np.arange(len(c)), cls, :], cls


@dataclass(frozen=True)
class ExplainResult:
    """What one explain run wrote."""

    name: str  # model name
    version: int  # model version used
    table: str  # ml.<name>_explanations
    rows: int  # rows of the relation explained
    top_k: int  # features kept per row
    seconds: float  # wall time


class _Batches:
    """Yields explanation batches; keeps the first error so it survives DuckDB's wrapping."""

    def __init__(self, reader: pa.RecordBatchReader, model: LoadedModel, n_keys: int,
                 top_k: int, schema: pa.Schema, explained_at: datetime, total: int,
                 log: Log) -> None:
        self.reader, self.model, self.n_keys, self.top_k = reader, model, n_keys, top_k
        self.schema, self.explained_at, self.total, self.log = schema, explained_at, total, log
        self.names = pa.array(model.feature_names, pa.string())
        self.error: BaseException | None = None
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        n_feat = len(self.model.stored.features)
        where = f"model '{self.model.name}'"
        started = last = time.perf_counter()
        try:
            for batch in self.reader:
                n = batch.num_rows
                if n == 0:
                    continue
                feats = [batch.column(self.n_keys + j) for j in range(n_feat)]
                texts = [batch.column(self.n_keys + n_feat + j) for j in range(n_feat)]
                X = self.model.encoder.matrix(feats, where)
                c, cls = margin_contributions(self.model, X)
                c = c.astype(np.float64)
                shap, bias = c[:, :-1], c[:, -1]
                margin = c.sum(axis=1)
                k = min(self.top_k, n_feat)
                top = np.argsort(-np.abs(shap), axis=1, kind="stable")[:, :k]
                row = np.repeat(np.arange(n), k)
                col = top.ravel()
                shown = shap[row, col]
                other = margin - bias - shown.reshape(n, k).sum(axis=1)
                take = pa.array(row)
                values = pa.concat_arrays([t.cast(pa.string()) for t in texts]
                                          ).take(pa.array(col * n + row))
                arrays = [batch.column(i).take(take) for i in range(self.n_keys)]
                if cls is not None:
                    classes = pa.array(list(self.model.stored.target.classes))
                    arrays.append(classes.take(pa.array(cls[row])))
                arrays += [pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
                           self.names.take(pa.array(col)), values, pa.array(shown),
                           pa.array(np.repeat(other, k)), pa.array(np.repeat(bias, k)),
                           pa.array(np.repeat(margin, k)),
                           pa.array(np.full(n * k, self.model.version, np.int32)),
                           pa.array([self.explained_at] * (n * k), pa.timestamp("us"))]
                yield pa.record_batch(arrays, schema=self.schema)
                self.rows += n
                now = time.perf_counter()
                if now - last > 2.0:
                    last = now
                    self.log(f"[{self.model.name}] explained {self.rows:,}/{self.total:,} rows "
                             f"({self.rows / (now - started):,.0f} rows/s)")
        except BaseException as e:
            self.error = e
            raise


def explain_relation(con: duckdb.DuckDBPyConnection, model: LoadedModel,
                     relation: tuple[str, str], *, top_k: int = DEFAULT_TOP_K,
                     batch_size: int = 100_000, log: Log = _noop) -> ExplainResult:
    """Explain every row of one relation and swap in ml.<model>_explanations."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{model.name}' v{model.version}"
    stored = model.stored
    columns = relation_columns(con, schema, name)
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    row = first_row(con, f"select count(*) from {source}")
    total = int(row[0]) if row else 0
    if total == 0:
        raise DataError(f"{where}: {label} is empty; nothing to explain "
                        "(did `dbt build` run?)")
    target_table = explanations_table(model.name)
    _drop_leftovers(con, target_table)
    tmp = f"__pyml_tmp_{target_table}_{uuid.uuid4().hex[:8]}"
    reader_con, writer = con.cursor(), con.cursor()
    try:
        texts = [f"CAST({quote(f.name)} AS VARCHAR) AS {quote(f'__pyml_t{i}')}"
                 for i, f in enumerate(stored.features)]
        exprs = [quote(k) for k in stored.key] + select_exprs(stored.features) + texts
        reader = stream_arrow(reader_con, f"select {', '.join(exprs)} from {source}",
                              batch_size)
        fields = [reader.schema.field(i).with_name(k) for i, k in enumerate(stored.key)]
        if stored.task == "multiclass":
            fields.append(pa.field("class", pa.array(list(stored.target.classes)).type))
        fields += [pa.field("rank", pa.int32()), pa.field("feature", pa.string()),
                   pa.field("feature_value", pa.string()),
                   pa.field("contribution", pa.float64()),
                   pa.field("other_contribution", pa.float64()),
                   pa.field("bias", pa.float64()), pa.field("margin", pa.float64()),
                   pa.field("model_version", pa.int32()),
                   pa.field("explained_at", pa.timestamp("us"))]
        out_schema = pa.schema(fields)
        explained_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        batches = _Batches(reader, model, len(stored.key), top_k, out_schema, explained_at,
                           total, log)
        stream = pa.RecordBatchReader.from_batches(out_schema, iter(batches))
        log(f"[{model.name}] explaining {total:,} rows of {label} with version "
            f"{model.version} (top {top_k} features per row)")
        try:
            writer.register("__pyml_explained", stream)
            writer.execute(f"create table {qualified(SCHEMA, tmp)} as "
                           "select * from __pyml_explained")
        except (duckdb.Error, pa.ArrowException):
            if batches.error is not None:
                raise batches.error from None
            raise
        finally:
            writer.unregister("__pyml_explained")
        if batches.rows != total:
            raise DataError(f"{where}: explained {batches.rows} rows but {label} has "
                            f"{total}; the relation changed while explaining, rerun")
        _swap(writer, tmp, target_table)
    except BaseException:
        _drop_quietly(con, tmp)
        raise
    finally:
        reader_con.close()
        writer.close()
    seconds = time.perf_counter() - started
    log(f"[{model.name}] wrote {SCHEMA}.{target_table}: {total:,} rows x {top_k} features "
        f"in {seconds:.1f}s")
    return ExplainResult(model.name, model.version, f"{SCHEMA}.{target_table}", total,
                         top_k, seconds)


def explain(project: Project, specs: Sequence[ModelSpec], *, top_k: int = DEFAULT_TOP_K,
            version: int | None = None, batch_size: int | None = None, log: Log | None = None,
            lock_timeout: float = 5.0) -> list[ExplainResult]:
    """Explain each spec's score relation with its latest (or the given) version."""
    con = connect(project.db_path, lock_timeout=lock_timeout)
    try:
        out = []
        for spec in specs:
            relation = (resolve_relation(project, spec.score.relation, spec.where)
                        if spec.score.relation else (spec.schema, spec.relation))
            model = LoadedModel(load_version(con, spec.name, version))
            out.append(explain_relation(con, model, relation, top_k=top_k,
                                        batch_size=batch_size or spec.score.batch_size,
                                        log=log or _noop))
        return out
    finally:
        con.close()
