"""The promotion policy: does a new version replace the champion?

The spec's `promote:` policy decides at train time, inside the transaction that writes the
version (`pyml.store.registry.write_version(..., decide=...)`): `auto` re-scores the champion
on the challenger's holdout rows and promotes the challenger when it is not worse (by
`min_delta`) on the chosen metric; `manual` leaves it to `pyml promote`. The store records
the decision (statuses, ml.model_events); the decision itself is modelling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data.encode import check_schema, matrix_sql
from pyml.data.trainset import labels
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.dbt.spec_tune import promote_metric
from pyml.engines.duckdb import qualified, quote, relation_columns, stream_arrow
from pyml.errors import PymlError, SchemaMismatch
from pyml.modelling.compare import Comparison, compare
from pyml.modelling.model import LoadedModel
from pyml.store.lifecycle import Decision
from pyml.store.registry import load_version

COMPARE_BATCH_ROWS = DEFAULT_BATCH_ROWS  # holdout rows per batch when models compete

Log = Callable[[str], None]


class HoldoutPolicy:
    """The spec's `promote:` policy, comparing on the challenger's own holdout rows.

    `holdout_sql` is train.py's split expression (2 = holdout) with its parameters, so the
    rows are exactly those the challenger's holdout metrics were computed on.
    """

    def __init__(self, spec: ModelSpec, holdout_sql: str, holdout_params: list[Any],
                 log: Log) -> None:
        self.spec, self.holdout_sql, self.holdout_params = spec, holdout_sql, holdout_params
        self.log = log

    def __call__(self, con: duckdb.DuckDBPyConnection, version: int, champion: int
                 ) -> Decision:
        spec, policy = self.spec, self.spec.promote
        if policy.policy == "manual":
            return Decision(False, "registered", f"promote.policy is manual: challenger to "
                            f"v{champion}; `pyml promote {spec.name}` makes it the champion")
        metric = promote_metric(policy, spec.task)
        try:
            cmp = holdout_comparison(con, spec, champion, version, metric,
                                     self.holdout_sql, self.holdout_params)
        except _CannotCompare as e:
            reason = (f"champion v{champion} cannot be scored on v{version}'s holdout rows "
                      f"({e}); `pyml promote {spec.name}` promotes v{version} by hand")
            self.log(f"[{spec.name}] v{version} stays challenger: {reason}")
            return Decision(False, "registered", reason)
        text = cmp.describe(f"champion v{champion}", f"v{version}")
        metrics = {"metric": cmp.metric, "champion": {"version": champion, "value": cmp.a},
                   "challenger": {"version": version, "value": cmp.b}, "gain": cmp.gain,
                   "ci95": None if cmp.ci_low is None else [cmp.ci_low, cmp.ci_high],
                   "n_rows": cmp.n_rows, "min_delta": policy.min_delta}
        if cmp.gain >= -1e-12 + policy.min_delta:
            reason = f"auto: {text}; not worse by min_delta {policy.min_delta:g}"
            self.log(f"[{spec.name}] v{version} promoted to champion: {text}")
            return Decision(True, "promoted", reason, metrics)
        reason = (f"auto: {text}; needs a gain of at least {policy.min_delta:g}: "
                  f"v{champion} stays champion")
        self.log(f"[{spec.name}] v{version} stays challenger: {text}")
        return Decision(False, "rejected", reason, metrics)


class _CannotCompare(PymlError):
    pass


def holdout_comparison(con: duckdb.DuckDBPyConnection, spec: ModelSpec, champion: int,
                       challenger: int, metric: str, holdout_sql: str,
                       holdout_params: list[Any]) -> Comparison:
    """Score both versions on the challenger's holdout rows and compare them on `metric`."""
    old = LoadedModel(load_version(con, spec.name, champion))
    new = LoadedModel(load_version(con, spec.name, challenger))
    if old.stored.task != new.stored.task:
        raise _CannotCompare(f"its task is {old.stored.task}")
    if list(old.stored.target.classes) != list(new.stored.target.classes):
        raise _CannotCompare(f"its classes {list(old.stored.target.classes)} differ")
    columns = relation_columns(con, spec.schema, spec.relation)
    label = f"{spec.schema}.{spec.relation}"
    try:
        check_schema(f"champion v{champion}", old.stored.features, columns, label)
    except SchemaMismatch as e:
        raise _CannotCompare(str(e).split(": ", 1)[-1]) from e
    target = quote(spec.target)
    source = qualified(spec.schema, spec.relation)
    # Streamed in batches, keeping only labels and the two predictions: the holdout may be
    # far bigger than memory (pyml.extmem).
    reader = stream_arrow(con, f"select {target} as __pyml_y, "
                               f"{matrix_sql(old.stored.features)} as __pyml_old, "
                               f"{matrix_sql(new.stored.features)} as __pyml_new "
                               f"from {source} where {target} is not null and "
                               f"({holdout_sql}) = 2", COMPARE_BATCH_ROWS, holdout_params)
    classes = (pa.array(list(new.stored.target.classes)) if spec.task != "regression"
               else None)
    ys, olds, news = [], [], []
    for batch in reader:
        y_col = batch.column(0)
        if classes is not None and pc.index_in(y_col, value_set=classes).null_count:
            reader.close()
            raise _CannotCompare("the holdout has labels outside the trained classes")
        ys.append(labels(y_col, classes))
        olds.append(_raw(old, batch.column(1)))
        news.append(_raw(new, batch.column(2)))
    if not ys:
        raise _CannotCompare("the holdout is empty")
    return compare(spec.task, metric, np.concatenate(ys), np.concatenate(olds),
                   np.concatenate(news), old.stored.threshold, new.stored.threshold)


def _raw(model: LoadedModel, column: pa.Array) -> np.ndarray:
    X = model.encoder.from_fixed(column, f"model '{model.name}' v{model.version}")
    return np.asarray(model.stored.booster.inplace_predict(X), dtype=np.float64)
