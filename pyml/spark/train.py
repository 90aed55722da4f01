"""`pyml train` on a Spark target: the feature relation read as a Spark DataFrame, split and
encoded in Spark SQL, fitted with xgboost.spark, stored in the Spark catalog's ml registry.

What is the same as on DuckDB: the split (pyml.data.split, rendered for Spark: the same
rows land in the same part), the encoder plan (pyml.spark.frames), native categoricals with
codes learned in SQL, NULL as missing, early stopping on the validation part, the booster
cut at its best round and stored as XGBoost UBJ with the same feature records, so `pyml
sql`, export, serve and explain read a Spark-trained model like any other.

What differs: the holdout metrics (with their bootstrap intervals), calibration, lift,
curves, mean |SHAP| and the drift snapshot are computed on the driver from a bounded sample
(HOLDOUT_ROWS holdout rows, SAMPLE_ROWS training rows, drawn by hashing the key, so the
same rows every run); on a holdout that fits, that is every row. Each metric's `n_rows`
says how many rows it was computed on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pyml.data import split
from pyml.data.encode import (
    F32_MAX,
    Feature,
    Target,
    booster_feature_names,
    encode_target,
    resolve_features,
)
from pyml.data.encode import learn_categories as check_categories
from pyml.dbt.project import Project, invocation_for
from pyml.dbt.spec import ModelSpec
from pyml.engines.spark import default_workers, first_line, qualified, quote, relation_columns, sql
from pyml.errors import DataError, RegistryError, SpecError
from pyml.modelling.checks import Presence, check_training, presence_sql
from pyml.modelling.evaluate import evaluate_predictions, prediction_order, probabilities
from pyml.modelling.fit import check_params, early_stopped, spec_params
from pyml.modelling.model import check_key_counts
from pyml.session import Session
from pyml.spark import frames
from pyml.spark.lineage import fingerprints
from pyml.spark.policy import SparkHoldoutPolicy
from pyml.store import spark_registry
from pyml.store.registry import NewVersion
from pyml.tasks import task_info
from pyml.verbs.train import (
    IMPORTANCE_TYPES,
    TrainResult,
    unchanged_message,
)

if TYPE_CHECKING:
    import xgboost as xgb
    from pyspark.sql import DataFrame, SparkSession

Log = Callable[[str], None]
HOLDOUT_ROWS = 500_000  # holdout rows evaluated on the driver at most (a hashed sample)
SAMPLE_ROWS = 100_000  # training rows for the leakage checks and the drift snapshot
_Y, _PART, _VALID, _BUCKET = "__pyml_y", "__pyml_part", "__pyml_valid", "__pyml_bucket"
# The row order of every training read (on DuckDB: pyml.data.trainset, pyml.data.extmem): the
# split's key bucket, then the key's text; the label and inputs break ties of duplicate keys.
_ORDER, _KEY = "__pyml_order", "__pyml_key"
SAMPLE_SALT = 7  # salt of the key hash that draws the samples (not the split's)


def _noop(_: str) -> None:
    pass


def train(session: Session, specs: Sequence[ModelSpec], *, num_workers: int | None = None,
          force: bool = False) -> list[TrainResult]:
    """Train every spec on Spark and store a new version of each in the Spark catalog.

    `num_workers` (xgboost.spark workers) overrides the specs'; the default is one per core
    the cluster offers. A spec whose inputs (spec, feature SQL, data, workers, releases) match
    its latest version's trains nothing, as on DuckDB, unless `force`.
    """
    spark = session.spark()
    return [train_one(spark, session.project, spec, log=session.log, num_workers=num_workers,
                      force=force)
            for spec in specs]


def train_one(spark: SparkSession, project: Project | None, spec: ModelSpec, *,
              log: Log = _noop, num_workers: int | None = None,
              force: bool = False) -> TrainResult:
    """Train one spec with xgboost.spark and store it as a new version (nothing when its
    inputs are unchanged since its latest version, unless `force`)."""
    started = time.perf_counter()
    if spec.tune is not None and spec.tune.on_train:
        raise SpecError(f"{spec.where}: tune.on_train runs on DuckDB targets only for now; "
                        "remove it to train on Spark")
    if spec.split.method == "kfold":
        raise SpecError(f"{spec.where}: split.method kfold runs on DuckDB targets only for "
                        "now; use method random or time on Spark")
    source = qualified(spec.schema, spec.relation)
    columns = relation_columns(spark, spec.schema, spec.relation)
    features = resolve_features(spec, columns)
    check_params(spec)
    types = dict(columns)
    bad_keys = split.unportable_keys(spec.key, types)
    if spec.split.method in split.HASHED_METHODS and bad_keys:
        raise SpecError(f"{spec.where}: key column {bad_keys[0]} has no text that DuckDB and "
                        "Spark write alike, so the hashed split would differ between them; "
                        "cast it to a string, integer or date in the dbt model")
    workers = num_workers or spec.num_workers or default_workers(spark)
    lineage = fingerprints(spark, project, spec, features, types,
                           {"engine": "spark", "workers": workers})
    same = None if force else spark_registry.unchanged_version(spark, spec.name, lineage)
    if same is not None and _loads(spark, spec.name, same[0]):
        return TrainResult(spec.name, same[0], spec.task, (0, 0, 0, 0), 0, (),
                           time.perf_counter() - started, decision=unchanged_message(
                               spec.name, same[0], same[1]), unchanged=True)
    # One pass over the relation: counts, the target's values, each category's values and
    # the float32 range check (each a Spark job of its own otherwise).
    y = quote(spec.target)
    cats = [f for f in features if f.kind == "categorical"]
    regression = spec.task == "regression"
    keys = ", ".join(quote(k) for k in spec.key)
    ranges = frames.range_items(features, f"{y} is not null")
    items = ["count(*)", f"count({y})",
             f"count_if(isnan(cast({y} as double)) or abs(cast({y} as double)) > :f32_max)"
             if regression else f"collect_set({y})",
             f"count(distinct {keys})",
             "count_if(" + " or ".join(f"{quote(k)} is null" for k in spec.key) + ")",
             *[f"collect_set(if({y} is null, null, cast({quote(f.name)} as string)))"
               for f in cats],
             *ranges,
             *presence_sql(features, quote, f"{y} is not null"),
             *presence_sql(features, quote, f"{y} is null")]
    total, labelled, target_values, distinct, null_keys, *rest = sql(
        spark, f"select {', '.join(items)} from {source}", {"f32_max": F32_MAX}
    ).collect()[0]
    if labelled == 0:
        what = "is empty" if total == 0 else f"has no rows with a non-NULL '{spec.target}'"
        raise DataError(f"{spec.where}: {spec.schema}.{spec.relation} {what}; "
                        "nothing to train on (did `dbt build` run?)")
    check_key_counts(spec.where, f"{spec.schema}.{spec.relation}", spec.key, int(total),
                     int(distinct), int(null_keys), training=True)
    dropped = int(total) - int(labelled)
    log(f"[{spec.name}] reading {labelled:,} labelled rows from {spec.schema}.{spec.relation} "
        f"on Spark" + (f" ({dropped:,} rows with NULL target skipped)" if dropped else ""))
    cutoffs = time_cutoffs(spark, spec, source) if spec.split.method == "time" else None
    part_sql, part_params = split.part_sql(spec, "spark", cutoffs)
    record = split.split_record(spec, cutoffs)
    target = learn_target(spec, types[spec.target], target_values)
    features = learn_categories(spec, features, dict(zip([f.name for f in cats],
                                                         rest[:len(cats)], strict=True)))
    counted = len(cats) + len(ranges)
    frames.check_range(features, rest[len(cats):counted], spec.where)
    presence = Presence(int(labelled), int(total) - int(labelled),
                        [int(c) for c in rest[counted:]])
    data = encoded(spark, spec, source, features, target, part_sql, part_params).persist()
    try:
        sizes, base, seen = _part_stats(data, target)
        if sizes[0] == 0 or sizes[2] == 0:
            raise DataError(f"{spec.where}: the split left {sizes[0]} training and {sizes[2]} "
                            "holdout rows; adjust split.test_fraction or the data")
        log(f"[{spec.name}] split ({spec.split.method}): {sizes[0]:,} train, {sizes[1]:,} "
            f"validation, {sizes[2]:,} holdout")
        (sample_X, sample_y), (X_test, y_test) = _collect(data, sizes, len(features))
        check_training(spec, features, sample_X, sample_y, target.classes, log, presence)
        if target.classes and seen < len(target.classes):
            raise DataError(f"{spec.where}: the training part has only {seen} of "
                            f"{len(target.classes)} classes; adjust the split or add data")
        booster, best, params = fit(data, spec, features, target, sizes, workers, log)
    finally:
        data.unpersist()
    if spec.final_fit == "refit":
        # A refit would be a second distributed fit of the whole relation (docs/spec.md).
        log(f"[{spec.name}] final fit: refit not done on Spark; the evaluated fit scores")
    pred = probabilities(booster.inplace_predict(X_test))
    order = prediction_order(y_test, pred)
    if len(y_test) < sizes[2]:
        log(f"[{spec.name}] holdout metrics on a hashed sample of {len(y_test):,} of "
            f"{sizes[2]:,} rows")
    evaluation = evaluate_predictions(spec, booster, features, y_test[order], pred[order],
                                      base, X_test, sample_X)
    rows = (*sizes, dropped)
    record.update(train_rows=rows[0], validation_rows=rows[1], test_rows=rows[2])
    stored_spec = replace(spec, num_workers=workers)
    version, decision = spark_registry.write_version(spark, NewVersion(
        name=spec.name, task=spec.task, objective=task_info(spec.task).objective,
        description=spec.description, feature_model=spec.feature_model,
        feature_relation=f"{spec.schema}.{spec.relation}", target=spec.target,
        target_info=target, key=spec.key, features=tuple(features),
        spec=stored_spec.to_dict(), params=params, split=record, rows=rows, booster=booster,
        best_iteration=best,
        dbt_invocation_id=invocation_for(project, spec.feature_model) if project else None,
        metrics=evaluation.metrics,
        importance=(*importance(booster, features), *evaluation.importance),
        lineage=lineage,
    ), calibration=evaluation.calibration, lift=evaluation.lift, curves=evaluation.curves,
       snapshots=evaluation.snapshots,
       decide=SparkHoldoutPolicy(spec, part_sql, part_params, log))
    seconds = time.perf_counter() - started
    log(f"[{spec.name}] stored version {version} in the Spark catalog "
        f"({booster.num_boosted_rounds()} trees, {seconds:.1f}s)")
    return TrainResult(spec.name, version, spec.task, rows, booster.num_boosted_rounds(),
                       evaluation.metrics, seconds, decision.status, decision.reason, None)


def _loads(spark: SparkSession, name: str, version: int) -> bool:
    """Whether a stored version decodes (a damaged one is retrained rather than skipped)."""
    try:
        spark_registry.load_version(spark, name, version)
    except RegistryError:
        return False
    return True


def time_cutoffs(spark: SparkSession, spec: ModelSpec, source: str) -> split.Cutoffs:
    """The time split's cut-offs in Spark SQL: `percentile_disc`, the SQL standard's
    discrete percentile (the smallest value whose cumulative share reaches p), which is
    what DuckDB's `quantile_disc` computes, so both engines cut at the same value."""
    sp = spec.split
    col, y = quote(str(sp.column)), quote(spec.target)
    nulls = sql(spark, f"select count(*) from {source} where {y} is not null and {col} is null"
                ).collect()[0][0]
    if nulls:
        raise DataError(f"{spec.where}: split column '{sp.column}' is NULL in {nulls} "
                        "labelled rows; filter or fill them in the dbt model")
    test_from, first = sql(spark, f"select percentile_disc(:p) within group (order by {col}), "
                                  f"min({col}) from {source} where {y} is not null",
                           {"p": 1.0 - sp.test_fraction}).collect()[0]
    if test_from is None or test_from == first:
        raise DataError(f"{spec.where}: split column '{sp.column}' has too few distinct "
                        "values to keep older rows for training and newer ones as holdout")
    if sp.validation_fraction <= 0:
        return split.Cutoffs(test_from, None)
    valid_from = sql(spark, f"select percentile_disc(:p) within group (order by {col}) from "
                            f"{source} where {y} is not null and {col} < :t",
                     {"p": 1.0 - sp.validation_fraction, "t": test_from}).collect()[0][0]
    if valid_from is None or valid_from == first:
        return split.Cutoffs(test_from, None)  # too few periods: no early stopping
    return split.Cutoffs(test_from, valid_from)


