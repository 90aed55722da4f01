"""`pyml monitor`: drift and performance per time window, as rows of ml.monitoring.

The scored relation (what `pyml drift` reads) is cut into windows of the spec's
`monitor.time_column` (day, week, month, quarter or year; the whole relation without one)
and copied once into a temporary table. Per window and feature the statistics of
pyml.modelling.monitor_stats run in DuckDB against the version's training snapshot; the
booster scores the rows once, so the prediction's own distribution is monitored too
(`__prediction__`, against the booster's output on the snapshot's sample rows), and for a
binary model the label-free performance estimate (pyml.modelling.cbpe) sits beside the
realised one where the relation carries labels (`__model__`). Every statistic with a
threshold alerts above it: one gate, exit code 2 in the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data.encode import Encoder, check_schema, is_range_error, matrix_sql, range_error
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import fetch_arrow, qualified, quote, relation_columns, stream_arrow
from pyml.errors import DataError, DriftDetected, SpecError
from pyml.modelling.monitor_stats import (
    PREDICTION,
    WINDOW,
    Stat,
    feature_stats,
    prediction_reference,
    prediction_stats,
    reference_matrix,
)
from pyml.session import Session
from pyml.store.drift import Snapshot
from pyml.store.monitoring import MonitorRow, write_monitoring
from pyml.store.registry import StoredModel
from pyml.verbs.drift import snapshotted_version

Log = Callable[[str], None]
VALUES = "__pyml_monitor_values"  # temporary tables of one run
PREDICTIONS = "__pyml_monitor_predictions"
_START, _END = "__pyml_start", "__pyml_end"
_LABEL, _PRED = "__pyml_label", "__pyml_prediction"
_EVALUATED = "__pyml_evaluated"  # binary: P(positive) of the fit the calibrator was fitted on
MODEL = "__model__"  # feature name of the model-level (performance) rows

# window -> (label SQL, date_trunc unit, interval) over a DATE/TIMESTAMP expression `{t}`.
_WINDOWS = {
    "day": ("strftime({t}, '%Y-%m-%d')", "day", "1 day"),
    "week": ("strftime({t}, '%G-W%V')", "week", "7 days"),  # ISO weeks start on Monday
    "month": ("strftime({t}, '%Y-%m')", "month", "1 month"),
    "quarter": ("strftime({t}, '%Y') || '-Q' || quarter({t})", "quarter", "3 months"),
    "year": ("strftime({t}, '%Y')", "year", "1 year"),
}
_TIME_TYPES = ("DATE", "TIMESTAMP")


@dataclass(frozen=True)
class MonitorResult:
    """What one model's `pyml monitor` computed (and wrote to ml.monitoring)."""

    name: str  # model name
    version: int  # version monitored (its training snapshot is the reference)
    relation: str  # schema.table monitored
    windows: tuple[str, ...]  # window labels, in time order
    features: int  # features compared
    rows: tuple[MonitorRow, ...]  # every statistic written
    computed_at: datetime  # when (ml.monitoring.computed_at)

    @property
    def alerts(self) -> list[MonitorRow]:
        """Rows whose value is above its threshold, by window, then as computed (features
        in model order, the prediction last)."""
        order = {w: i for i, w in enumerate(self.windows)}
        return sorted((r for r in self.rows if r.alert), key=lambda r: order[r.window])


def window_sql(window: str, t: str) -> tuple[str, str, str]:
    """SQL for a row's window label, start (inclusive) and end (exclusive), from the SQL
    expression `t` (a DATE or TIMESTAMP) and a window length (day ... year)."""
    fmt, unit, interval = _WINDOWS[window]
    start = f"date_trunc('{unit}', {t})::timestamp"
    return fmt.format(t=t), start, f"{start} + interval '{interval}'"


def _time_column(spec: ModelSpec, columns: Sequence[tuple[str, str]], label: str) -> str | None:
    column = spec.monitor.time_column
    if column is None:
        return None
    types = {c.lower(): (c, t) for c, t in columns}
    if column.lower() not in types:
        raise SpecError(f"{spec.where}: monitor.time_column '{column}' is not a column of "
                        f"{label}; name its DATE or TIMESTAMP column (e.g. the as-of date)")
    name, dtype = types[column.lower()]
    if not dtype.upper().startswith(_TIME_TYPES):
        raise SpecError(f"{spec.where}: monitor.time_column '{column}' of {label} is {dtype}; "
                        "it must be a DATE or TIMESTAMP column (cast it in the dbt model)")
    return name


