"""The `ml` schema's tables: columns, comments, creation and migration, in one place.

Every table pyml keeps in `ml` is declared here once, with a comment on the table and on
each column (DuckDB's `COMMENT ON`, readable through `duckdb_tables()` / `duckdb_columns()`
and shown by BI tools), so the registry documents itself. `ensure_schema` creates what is
missing, adds the columns later releases introduced, fills in missing comments and migrates
registries written before statuses existed. The tables whose columns depend on the model or
relation (predictions, explanations, profiles) are commented by their writer
(pyml.store.writer) in the transaction that builds them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from pyml.engines.duckdb import first_row, qualified, quote, transaction
from pyml.store import events, integrity
from pyml.store.names import SCHEMA
from pyml.tasks import HEADLINE_METRIC


@dataclass(frozen=True)
class Column:
    """One column of an ml table."""

    name: str  # column name
    type: str  # DuckDB type, with `not null` where it holds
    comment: str  # what it holds, for people reading the registry


@dataclass(frozen=True)
class Table:
    """One table of the ml schema."""

    name: str  # table name in the ml schema
    comment: str  # what one row is
    columns: tuple[Column, ...]  # in table order
    key: tuple[str, ...] = ()  # primary key columns


_MODEL = Column("model_name", "varchar not null", "model name (the pyml spec's name)")
_VERSION = Column("version", "integer not null", "model version, 1, 2, ... per model")


def _c(name: str, type_: str, comment: str) -> Column:
    return Column(name, type_, comment)


MODELS = Table("models", "One row per trained model version: what it was trained on, how, "
               "and the booster itself (XGBoost UBJ bytes).", (
    _MODEL, _VERSION,
    _c("created_at", "timestamp not null", "when the version was trained (local time)"),
    _c("task", "varchar not null", "binary | multiclass | regression"),
    _c("objective", "varchar not null", "XGBoost objective"),
    _c("description", "varchar", "the spec's description of the model"),
    _c("feature_model", "varchar not null", "dbt unique_id of the feature model"),
    _c("feature_relation", "varchar not null", "schema.table the version was trained on"),
    _c("target", "varchar not null", "label column"),
    _c("target_type", "varchar not null", "DuckDB type of the label column"),
    _c("classes", "json", "classifier labels in class-index order (JSON list); NULL for "
                          "regression"),
    _c("key_columns", "json not null", "key columns of the feature relation (JSON list)"),
    _c("features", "json not null", "inputs in booster order with kinds and category codes "
                                    "(JSON)"),
    _c("spec", "json not null", "the validated pyml spec the version was trained with (JSON)"),
    _c("params", "json not null", "final XGBoost parameters (JSON)"),
    _c("split", "json not null", "split method, fractions, cut-offs and row counts (JSON)"),
    _c("train_rows", "bigint not null", "rows in the training part"),
    _c("validation_rows", "bigint not null", "rows in the validation part (early stopping)"),
    _c("test_rows", "bigint not null", "rows in the holdout part (the metrics' rows)"),
    _c("dropped_null_target_rows", "bigint not null", "rows skipped for a NULL label"),
    _c("num_trees", "integer not null", "boosting rounds of the stored booster (see "
                                          "ml.final_fit)"),
    _c("best_iteration", "integer", "early stopping's best round, counted from 0 "
                                    "(best_iteration + 1 rounds); NULL without early stopping"),
    _c("dbt_invocation_id", "varchar", "dbt run that built the feature model, if known"),
    _c("pyml_version", "varchar not null", "pyml release that trained the version"),
    _c("xgboost_version", "varchar not null", "XGBoost release that trained the version"),
    _c("booster_format", "varchar not null", "format of `booster`: ubj (or json)"),
    _c("booster", "blob not null", "the trained booster, XGBoost's own bytes (never "
                                   "unpickled)"),
    _c("status", "varchar", "champion | challenger | retired (the champion serves)"),
    _c("note", "varchar", "why the version exists, e.g. the tuning result"),
), ("model_name", "version"))

METRICS = Table("metrics", "One row per metric of a version on a split (holdout, cv), "
                "beside a trivial baseline's value on the same rows.", (
    _MODEL, _VERSION,
    _c("split", "varchar not null", "holdout, or cv (mean over k folds)"),
    _c("metric", "varchar not null", "metric name, e.g. auc, log_loss, rmse"),
    _c("value", "double", "the model's value; NULL where it is undefined"),
    _c("baseline", "double", "a model that learned nothing: the training prior or mean"),
    _c("n_rows", "bigint not null", "rows the metric was computed on"),
    _c("ci_low", "double", "lower end of the 95% bootstrap interval of value"),
    _c("ci_high", "double", "upper end of the 95% bootstrap interval of value"),
    _c("std", "double", "split cv: standard deviation over the folds"),
), ("model_name", "version", "split", "metric"))

FEATURE_IMPORTANCE = Table("feature_importance", "One row per feature and kind of importance "
                           "of a version (XGBoost gain/cover/weight, mean |SHAP|).", (
    _MODEL, _VERSION,
    _c("feature", "varchar not null", "feature column"),
    _c("importance_type", "varchar not null", "gain | cover | weight | total_gain | "
                                              "total_cover | mean_abs_shap"),
    _c("value", "double not null", "the importance (0 for a feature no tree uses)"),
), ("model_name", "version", "feature", "importance_type"))

MODEL_EVENTS = Table("model_events", "One row per change of a version's status (promotion, "
                     "rejection, rollback, migration), with who and why.", (
    _c("event_id", "bigint not null", "event number, increasing over the whole registry"),
    _MODEL, _VERSION,
    _c("event", "varchar not null", "promoted | rejected | registered | retired | restored | "
                                    "rolled_back | migrated"),
    _c("from_status", "varchar", "status before the event"),
    _c("to_status", "varchar", "status after the event"),
    _c("actor", "varchar not null", "OS user who ran pyml"),
    _c("event_at", "timestamp not null", "when (local time)"),
    _c("reason", "varchar", "one line: why"),
    _c("metrics", "json", "what was compared, when metrics decided (JSON)"),
), ("event_id",))

CALIBRATION = Table("calibration", "Binary models: one row per equal-width probability bin "
                    "of the holdout, predicted vs observed.", (
    _MODEL, _VERSION,
    _c("bin", "integer not null", "bin number, 1 = lowest probabilities"),
    _c("bin_low", "double not null", "lower edge of the bin"),
    _c("bin_high", "double not null", "upper edge of the bin"),
    _c("mean_predicted", "double not null", "mean predicted probability in the bin"),
    _c("observed_rate", "double not null", "share of positives in the bin"),
    _c("count", "bigint not null", "holdout rows in the bin"),
), ("model_name", "version", "bin"))

LIFT = Table("lift", "Binary models: one row per decile of the holdout by score, highest "
             "first.", (
    _MODEL, _VERSION,
    _c("decile", "integer not null", "1 = the tenth of rows with the highest scores"),
    _c("n_rows", "bigint not null", "rows in the decile"),
    _c("positive_rate", "double not null", "share of positives in the decile"),
    _c("cumulative_capture", "double not null", "share of all positives in deciles 1..this"),
    _c("lift", "double not null", "positive rate of deciles 1..this over the overall rate"),
), ("model_name", "version", "decile"))

CURVES = Table("curves", "Points of the holdout's ROC and precision-recall curves (binary) "
               "or (predicted, residual) pairs (regression).", (
    _MODEL, _VERSION,
    _c("curve", "varchar not null", "roc | pr | residuals"),
    _c("point", "integer not null", "point number along the curve"),
    _c("x", "double not null", "roc: false positive rate; pr: recall; residuals: predicted"),
    _c("y", "double not null", "roc: true positive rate; pr: precision; residuals: actual "
                               "minus predicted"),
    _c("threshold", "double", "probability threshold of the point (roc, pr)"),
), ("model_name", "version", "curve", "point"))

TRAINING_SNAPSHOTS = Table("training_snapshots", "One row per feature of a version: its "
                           "distribution over the training rows, what `pyml drift` compares "
                           "with (never the rows).", (
    _MODEL, _VERSION,
    _c("feature", "varchar not null", "feature column"),
    _c("kind", "varchar not null", "numeric | categorical"),
    _c("n_rows", "bigint not null", "training rows profiled"),
    _c("null_count", "bigint not null", "of which NULL"),
    _c("null_share", "double", "null_count / n_rows"),
    _c("bin_edges", "json", "numeric: inner decile edges (float32 values, JSON list)"),
    _c("bin_counts", "json", "rows per bin (numeric) or per category (categorical)"),
    _c("categories", "json", "categorical: the training categories (JSON list)"),
    _c("ks_points", "json", "numeric: distinct training percentiles (JSON list)"),
    _c("ks_cdf", "json", "share of non-null training values <= each ks_point"),
    _c("sample", "double[]", "up to 10,000 seeded training rows' values, the same rows for "
                             "every feature (numeric: float32 values; categorical: codes; "
                             "NULL = missing): `pyml monitor`'s KS, Wasserstein and "
                             "prediction reference"),
), ("model_name", "version", "feature"))

MONITORING = Table("monitoring", "One row per model version, window, feature and statistic "
                   "of `pyml monitor` (feature '__prediction__': the prediction's "
                   "distribution; '__model__': performance); a rerun replaces its windows.", (
    _MODEL, _VERSION,
    _c("relation", "varchar not null", "schema.table that was monitored"),
    _c("window_label", "varchar not null", "window, e.g. 2024-Q3, 2024-07, 2024-W27, or "
                                           "all (the whole relation)"),
    _c("window_start", "timestamp", "first instant of the window (NULL for all)"),
    _c("window_end", "timestamp", "first instant after the window (NULL for all)"),
    _c("rows", "bigint not null", "rows of the relation in the window"),
    _c("feature", "varchar not null", "feature column, __prediction__ or __model__"),
    _c("kind", "varchar not null", "numeric | categorical | prediction | model"),
    _c("metric", "varchar not null", "psi | ks | wasserstein | jensen_shannon | hellinger | "
                                     "chi2 | chi2_p | linf | unseen_share | null_share | "
                                     "null_share_change | estimated_* | expected_tp/fp/"
                                     "tn/fn | realised_* | labelled_rows"),
    _c("value", "double", "the statistic (NULL where undefined)"),
    _c("threshold", "double", "alert when value > threshold (NULL: no alert rule, or the "
                              "window has fewer rows than monitor.min_rows)"),
    _c("alert", "boolean not null", "value > threshold"),
    _c("computed_at", "timestamp not null", "when `pyml monitor` ran (local time)"),
), ("model_name", "version", "window_label", "feature", "metric"))

DRIFT = Table("drift", "One row per feature and statistic of each `pyml drift` check of a "
              "relation against a version's training snapshot.", (
    _MODEL, _VERSION,
    _c("feature", "varchar not null", "feature column"),
    _c("metric", "varchar not null", "psi | ks | unseen_share | null_share_train | "
                                     "null_share_now"),
    _c("value", "double", "the statistic"),
    _c("checked_at", "timestamp not null", "when the check ran (local time)"),
    _c("relation", "varchar", "schema.table that was compared"),
))

TRIALS = Table("trials", "One row per Optuna trial of a `pyml tune` study (train/validation "
               "parts, or folds of them with tune.cv; never the holdout).", (
    _MODEL,
    _c("study", "varchar not null", "study id: <model>-<time>-<random>"),
    _c("trial_number", "integer not null", "trial number in the study, from 1 as the log "
                                           "counts; 1 = the spec's params"),
    _c("version", "integer", "model version the study's best parameters trained"),
    _c("params", "json not null", "the trial's parameters (JSON)"),
    _c("metric", "varchar not null", "validation metric the study optimised"),
    _c("direction", "varchar not null", "maximize | minimize"),
    _c("value", "double", "best validation value (tune.cv: mean over the folds; the last one "
                          "reached, if pruned)"),
    _c("best_round", "integer", "early stopping's best round"),
    _c("state", "varchar not null", "complete | pruned | fail"),
    _c("seconds", "double not null", "wall time of the trial"),
    _c("started_at", "timestamp not null", "when the trial started (local time)"),
    _c("study_id", "varchar", "the study's id, as `pyml tune` logs it and the version's note "
                              "names it: filter on it (same value as study)"),
    _c("folds", "integer", "tune.cv: folds the trial ran (fewer than tune.cv if pruned); NULL "
                           "without tune.cv"),
    _c("value_std", "double", "tune.cv: standard deviation of the folds' values"),
), ("study", "trial_number"))

LINEAGE = Table("lineage", "One row per model version: fingerprints of what it was trained "
                "from; `pyml train` skips a model whose inputs match those of a stored "
                "version (the champion first).", (
    _MODEL, _VERSION,
    _c("spec_sha256", "varchar not null", "sha256 of the resolved spec as canonical JSON, "
                                          "with how it trained (tuning, external memory)"),
    _c("sql_sha256", "varchar", "the feature model's SQL in dbt's manifest: raw:<sha256>, then "
                                "compiled:<sha256> when the manifest has it (after a dbt "
                                "compile/run/build of the model); NULL without a dbt project"),
    _c("data_sha256", "varchar not null", "order-independent fingerprint of the relation's "
                                          "used columns (names, types) and rows, from SQL"),
    _c("data_rows", "bigint not null", "rows the data fingerprint covers (NULL labels too)"),
    _c("booster_sha256", "varchar not null", "sha256 of the stored booster bytes"),
), ("model_name", "version"))

CALIBRATORS = Table("calibrators", "Binary models: one row per version, the isotonic map from "
                    "predicted to calibrated probability fitted on the holdout (label-free "
                    "performance estimates use it).", (
    _MODEL, _VERSION,
    _c("x", "double[] not null", "breakpoints: predicted probabilities, increasing"),
    _c("y", "double[] not null", "calibrated probability at each breakpoint (linear between, "
                                 "clipped outside)"),
    _c("threshold", "double not null", "the spec's threshold: positive when p >= threshold"),
    _c("fitted_rows", "bigint not null", "holdout rows the map was fitted on"),
), ("model_name", "version"))

# `ensure_schema` creates these, in this order. A column missing from an existing table (status,
# note, ci_low, ci_high, std came after the first release) is added by ALTER.
FINAL_FIT = Table("final_fit", "One row per model version trained on DuckDB: which booster "
                  "scores (refit on every labelled row, fold average, or the evaluated fit) "
                  "and which one the holdout metrics and promotion use.", (
    _MODEL, _VERSION,
    _c("method", "varchar not null", "refit | cv_average | none: what the stored booster is"),
    _c("scores_with", "varchar not null", "one line: the booster in ml.models.booster, and "
                                          "why no refit when none was done"),
    _c("metrics_from", "varchar not null", "one line: the booster the ml.metrics holdout "
                                           "rows measured"),
    _c("fit_rows", "bigint not null", "labelled rows the stored booster was fitted on"),
    _c("rounds", "integer not null", "boosting rounds of the stored booster"),
    _c("evaluated_booster", "blob", "the evaluated fit (XGBoost UBJ bytes) when it is not "
                                    "the stored booster: promotion scores holdout rows with "
                                    "it, never with a booster that trained on them"),
), ("model_name", "version"))

TABLES = (MODELS, METRICS, FEATURE_IMPORTANCE, MODEL_EVENTS, CALIBRATION, LIFT, CURVES,
          TRAINING_SNAPSHOTS, DRIFT, TRIALS, LINEAGE, CALIBRATORS, MONITORING, FINAL_FIT)

def literal(text: str) -> str:
    """`text` as a SQL string literal.

    Only for COMMENT ON, which takes no bound parameters; everything else binds values.
    """
    return "'" + text.replace("'", "''") + "'"


def create_sql(table: Table) -> str:
    """The CREATE TABLE IF NOT EXISTS statement of `table` in the ml schema."""
    cols = [f"{quote(c.name)} {c.type}" for c in table.columns]
    if table.key:
        cols.append(f"primary key ({', '.join(quote(k) for k in table.key)})")
    return f"create table if not exists {qualified(SCHEMA, table.name)} ({', '.join(cols)})"


def comment_table(con: duckdb.DuckDBPyConnection, table: str, table_comment: str,
                  columns: Mapping[str, str]) -> None:
    """COMMENT ON ml.<table> and on each column named in `columns` (column -> comment).

    Runs inside the caller's transaction, if any; a table built under a temporary name keeps
    its comments through the rename.
    """
    target = qualified(SCHEMA, table)
    con.execute(f"comment on table {target} is {literal(table_comment)}")
    for column, text in columns.items():
        con.execute(f"comment on column {target}.{quote(column)} is {literal(text)}")


def headline_sql(task_column: str) -> str:
    """A SQL CASE giving the headline metric's name of the task in `task_column` (an SQL
    expression), from `pyml.tasks.HEADLINE_METRIC`."""
    arms = " ".join(f"when {literal(task)} then {literal(metric)}"
                    for task, metric in HEADLINE_METRIC.items())
    return f"case {task_column} {arms} end"


def check_registry(con: duckdb.DuckDBPyConnection) -> None:
    """Refuse a damaged registry (pyml.store.integrity): RegistryDamaged, nothing written."""
    integrity.check_registry(con, TABLES)


def ensure_table(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    """Create one ml table if missing; add the columns later releases added; comment it.

    Cheap when all is in place (a few catalog queries), so every write path may call it; safe
    inside a transaction. A damaged registry is refused first, never patched up.
    """
    check_registry(con)
    _ensure_table(con, table)


def _ensure_table(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    con.execute(f"create schema if not exists {quote(SCHEMA)}")
    con.execute(create_sql(table))
    have = dict(con.execute(
        "select column_name, coalesce(comment, '') from duckdb_columns() where "
        "database_name = current_database() and schema_name = ? and table_name = ?",
        [SCHEMA, table.name]).fetchall())
    target = qualified(SCHEMA, table.name)
    for c in table.columns:
        if c.name not in have:
            # Without NOT NULL: DuckDB cannot add a NOT NULL column with IF NOT EXISTS, and
            # a damaged registry (a required column dropped) then raised DuckDB's own error
            # (found by the registry-damage property); the rows there have no value for it.
            nullable = re.sub(r"\s+not null\b", "", c.type, flags=re.I)
            con.execute(f"alter table {target} add column if not exists {quote(c.name)} "
                        f"{nullable}")
        if have.get(c.name, "") != c.comment:
            con.execute(f"comment on column {target}.{quote(c.name)} is {literal(c.comment)}")
    row = first_row(con, "select coalesce(comment, '') from duckdb_tables() where "
                         "database_name = current_database() and schema_name = ? and "
                         "table_name = ?", [SCHEMA, table.name])
    if not row or row[0] != table.comment:
        con.execute(f"comment on table {target} is {literal(table.comment)}")


def ensure_schema(con: duckdb.DuckDBPyConnection, *, in_transaction: bool = False) -> None:
    """Create the ml schema and every registry table where missing; migrate older registries.

    Idempotent. Outside a transaction the status migration runs in its own; with
    `in_transaction` the caller has begun one, and everything here (the DDL too) commits or
    rolls back with the caller's writes: a command that then fails leaves no table created.
    A damaged registry (ml.models dropped beside its metrics, orphan rows, a column dropped
    or retyped) is RegistryDamaged before anything is created: recreating an empty
    ml.models next to orphan metrics would hide the damage and collide with their keys.
    """
    check_registry(con)
    for table in TABLES:
        _ensure_table(con, table)
    _migrate_statuses(con, in_transaction)
    _migrate_trials(con)


def _migrate_trials(con: duckdb.DuckDBPyConnection) -> None:
    """ml.trials from before study_id: fill it in and renumber the trials from 1, as the
    log counts them (they were numbered from 0). One statement, so atomic; a row without
    study_id is an old one, so running it again changes nothing."""
    con.execute(f"update {qualified(SCHEMA, 'trials')} set study_id = study, "
                "trial_number = trial_number + 1 where study_id is null")


def _migrate_statuses(con: duckdb.DuckDBPyConnection, in_transaction: bool = False) -> None:
    """Give every version of a registry from before statuses one: the latest version of a
    model without a champion becomes it (what `pyml score` used then), the rest retire."""
    legacy = con.execute(f"select distinct model_name from {qualified(SCHEMA, 'models')} "
                         "where status is null").fetchall()
    if not legacy:
        return
    # In the caller's transaction (theirs to commit or roll back), or in one of its own.
    with contextlib.nullcontext() if in_transaction else transaction(con):
        for (name,) in legacy:
            if events.champion(con, str(name)) is None:
                row = first_row(con, f"select max(version) from {qualified(SCHEMA, 'models')} "
                                     "where model_name = ? and status is null", [name])
                latest = int(row[0]) if row and row[0] is not None else None
                if latest is not None:
                    events.set_status(con, str(name), latest, "champion")
                    events.record(con, str(name), latest, "migrated", None, "champion",
                                  "registry upgraded to statuses: the latest version, which "
                                  "`pyml score` used, became the champion")
                rest = "retired"
            else:
                rest = "challenger"
            con.execute(f"update {qualified(SCHEMA, 'models')} set status = ? "
                        "where model_name = ? and status is null", [rest, name])