def learn_target(spec: ModelSpec, dtype: str, values: Any) -> Target:
    """The Target from what Spark computed: the distinct labels (classifiers), or the count
    of NaN / infinite / out-of-range labels (regression)."""
    if spec.task == "regression":
        # Type check first (the same message as on DuckDB), then finiteness.
        encode_target(spec, dtype, pa.chunked_array([pa.array([], pa.float64())]))
        if values:
            raise DataError(f"{spec.where}: target '{spec.target}' has {values} NaN, infinite "
                            f"or out-of-range values (|x| > {F32_MAX:.3g}); NULL or "
                            "clean them in the dbt model")
        return Target(dtype)
    _, target = encode_target(spec, dtype, pa.chunked_array([pa.array(list(values))]))
    return target


def learn_categories(spec: ModelSpec, features: Sequence[Feature],
                     values: dict[str, Sequence[str]]) -> list[Feature]:
    """Each categorical feature's mapping from its distinct values among labelled rows (as
    Spark collected them): pyml.data.encode sorts and checks them."""
    columns = [pa.chunked_array([pa.array(list(values.get(f.name, ())), pa.string())])
               for f in features]
    return check_categories(features, columns, spec.where)


def encoded(spark: SparkSession, spec: ModelSpec, source: str, features: Sequence[Feature],
            target: Target, part_sql: str, part_params: list[Any]) -> DataFrame:
    """The labelled rows as (label code, part, float32 inputs...): the training frame."""
    y = quote(spec.target)
    if target.classes:
        arms = " ".join(f"when ? then {i}.0" for i in range(len(target.classes)))
        label, params = f"cast(case {y} {arms} end as double)", list(target.classes)
    else:
        label, params = f"cast({y} as double)", []
    items, item_params = frames.encoded_exprs(features)
    bucket = split.bucket_sql(spec.key, SAMPLE_SALT, "spark")
    order = split.bucket_sql(spec.key, spec.split.seed, "spark")
    key = "concat_ws(chr(31), " + ", ".join(
        f"coalesce(cast({quote(k)} as string), chr(30))" for k in spec.key) + ")"
    return sql(spark, f"select {label} as {quote(_Y)}, {part_sql} as {quote(_PART)}, "
                      f"{bucket} as {quote(_BUCKET)}, {order} as {quote(_ORDER)}, "
                      f"{key} as {quote(_KEY)}, {', '.join(items)} from {source} "
                      f"where {y} is not null",
               [*params, *part_params, *item_params])