def _copy(con: duckdb.DuckDBPyConnection, spec: ModelSpec, stored: StoredModel,
          relation: tuple[str, str], columns: Sequence[tuple[str, str]], label: str,
          log: Log | None) -> None:
    """The relation's features (and label), with each row's window, into VALUES."""
    t = _time_column(spec, columns, label)
    if t is None:
        window, start, end, where = "'all'", "null::timestamp", "null::timestamp", ""
    else:
        window, start, end = window_sql(spec.monitor.window, quote(t))
        where = f" where {quote(t)} is not null"
    items = [f"{window} as {WINDOW}", f"{start} as {_START}", f"{end} as {_END}"]
    items += [quote(f.name) for f in stored.features]
    target = stored.target_column
    if stored.task == "binary" and target and target.lower() in {c.lower() for c, _ in columns}:
        items.append(f"{quote(target)} as {_LABEL}")
    con.execute(f"create or replace temp table {VALUES} as select {', '.join(items)} "
                f"from {qualified(*relation)}{where}")
    if t is not None and log:
        [(skipped,)] = con.execute(f"select count(*) from {qualified(*relation)} where "
                                   f"{quote(t)} is null").fetchall()
        if skipped:
            log(f"[{spec.name}] {skipped:,} rows of {label} have no {t}: left out of the "
                "windows")


def _predictions(stored: StoredModel, X: np.ndarray) -> np.ndarray:
    """The monitored prediction: binary P(positive), regression the value, multiclass the
    top class's probability."""
    raw = np.asarray(stored.booster.inplace_predict(X), dtype=np.float64)
    return raw.max(axis=1) if raw.ndim == 2 else raw


def _score(con: duckdb.DuckDBPyConnection, stored: StoredModel, batch_size: int, where: str,
           labelled: bool) -> None:
    """Score VALUES with the booster into PREDICTIONS (window, prediction[, label 0/1])."""
    encoder = Encoder(stored.features)
    sql = f"select {WINDOW}, {matrix_sql(stored.features)}" + (f", {_LABEL}" if labelled else "")
    windows: list[pa.Array] = []
    preds: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    classes = pa.array(list(stored.target.classes)) if labelled else None
    # A refit's calibrator is its evaluated fit's (pyml.modelling.cbpe): score with both.
    from pyml.store.final_fit import evaluated_booster
    evaluated = (evaluated_booster(con, stored.name, stored.version)
                 if stored.task == "binary" else None)
    evals: list[np.ndarray] = []
    # On `con` itself: a cursor is another connection, which cannot see the temp table.
    reader = stream_arrow(con, f"{sql} from {VALUES}", batch_size)
    try:
        for batch in reader:
            windows.append(batch.column(0))
            X = encoder.from_fixed(batch.column(1), where)
            preds.append(_predictions(stored, X))
            evals.append(preds[-1] if evaluated is None else
                         np.asarray(evaluated.inplace_predict(X), dtype=np.float64))
            if classes is not None:
                codes = pc.index_in(batch.column(2), value_set=classes)
                labels.append(pc.fill_null(pc.cast(codes, pa.float64()), np.nan)
                              .to_numpy(zero_copy_only=False))
    finally:
        reader.close()
    data: dict[str, Any] = {
        WINDOW: pa.concat_arrays(windows) if windows else pa.array([], pa.string()),
        _PRED: pa.array(np.concatenate(preds) if preds else np.empty(0)),
        _EVALUATED: pa.array(np.concatenate(evals) if evals else np.empty(0))}
    if classes is not None:
        data[_LABEL] = pa.array(np.concatenate(labels) if labels else np.empty(0))
    scored = pa.table(data)  # noqa: F841  (read by DuckDB's replacement scan below)
    con.execute(f"create or replace temp table {PREDICTIONS} as select * from scored")


def _performance(con: duckdb.DuckDBPyConnection, stored: StoredModel, labelled: bool
                 ) -> list[Stat]:
    """Binary: estimated (calibrated, label-free) and realised performance per window."""
    from pyml.modelling.cbpe import window_performance
    from pyml.store.calibrators import load_calibrator

    calibrator = load_calibrator(con, stored.name, stored.version)
    label = f", {_LABEL}" if labelled else ""
    table = fetch_arrow(con, f"select {WINDOW}, {_PRED}, {_EVALUATED}{label} from {PREDICTIONS}")
    windows = table.column(0).to_numpy(zero_copy_only=False)
    probs, evaluated = table.column(1).to_numpy(), table.column(2).to_numpy()
    labels = table.column(3).to_numpy() if labelled else None
    out = []
    for w in sorted(set(windows)):
        mask = windows == w
        perf = window_performance(probs[mask], None if labels is None else labels[mask],
                                  calibrator, stored.threshold,
                                  evaluated_prob=evaluated[mask])
        out += [Stat(str(w), MODEL, "model", metric, float(value))
                for metric, value in sorted(perf.items())]
    return out


def monitor_relation(con: duckdb.DuckDBPyConnection, spec: ModelSpec,
                     relation: tuple[str, str], version: int | None = None, *,
                     log: Log | None = None) -> MonitorResult:
    """Monitor `relation` window by window against a version's training snapshot; replace
    those windows' rows of ml.monitoring."""
    name = spec.name
    stored, snaps = snapshotted_version(con, name, version, "pyml monitor")
    return monitor_version(con, spec, stored, snaps, relation, log=log)


