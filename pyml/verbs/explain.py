"""`pyml explain`: per-row feature contributions (exact TreeSHAP) as a table.

XGBoost's `pred_contribs=True` gives, for every row, one contribution per feature plus a bias
term, and they add up to the model's margin (log-odds for binary, the value for regression,
the predicted class's score for multiclass). `ml.<model>_explanations` keeps the top K
features of each row by |contribution|, and on every row of it the columns
`other_contribution` (the sum of the contributions not shown), `bias` and `margin`, so that
for each key: sum(contribution) + other_contribution + bias = margin.

Rows stream like scoring does, through the same writer (`pyml.store.writer`): DuckDB ->
Arrow batches -> XGBoost -> Arrow batches -> `CREATE TABLE AS` under a temporary name and
the swap, in one transaction; memory is bounded by the batch size, not the relation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa

from pyml.data.encode import check_schema, select_exprs
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.dbt.spec_diff import yaml_notice
from pyml.engines.duckdb import first_row, qualified, quote, relation_columns, stream_arrow
from pyml.errors import DataError
from pyml.modelling.model import LoadedModel, check_outputs, key_types
from pyml.modelling.shap import top_contributions
from pyml.session import Session
from pyml.store.names import explanations_table
from pyml.store.registry import StoredModel, load_version
from pyml.store.writer import Constant, replace_table
from pyml.tasks import EXPLANATION_COLUMNS

Log = Callable[[str], None]
DEFAULT_TOP_K = 5


def _noop(_: str) -> None:
    pass


@dataclass(frozen=True)
class ExplainResult:
    """What one explain run wrote."""

    name: str  # model name
    version: int  # model version used
    table: str  # ml.<name>_explanations
    rows: int  # rows of the relation explained
    top_k: int  # features kept per row
    seconds: float  # wall time


class ExplainBatch:
    """One batch of keys, feature values and their texts -> its top-K explanation rows
    (DuckDB's batches here, each Spark executor's in pyml.spark.explain)."""

    def __init__(self, model: LoadedModel, n_keys: int, top_k: int, schema: pa.Schema,
                 total: int, log: Log) -> None:
        self.model, self.n_keys, self.top_k = model, n_keys, top_k
        self.schema, self.total, self.log = schema, total, log
        self.names = pa.array(model.feature_names, pa.string())
        self.rows = 0
        self.started = self.last = time.perf_counter()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n_feat = len(self.model.stored.features)
        n = batch.num_rows
        if n == 0:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        feats = [batch.column(self.n_keys + j) for j in range(n_feat)]
        texts = [batch.column(self.n_keys + n_feat + j) for j in range(n_feat)]
        X = self.model.encoder.matrix(feats, f"model '{self.model.name}'")
        top = top_contributions(self.model.stored.booster, X, self.top_k)
        k = top.features.shape[1]
        row = np.repeat(np.arange(n), k)
        col = top.features.ravel()
        take = pa.array(row)
        values = pa.concat_arrays([t.cast(pa.string()) for t in texts]
                                  ).take(pa.array(col * n + row))
        arrays = [batch.column(i).take(take) for i in range(self.n_keys)]
        if top.classes is not None:
            classes = pa.array(list(self.model.stored.target.classes))
            arrays.append(classes.take(pa.array(top.classes[row])))
        arrays += [pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
                   self.names.take(pa.array(col)), values, pa.array(top.values.ravel()),
                   pa.array(np.repeat(top.other, k)), pa.array(np.repeat(top.bias, k)),
                   pa.array(np.repeat(top.margin, k))]
        self.rows += n
        now = time.perf_counter()
        if now - self.last > 2.0:
            self.last = now
            self.log(f"[{self.model.name}] explained {self.rows:,}/{self.total:,} rows "
                     f"({self.rows / (now - self.started):,.0f} rows/s)")
        return pa.record_batch(arrays, schema=self.schema)


def explanation_schema(stored: StoredModel, key_fields: Sequence[pa.Field]) -> pa.Schema:
    """The Arrow schema of ml.<model>_explanations' computed columns, after the keys'."""
    fields = list(key_fields)
    if stored.task == "multiclass":
        fields.append(pa.field("class", pa.array(list(stored.target.classes)).type))
    fields += [pa.field("rank", pa.int32()), pa.field("feature", pa.string()),
               pa.field("feature_value", pa.string()),
               pa.field("contribution", pa.float64()),
               pa.field("other_contribution", pa.float64()),
               pa.field("bias", pa.float64()), pa.field("margin", pa.float64())]
    return pa.schema(fields)


def explanation_comments(model: LoadedModel, label: str) -> dict[str, str]:
    """What each column of ml.<model>_explanations holds (its COMMENTs)."""
    out = {k: f"key column from {label}" for k in model.stored.key}
    if model.stored.task == "multiclass":
        out["class"] = "the predicted class, whose margin the row explains"
    out.update({
        "rank": "rank of the feature by |contribution| within its key (1 = largest)",
        "feature": "feature name",
        "feature_value": f"the feature's value in {label}, as text",
        "contribution": "the feature's exact TreeSHAP contribution to the margin",
        "other_contribution": "sum of the contributions of the features not shown for this "
                              "key",
        "bias": "bias term of the margin (the model's expected margin)",
        "margin": "the model's margin for the key (log-odds for binary, the value for "
                  "regression): sum(contribution) + other_contribution + bias",
        "model_version": f"version of model '{model.name}' in ml.models that explained the "
                         "row",
        "explained_at": "when pyml explain wrote this table (UTC)",
    })
    return out


def explain_relation(con: duckdb.DuckDBPyConnection, model: LoadedModel,
                     relation: tuple[str, str], *, top_k: int = DEFAULT_TOP_K,
                     batch_size: int = DEFAULT_BATCH_ROWS, log: Log = _noop) -> ExplainResult:
    """Explain every row of one relation and swap in ml.<model>_explanations."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{model.name}' v{model.version}"
    stored = model.stored
    check_outputs(stored, EXPLANATION_COLUMNS, predictions=False)
    columns = relation_columns(con, schema, name)
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    top_k = min(top_k, len(stored.features))  # what a row can have (messages, comments)
    row = first_row(con, f"select count(*) from {source}")
    total = int(row[0]) if row else 0
    if total == 0:
        raise DataError(f"{where}: {label} is empty; nothing to explain "
                        "(did `dbt build` run?)")
    reader_con = con.cursor()
    reader = None
    try:
        texts = [f"CAST({quote(f.name)} AS VARCHAR) AS {quote(f'__pyml_t{i}')}"
                 for i, f in enumerate(stored.features)]
        exprs = [quote(k) for k in stored.key] + select_exprs(stored.features) + texts
        reader = stream_arrow(reader_con, f"select {', '.join(exprs)} from {source}",
                              batch_size)
        out_schema = explanation_schema(stored, [reader.schema.field(i).with_name(k)
                                                 for i, k in enumerate(stored.key)])
        explained_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        log(f"[{model.name}] explaining {total:,} rows of {label} with version "
            f"{model.version} (top {top_k} features per row)")
        written = replace_table(
            con, explanations_table(model.name), reader,
            transform=ExplainBatch(model, len(stored.key), top_k, out_schema, total, log),
            schema=out_schema,
            constants=[Constant("model_version", "integer", model.version),
                       Constant("explained_at", "timestamp", explained_at)],
            expected_rows=total, where=f"{where}: {label}",
            comment=f"Top {top_k} TreeSHAP contributions per row of {label} for pyml model "
                    f"'{model.name}' v{model.version} (pyml explain)",
            column_comments=explanation_comments(model, label))
    finally:
        if reader is not None:
            reader.close()  # replace_table closed it already, unless it never got it
        reader_con.close()
    seconds = time.perf_counter() - started
    log(f"[{model.name}] wrote {written.table}: {total:,} rows x {top_k} features "
        f"in {seconds:.1f}s")
    return ExplainResult(model.name, model.version, written.table, total, top_k, seconds)


def explain(session: Session, specs: Sequence[ModelSpec], *, top_k: int = DEFAULT_TOP_K,
            version: int | None = None) -> list[ExplainResult]:
    """Explain each spec's score relation with its champion (or the given version)."""
    with session.database() as con:
        results = []
        for spec in specs:
            model = LoadedModel(load_version(con, spec.name, version))
            notice = yaml_notice(spec, model.version, model.stored.spec,
                                 model.stored.target.classes)
            if notice:  # the version explains as trained, whatever the YAML says now
                session.log(notice)
            results.append(explain_relation(con, model, session.scored_relation(spec),
                                            top_k=top_k, batch_size=spec.score.batch_size,
                                            log=session.log))
        return results