def _ordering(width: int) -> list[str]:
    """The columns rows are sorted by, so the same rows give the same booster and metrics
    whatever order the table's files hold them in."""
    return [_ORDER, _KEY, _Y, *(frames.column(i) for i in range(width))]


def _part_stats(data: DataFrame, target: Target
                ) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """One job over the cached frame: each part's rows, pyml.modelling.metrics.label_base of
    the train part (each class's share, or the mean) and the classes the train part has."""
    from pyspark.sql import functions as F

    if target.classes:
        cells = data.groupBy(_PART, _Y).count().collect()
        per_part = {p: sum(int(n) for q, _, n in cells if q == p) for p in (0, 1, 2)}
        counts = np.zeros(len(target.classes))
        for part, code, n in cells:
            if part == 0:
                counts[int(code)] = n
        base, seen = counts / max(counts.sum(), 1.0), int(np.count_nonzero(counts))
    else:
        rows = data.groupBy(_PART).agg(F.count(F.lit(1)), F.avg(_Y)).collect()
        per_part = {int(p): int(n) for p, n, _ in rows}
        mean = next((m for p, _, m in rows if p == 0), None)
        base, seen = np.array([float(mean) if mean is not None else math.nan]), 0
    sizes = (per_part.get(0, 0), per_part.get(1, 0), per_part.get(2, 0))
    return sizes, base, seen


