"""The promotion policy: does a new version replace the champion?

The spec's `promote:` policy decides at train time, inside the transaction that writes the
version (`pyml.store.registry.write_version(..., decide=...)`): `auto` re-scores the champion
and the challenger on the rows that are holdout for both and promotes the challenger when it
is not worse (by `min_delta`) on the chosen metric; `manual` leaves it to `pyml promote`. A
version identical to the champion (booster bytes, spec, features) is never promoted.
The store records the decision (statuses, ml.model_events); the decision itself is modelling.

Rows held out by both: when the two versions were split differently (another seed, fraction,
method, hash or time cut-off), part of the challenger's holdout is rows the champion trained
on, and scoring it there flatters it (issue 19: "v2 0.5615 vs champion v1 0.8807" for a v1
whose honest holdout AUC was 0.546). The champion's part expression is rebuilt from its
stored split record (pyml.data.split) and only rows in both holdouts are compared; with fewer
than MIN_COMMON_ROWS of them (or MIN_CLASS_ROWS of a class) the challenger stays challenger.

Each version is scored with the booster its holdout metrics measured (ml.final_fit's
evaluated booster when the stored one is a refit on every labelled row, holdout included):
refit and fold averaging change what is trained, never what is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from pyml.data import split
from pyml.data.encode import check_schema, matrix_sql
from pyml.data.trainset import labels
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.dbt.spec_tune import promote_metric
from pyml.engines.duckdb import qualified, quote, relation_columns, stream_arrow
from pyml.errors import DataError, PymlError, RegistryError, SchemaMismatch
from pyml.modelling.compare import Comparison, MetricUndefined, compare
from pyml.modelling.model import LoadedModel
from pyml.store.evaluation import model_row
from pyml.store.final_fit import evaluated_booster
from pyml.store.lifecycle import Decision
from pyml.store.registry import load_version, same_model

COMPARE_BATCH_ROWS = DEFAULT_BATCH_ROWS  # holdout rows per batch when models compete
# Fewest rows held out by both versions to compare them on (and, for classifiers, of each
# class): below that a metric difference is noise, and no other rows are honest for both.
MIN_COMMON_ROWS = 200
MIN_CLASS_ROWS = 10

Log = Callable[[str], None]


class HoldoutPolicy:
    """The spec's `promote:` policy, comparing on rows held out by both versions.

    `holdout_sql` is train.py's split expression (2 = holdout) with its parameters: the
    challenger's holdout, narrowed to the champion's (rebuilt from its split record).
    """

    def __init__(self, spec: ModelSpec, holdout_sql: str, holdout_params: list[Any],
                 log: Log) -> None:
        self.spec, self.holdout_sql, self.holdout_params = spec, holdout_sql, holdout_params
        self.log = log

    def __call__(self, con: duckdb.DuckDBPyConnection, version: int, champion: int
                 ) -> Decision:
        return decide(self.spec, version, champion, self.log, lambda metric: holdout_comparison(
            con, self.spec, champion, version, metric, self.holdout_sql, self.holdout_params),
            identical=lambda: same_model(con, self.spec.name, champion, version))


def decide(spec: ModelSpec, version: int, champion: int, log: Log,
           comparison: Callable[[str], tuple[Comparison, list[str]]],
           identical: Callable[[], bool]) -> Decision:
    """The `promote:` rule, whatever engine scores the two versions: `comparison(metric)`
    compares champion and challenger on the rows both held out (and says how their splits
    differ); too few such rows, or a champion that cannot be scored, keeps the challenger.
    A challenger that is the champion's twin (`identical()`: the same booster bytes, spec
    and features) is never promoted: it would retire its twin on a gain of exactly 0."""
    policy = spec.promote
    if policy.policy == "manual":
        return Decision(False, "registered", f"promote.policy is manual: challenger to "
                        f"v{champion}; `pyml promote {spec.name}` makes it the champion")
    if identical():
        reason = (f"v{version} is identical to champion v{champion} (the same booster, spec "
                  f"and features): v{champion} stays champion")
        log(f"[{spec.name}] v{version} stays challenger: {reason}")
        return Decision(False, "rejected", reason)
    try:
        cmp, differ = comparison(promote_metric(policy, spec.task))
    except _TooFewRows as e:
        reason = (f"v{version} was not compared with champion v{champion}: {e}; "
                  f"`pyml promote {spec.name}` promotes v{version} by hand")
        log(f"[{spec.name}] v{version} stays challenger: {reason}")
        return Decision(False, "registered", reason)
    except MetricUndefined as e:
        reason = (f"v{version} was not compared with champion v{champion}: {e}; choose "
                  f"another promote.metric, or `pyml promote {spec.name}` promotes "
                  f"v{version} by hand")
        log(f"[{spec.name}] v{version} stays challenger: {reason}")
        return Decision(False, "registered", reason)
    except _CannotCompare as e:
        reason = (f"champion v{champion} cannot be scored on v{version}'s holdout rows "
                  f"({e}); `pyml promote {spec.name}` promotes v{version} by hand")
        log(f"[{spec.name}] v{version} stays challenger: {reason}")
        return Decision(False, "registered", reason)
    text = cmp.describe(f"champion v{champion}", f"v{version}")
    if differ:
        text += f", held out by both versions (their splits differ: {', '.join(differ)})"
    metrics = {"metric": cmp.metric, "champion": {"version": champion, "value": cmp.a},
               "challenger": {"version": version, "value": cmp.b}, "gain": cmp.gain,
               "ci95": None if cmp.ci_low is None else [cmp.ci_low, cmp.ci_high],
               "n_rows": cmp.n_rows, "min_delta": policy.min_delta}
    if cmp.gain >= -1e-12 + policy.min_delta:
        reason = f"auto: {text}; not worse by min_delta {policy.min_delta:g}"
        log(f"[{spec.name}] v{version} promoted to champion: {text}")
        return Decision(True, "promoted", reason, metrics)
    reason = (f"auto: {text}; needs a gain of at least {policy.min_delta:g}: "
              f"v{champion} stays champion")
    log(f"[{spec.name}] v{version} stays challenger: {text}")
    return Decision(False, "rejected", reason, metrics)


class _CannotCompare(PymlError):
    pass


class _TooFewRows(_CannotCompare):
    pass


def champion_holdout(con: duckdb.DuckDBPyConnection, spec: ModelSpec, old: LoadedModel,
                     challenger: int, columns: dict[str, str]
                     ) -> tuple[str, list[Any], list[str]]:
    """The champion's holdout condition (rebuilt from its stored split record), its
    parameters, and how its split differs from the challenger's ([] when alike)."""
    old_split = dict(model_row(con, spec.name, old.version).get("split") or {})
    new_split = model_row(con, spec.name, challenger).get("split") or {}
    return holdout_condition(old_split, new_split, old.stored.spec, tuple(old.stored.key),
                             spec.key, columns, "duckdb")