def monitor_version(con: duckdb.DuckDBPyConnection, spec: ModelSpec, stored: StoredModel,
                    snaps: dict[str, Snapshot], relation: tuple[str, str], *,
                    log: Log | None = None) -> MonitorResult:
    """monitor_relation for a loaded version and its snapshots (feature -> Snapshot)."""
    name = spec.name
    label = f"{relation[0]}.{relation[1]}"
    where = f"model '{name}' v{stored.version}"
    columns = relation_columns(con, *relation)
    check_schema(where, stored.features, columns, label)
    started = time.perf_counter()
    try:
        _copy(con, spec, stored, relation, columns, label, log)
        windows = {str(w): (s, e, int(n)) for w, s, e, n in con.execute(
            f"select {WINDOW}, min({_START}), min({_END}), count(*) from {VALUES} "
            "group by all order by 2 nulls first, 1").fetchall()}
        if not windows:
            raise DataError(f"{where}: {label} has no rows to monitor (did `dbt build` run?"
                            + (f" Are all its {spec.monitor.time_column} values NULL?)"
                               if spec.monitor.time_column else ")"))
        features = [f for f in stored.features if f.name in snaps]
        stats: list[Stat] = []
        for f in features:
            stats += feature_stats(con, VALUES, f.name, snaps[f.name])
        labelled = _has_label(con)
        _score(con, stored, spec.score.batch_size, f"{where} on {label}", labelled)
        X_ref = reference_matrix([snaps[f.name] for f in stored.features]
                                 if len(features) == len(stored.features) else [])
        if X_ref is not None:
            ref = prediction_reference(_predictions(stored, X_ref), len(X_ref))
            stats += prediction_stats(con, PREDICTIONS, _PRED, ref)
        elif log:
            log(f"[{name}] v{stored.version} stores no sample rows (trained before pyml "
                "kept them): no KS, Wasserstein or prediction statistics; retrain to get them")
        if stored.task == "binary":
            stats += _performance(con, stored, labelled)
    except (duckdb.Error, pa.ArrowException) as e:
        if is_range_error(e):  # a value beyond float32: name the column, as score does
            raise range_error(con, qualified(*relation), stored.features, where) from e
        raise
    finally:
        con.execute(f"drop table if exists {VALUES}")
        con.execute(f"drop table if exists {PREDICTIONS}")
    rows = tuple(_row(s, windows, spec) for s in stats)
    small = [f"{w} ({n:,})" for w, (_, _, n) in windows.items() if n < spec.monitor.min_rows]
    if small and log:
        log(f"[{name}] fewer rows than monitor.min_rows ({spec.monitor.min_rows:,}) in "
            f"{', '.join(small)}: statistics recorded, no alert (too few rows to tell drift "
            "from noise)")
    computed_at = datetime.now().replace(microsecond=0)
    write_monitoring(con, name, stored.version, label, computed_at, rows)
    if log:
        log(f"[{name}] monitored {sum(n for *_, n in windows.values()):,} rows of {label} in "
            f"{len(windows)} window(s) against v{stored.version} in "
            f"{time.perf_counter() - started:.1f}s")
    return MonitorResult(name, stored.version, label, tuple(windows), len(features), rows,
                         computed_at)


def _has_label(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(f"select count(*) from (describe {VALUES}) where column_name = ?",
                            [_LABEL]).fetchall()[0][0])


def _row(stat: Stat, windows: dict[str, tuple[datetime | None, datetime | None, int]],
         spec: ModelSpec) -> MonitorRow:
    start, end, rows = windows[stat.window]
    threshold = (None if stat.kind == "model" or rows < spec.monitor.min_rows
                 else spec.monitor.threshold(stat.metric))
    return MonitorRow(stat.window, start, end, rows, stat.feature, stat.kind, stat.metric,
                      stat.value, threshold)


def monitor(session: Session, specs: Sequence[ModelSpec], *, version: int | None = None
            ) -> list[MonitorResult]:
    """Monitor each spec's score relation (score.relation, else the feature relation)."""
    with session.database() as con:
        return [monitor_relation(con, spec, session.scored_relation(spec), version,
                                 log=session.log)
                for spec in specs]


def alert_line(result: MonitorResult, row: MonitorRow) -> str:
    """ALERT churn v3 2024-Q3 feature tenure_months psi 0.410 > 0.200"""
    what = "prediction" if row.feature == PREDICTION else f"feature {row.feature}"
    return (f"ALERT {result.name} v{result.version} {row.window} {what} {row.metric} "
            f"{row.value:.3f} > {row.threshold:.3f}")


def verdict(result: MonitorResult) -> str:
    """One line: how many alerts over how many windows and features."""
    alerts = result.alerts
    scope = (f"{len(result.windows)} window(s) x {result.features} feature(s) of "
             f"{result.relation}")
    if not alerts:
        return f"{result.name} v{result.version}: no alert in {scope} (ml.monitoring)"
    hit = len({r.window for r in alerts})
    return (f"{result.name} v{result.version}: {len(alerts)} alert(s) in {hit} of {scope} "
            "(ml.monitoring)")


def monitor_found(results: Sequence[MonitorResult]) -> DriftDetected | None:
    """The finding to raise (exit code 2) when any result has an alert."""
    alerted = [r for r in results if r.alerts]
    if not alerted:
        return None
    return DriftDetected("Monitoring alerts: " + "; ".join(
        f"{r.name} v{r.version} ({len(r.alerts)})" for r in alerted), results)