def _collect(data: DataFrame, sizes: tuple[int, int, int], width: int
             ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(X, y) of a training sample and of the holdout on the driver, in one job: every row
    of a part, or a hashed-key sample (the same rows every run) of about SAMPLE_ROWS /
    HOLDOUT_ROWS rows when the part is larger."""
    def keep(part: int, limit: int) -> Any:
        cond = data[_PART] == part
        size = sizes[part]
        return cond if size <= limit else cond & (
            data[_BUCKET] < int(limit / size * split.HASH_BUCKETS))

    table = data.where(keep(0, SAMPLE_ROWS) | keep(2, HOLDOUT_ROWS)).orderBy(
        *_ordering(width)).select(_PART, _Y, *[frames.column(i) for i in range(width)]
                                  ).toArrow()
    part = table.column(0).to_numpy(zero_copy_only=False)
    X = frames.matrix(table, width, offset=2)
    y = table.column(1).to_numpy(zero_copy_only=False).astype(np.float64)
    return (X[part == 0], y[part == 0]), (X[part == 2], y[part == 2])


def fit(data: DataFrame, spec: ModelSpec, features: Sequence[Feature],
        target: Target, sizes: tuple[int, int, int], workers: int, log: Log
        ) -> tuple[xgb.Booster, int | None, dict[str, Any]]:
    """Fit with xgboost.spark on the train part, early stopping on the validation part;
    returns the booster cut at the best round, that round and the parameters."""
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    n_classes = len(target.classes)
    params = spec_params(spec, n_classes)
    use_valid = sizes[1] > 0 and spec.early_stopping_rounds is not None
    # xgboost.spark sets the thread count per task itself, and a classifier its objective
    # (from the labels, which are pyml's class codes 0..k-1).
    given = {k: v for k, v in params.items() if k not in ("nthread", "num_class")
             and not (k == "objective" and n_classes)}
    estimator = (SparkXGBClassifier if n_classes else SparkXGBRegressor)(
        features_col=[frames.column(i) for i in range(len(features))], label_col=_Y,
        num_workers=workers, feature_types=["c" if f.kind == "categorical" else "q"
                                            for f in features],
        missing=math.nan, n_estimators=spec.num_boost_round, verbose=False,
        validation_indicator_col=_VALID if use_valid else None,
        early_stopping_rounds=spec.early_stopping_rounds if use_valid else None, **given)
    # Each worker's rows, and their order, are a function of the rows alone: hashed to
    # `workers` partitions by key and sorted within each (xgboost.spark keeps a frame that
    # already has one partition per worker as it is; its own repartition is round-robin).
    rows = (data.where(data[_PART] != 2).withColumn(_VALID, data[_PART] == 1)
            .repartition(workers, _KEY).sortWithinPartitions(*_ordering(len(features))))
    log(f"[{spec.name}] fitting with xgboost.spark on {workers} workers "
        f"(up to {spec.num_boost_round} rounds)")
    try:
        booster = estimator.fit(rows).get_booster()
    except Exception as e:  # XGBoost's errors reach the driver wrapped by Spark
        raise SpecError(f"{spec.where}: xgboost.spark failed to train: {first_line(e)}; check "
                        "`params` in the spec") from e
    booster, best = early_stopped(booster, use_valid)
    booster.feature_names = booster_feature_names(features)
    booster.feature_types = ["c" if f.kind == "categorical" else "q" for f in features]
    stored = {k: v for k, v in params.items() if k != "nthread"}
    return booster, best, stored


def importance(booster: xgb.Booster, features: Sequence[Feature]
               ) -> list[tuple[str, str, float]]:
    """XGBoost's importances per feature (0 for a feature no tree uses), as train stores."""
    out = []
    names = booster_feature_names(features)
    for kind in IMPORTANCE_TYPES:
        scores = booster.get_score(importance_type=kind)
        for bname, f in zip(names, features, strict=True):
            value = scores.get(bname, 0.0)
            out.append((f.name, kind, float(value) if isinstance(value, float | int) else 0.0))
    return out