def holdout_condition(old_split: dict[str, Any], new_split: Mapping[str, Any],
                      old_spec: Mapping[str, Any], key: tuple[str, ...],
                      spec_key: Sequence[str], columns: Mapping[str, str], dialect: str
                      ) -> tuple[str, list[Any], list[str]]:
    """champion_holdout's rule on either engine (`dialect`): the condition that holds on the
    rows both the champion's split record and the challenger's held out, its parameters,
    and how the two splits differ; _CannotCompare when the record cannot be replayed on the
    relation's `columns`."""
    if old_split.get("method") == "time" and not old_split.get("column"):
        # Records written before the column was stored: the version's own spec names it.
        old_split["column"] = (old_spec.get("split") or {}).get("column")
    needed = [old_split.get("column")] if old_split.get("method") == "time" else list(key)
    missing = [str(c) for c in needed if c not in columns]
    if missing:
        raise _CannotCompare(f"its split needs column '{missing[0]}', which is not in the "
                             "relation, so its holdout rows are unknown")
    try:
        sql, params = split.record_part_sql(old_split, key, dialect)
    except (DataError, KeyError, TypeError, ValueError) as e:
        raise _CannotCompare(f"its split record cannot be read: {e}") from e
    differ = split.differences(old_split, new_split)
    if key != tuple(spec_key) and old_split.get("method") != "time":
        differ.append(f"key {', '.join(key)} vs {', '.join(spec_key)}")
    return f"({sql}) = 2", params, differ


def _check_common(n: int, y: np.ndarray, classes: pa.Array | None, differ: list[str]) -> None:
    """Refuse to compare on too few rows held out by both versions."""
    why = f" (their splits differ: {', '.join(differ)})" if differ else ""
    tail = ("needed to compare them without scoring a version on rows it trained on"
            if differ else "needed for a comparison that is more than noise")
    if n < MIN_COMMON_ROWS:
        raise _TooFewRows(f"only {n} rows are held out by both{why}, fewer than the "
                          f"{MIN_COMMON_ROWS} {tail}")
    if classes is not None:
        counts = np.bincount(y.astype(np.int64), minlength=len(classes))
        for value, count in zip(classes.to_pylist(), counts, strict=True):
            if count < MIN_CLASS_ROWS:
                raise _TooFewRows(f"only {count} of the {n} rows held out by both{why} have "
                                  f"class {value}, fewer than the {MIN_CLASS_ROWS} {tail}")


def holdout_comparison(con: duckdb.DuckDBPyConnection, spec: ModelSpec, champion: int,
                       challenger: int, metric: str, holdout_sql: str,
                       holdout_params: list[Any]) -> tuple[Comparison, list[str]]:
    """Score both versions on the rows held out by both and compare them on `metric`;
    also how the two versions' splits differ ([] when alike)."""
    old = LoadedModel(load_version(con, spec.name, champion))
    new = LoadedModel(load_version(con, spec.name, challenger))
    if old.stored.task != new.stored.task:
        raise _CannotCompare(f"its task is {old.stored.task}")
    if list(old.stored.target.classes) != list(new.stored.target.classes):
        raise _CannotCompare(classes_differ(list(old.stored.target.classes),
                                             list(new.stored.target.classes)))
    columns = relation_columns(con, spec.schema, spec.relation)
    both_sql, both_params, differ = champion_holdout(con, spec, old, challenger, dict(columns))
    label = f"{spec.schema}.{spec.relation}"
    try:
        check_schema(f"champion v{champion}", old.stored.features, columns, label)
    except SchemaMismatch as e:
        raise _CannotCompare(str(e).split(": ", 1)[-1]) from e
    # Each version scores with the booster its holdout metrics measured: a refit booster
    # (final_fit: refit) has trained on these very rows, and would win on them unfairly.
    try:
        old_booster = evaluated_booster(con, spec.name, champion) or old.stored.booster
    except RegistryError as e:
        raise _CannotCompare("its evaluated booster in ml.final_fit is missing or "
                             "unreadable, and its refit booster trained on these rows") from e
    new_booster = evaluated_booster(con, spec.name, challenger) or new.stored.booster
    target = quote(spec.target)
    source = qualified(spec.schema, spec.relation)
    # Streamed in batches, keeping only labels and the two predictions: the holdout may be
    # far bigger than memory (pyml.extmem).
    reader = stream_arrow(con, f"select {target} as __pyml_y, "
                               f"{matrix_sql(old.stored.features)} as __pyml_old, "
                               f"{matrix_sql(new.stored.features)} as __pyml_new "
                               f"from {source} where {target} is not null and "
                               f"({holdout_sql}) = 2 and {both_sql}", COMPARE_BATCH_ROWS,
                         [*holdout_params, *both_params])
    classes = (pa.array(list(new.stored.target.classes)) if spec.task != "regression"
               else None)
    ys, olds, news = [], [], []
    for batch in reader:
        y_col = batch.column(0)
        if classes is not None and pc.index_in(y_col, value_set=classes).null_count:
            reader.close()
            raise _CannotCompare("the holdout has labels outside the trained classes")
        ys.append(labels(y_col, classes))
        olds.append(_raw(old, old_booster, batch.column(1)))
        news.append(_raw(new, new_booster, batch.column(2)))
    y = np.concatenate(ys) if ys else np.empty(0)
    _check_common(len(y), y, classes, differ)
    return compare(spec.task, metric, y, np.concatenate(olds), np.concatenate(news),
                   old.stored.threshold, new.stored.threshold), differ


def _raw(model: LoadedModel, booster: xgb.Booster, column: pa.Array) -> np.ndarray:
    X = model.encoder.from_fixed(column, f"model '{model.name}' v{model.version}")
    return np.asarray(booster.inplace_predict(X), dtype=np.float64)


def classes_differ(old: list[object], new: list[object]) -> str:
    """Why two versions' class lists cannot be compared: other classes, or the same ones in
    another order (a changed positive_class: the positive class is the last)."""
    if sorted(map(str, old)) == sorted(map(str, new)):
        return (f"its classes {old} are in another order than {new} (positive_class "
                "changed)")
    return f"its classes {old} differ from {new}"
