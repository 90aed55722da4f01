"""`pyml train`: read a feature relation, split it, fit XGBoost, evaluate, register a version.

The fit itself is pyml.modelling.fit's, shared with tuning.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import xgboost as xgb

from pyml.data import extmem, split
from pyml.data.encode import Feature, Target, booster_feature_names, resolve_features
from pyml.data.lineage import fingerprints
from pyml.data.trainset import (
    TrainingSet,
    learn_categories,
    learn_target,
    part_sizes,
    read_training_set,
    train_label_base,
)
from pyml.dbt.project import Project, invocation_for
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import first_row, qualified, quote, relation_columns
from pyml.errors import DataError, RegistryError, SpecError
from pyml.modelling.checks import Presence, check_training, presence_sql
from pyml.modelling.ensemble import fit_fold_average
from pyml.modelling.evaluate import (
    Evaluation,
    evaluate_predictions,
    evaluate_version,
    prediction_order,
    probabilities,
)
from pyml.modelling.fit import check_params, fit, fit_in_memory, refit_all, refit_rounds
from pyml.modelling.metrics import Metric
from pyml.modelling.model import check_key_counts
from pyml.modelling.policy import HoldoutPolicy
from pyml.modelling.tune import run_study, wants_tuning
from pyml.session import Session, release
from pyml.store import registry
from pyml.store.final_fit import FinalFit, write_final_fit
from pyml.store.lifecycle import last_decision
from pyml.store.trials import link_version
from pyml.tasks import task_info

Log = Callable[[str], None]
# DuckDB's buffer pool while training in memory: it would otherwise keep every block of the
# relation it reads cached (up to 80% of RAM) next to pyml's float32 copy of the rows.
TRAIN_MEMORY_LIMIT = "256MB"
DEFAULT_DISK_BUDGET = 4 << 30  # --external-memory without a budget
IMPORTANCE_TYPES = ("gain", "total_gain", "cover", "total_cover", "weight")


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced."""

    name: str  # model name
    version: int  # the new version number
    task: str  # binary | multiclass | regression
    rows: tuple[int, int, int, int]  # train, validation, test, dropped (NULL target)
    num_trees: int  # boosting rounds kept
    metrics: tuple[Metric, ...]  # holdout metrics with baselines
    seconds: float  # wall time
    status: str = ""  # champion | challenger, after the promotion policy (pyml.lifecycle)
    decision: str = ""  # why: the policy's reason
    note: str | None = None  # ml.models.note (tuning: tuned vs spec params on the holdout)
    # Inputs equal to the latest version's (pyml.data.lineage): nothing was trained, `version`
    # is that version, `decision` the one-line message, and the counts are zeros.
    unchanged: bool = False


def _noop(_: str) -> None:
    pass


def train(session: Session, specs: Sequence[ModelSpec], *, tune: bool | None = None,
          external: bool | None = None, force: bool = False) -> list[TrainResult]:
    """Train every spec on its feature relation and store a new version of each.

    `tune`: True runs an Optuna study first (`pyml tune`); None tunes the specs that say
    `tune: {on_train: true}`. `external`, `force`: see `train_one`.
    """
    # The file is let go during each fit (_train_in_memory) and reopened to store the version.
    with session.releasable_database() as con:
        return [train_one(con, session.project, spec, log=session.log, tune=tune,
                          external=external, force=force) for spec in specs]


def _split_expr(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                types: dict[str, str], log: Log) -> tuple[str, list[Any], dict[str, Any]]:
    """SQL for the part column (0 train, 1 validation, 2 holdout), its params, and a record
    (pyml.data.split: the one definition of the split, shared with the Spark engine)."""
    if spec.split.method == "time":
        cutoffs: split.Cutoffs | None = split.time_cutoffs(con, spec, source)
    else:
        cutoffs = None
        odd = split.unportable_keys(spec.key, types)
        if odd:
            log(f"[{spec.name}] warning: key {', '.join(odd)} renders differently in other "
                "engines (Spark): the same rows may fall in other split parts there")
    part, params = split.part_sql(spec, "duckdb", cutoffs)
    return part, params, split.split_record(spec, cutoffs)


@dataclass(frozen=True)
class _Fitted:
    """A fitted booster and what was measured about it, before it is registered."""

    booster: xgb.Booster  # the booster that scores: the refit, fold average or evaluated fit
    best: int | None  # early stopping's best round (of the evaluated fit)
    params: dict[str, Any]
    evaluation: Evaluation  # the evaluated fit's holdout figures
    sizes: tuple[int, int, int]  # train, validation, test rows
    note: str | None  # tuning note
    tuning: Any  # pyml.tune's study result, or None
    final: FinalFit  # which booster scores and which one was measured (ml.final_fit)


def train_one(con: duckdb.DuckDBPyConnection, project: Project | None, spec: ModelSpec, *,
              log: Log = _noop, tune: bool | None = None, external: bool | None = None,
              force: bool = False) -> TrainResult:
    """Train one spec and store it as a new version.

    The spec's `max_memory` (bytes) is the budget: a training set that would not fit it in
    memory trains from disk (pyml.extmem). `external` forces that choice. When the spec, the
    feature model's SQL, the data and the releases all match the latest version's
    (pyml.data.lineage), nothing is trained and the result says so (`unchanged`), unless
    `force` (or `tune=True`: an explicit study always runs).
    """
    started = time.perf_counter()
    source = qualified(spec.schema, spec.relation)
    columns = relation_columns(con, spec.schema, spec.relation)
    features = resolve_features(spec, columns)
    check_params(spec)
    target_type = dict(columns)[spec.target]
    counts = first_row(con, f"select count(*), count({quote(spec.target)}) from {source}")
    total, labelled = (int(counts[0]), int(counts[1])) if counts else (0, 0)
    if labelled == 0:
        what = "is empty" if total == 0 else f"has no rows with a non-NULL '{spec.target}'"
        raise DataError(f"{spec.where}: {spec.schema}.{spec.relation} {what}; "
                        "nothing to train on (did `dbt build` run?)")
    dropped = total - labelled
    budget = spec.max_memory
    on_disk = external if external is not None else (
        budget is not None and extmem.in_memory_bytes(labelled, len(features)) > budget)
    disk = extmem.Budget(budget or DEFAULT_DISK_BUDGET)
    settings = disk.duckdb() if on_disk else {"memory_limit": TRAIN_MEMORY_LIMIT}
    # The key check and the data fingerprint read the whole table: under the read's limits,
    # or DuckDB's buffer pool keeps it (1.7 GB peak for a 256 MB budget, docs/benchmarks.md).
    keys = ", ".join(quote(k) for k in spec.key)
    nulls = " or ".join(f"{quote(k)} is null" for k in spec.key)
    with extmem.duckdb_settings(con, settings):
        counts = first_row(con, f"select count(distinct ({keys})), count(*) filter (where "
                                f"{nulls}) from {source}")
        check_key_counts(spec.where, f"{spec.schema}.{spec.relation}", spec.key, total,
                         *((int(counts[0]), int(counts[1])) if counts else (0, 0)),
                         training=True)
        # Grouped by whether the label is there: cheaper than filtered counts (2M x 100
        # features: about 1 s against 1.7 s, docs/benchmarks.md).
        present = {bool(r[0]): [int(c) for c in r[1:]] for r in con.execute(
            f"select {quote(spec.target)} is null, {', '.join(presence_sql(features, quote))} "
            f"from {source} group by 1").fetchall()}
        presence = Presence(labelled, total - labelled,
                            [c for missing in (False, True)
                             for c in present.get(missing, [0] * len(features))])
        lineage = fingerprints(con, project, spec, features, dict(columns),
                               {"tune": wants_tuning(spec, tune), "external": on_disk})
    same = None if force or tune else registry.unchanged_version(con, spec.name, lineage)
    if same is not None and _loads(con, spec.name, same[0]):
        return TrainResult(spec.name, same[0], spec.task, (0, 0, 0, 0), 0, (),
                           time.perf_counter() - started,
                           decision=unchanged_message(spec.name, same[0], same[1]),
                           unchanged=True)
    log(f"[{spec.name}] reading {labelled:,} labelled rows from {spec.schema}.{spec.relation}"
        + (f" ({dropped:,} rows with NULL target skipped)" if dropped else "")
        + (" to train from disk (external memory)" if on_disk else ""))
    with extmem.duckdb_settings(con, settings):
        part_sql, part_params, split_record = _split_expr(con, spec, source,
                                                          dict(columns), log)
        target = learn_target(con, spec, source, target_type)
        features = learn_categories(con, spec, source, features)
        if on_disk:
            fitted = _train_on_disk(con, spec, source, tuple(features), target, part_sql,
                                    part_params, disk, wants_tuning(spec, tune), log,
                                    presence, forced=external is True)
        else:
            fitted = _train_in_memory(con, spec, source, features, target, part_sql, part_params,
                                      tune, log, presence)
        rows = (*fitted.sizes, dropped)
        booster, evaluation = fitted.booster, fitted.evaluation
        split_record.update(train_rows=rows[0], validation_rows=rows[1], test_rows=rows[2])
        metrics = list(evaluation.metrics)
        names = booster_feature_names(features)
        importance = []
        for kind in IMPORTANCE_TYPES:
            scores = booster.get_score(importance_type=kind)
            for bname, f in zip(names, features, strict=True):
                value = scores.get(bname, 0.0)
                number = float(value) if isinstance(value, float | int) else 0.0
                importance.append((f.name, kind, number))
        importance.extend(evaluation.importance)
        version = registry.write_version(con, registry.NewVersion(
            name=spec.name, task=spec.task, objective=task_info(spec.task).objective,
            description=spec.description, feature_model=spec.feature_model,
            feature_relation=f"{spec.schema}.{spec.relation}", target=spec.target,
            target_info=target, key=spec.key, features=tuple(features), spec=spec.to_dict(),
            params=fitted.params, split=split_record, rows=rows, booster=booster,
            best_iteration=fitted.best,
            dbt_invocation_id=invocation_for(project, spec.feature_model) if project else None,
            metrics=tuple(metrics), importance=tuple(importance), note=fitted.note,
            lineage=lineage,
        ), extra=lambda c, v: _write_extra(c, spec.name, v, evaluation, fitted.final),
           decide=HoldoutPolicy(spec, part_sql, part_params, log))
        if fitted.tuning:
            link_version(con, fitted.tuning.study, version)
        outcome = last_decision(con, spec.name, version)
        seconds = time.perf_counter() - started
        log(f"[{spec.name}] stored version {version} ({booster.num_boosted_rounds()} trees, "
            f"{seconds:.1f}s)")
        return TrainResult(spec.name, version, spec.task, rows, booster.num_boosted_rounds(),
                           tuple(metrics), seconds, outcome.status, outcome.reason,
                           fitted.note)


def _write_extra(con: duckdb.DuckDBPyConnection, name: str, version: int,
                 evaluation: Evaluation, final: FinalFit) -> None:
    evaluation.write(con, name, version)
    write_final_fit(con, name, version, final)


def unchanged_message(name: str, version: int, status: str = "champion") -> str:
    """What `pyml train` says when a model's inputs match those of `version` (`status`)."""
    serving = ("" if status == "champion" else
               f" (v{version} is {'a ' if status != 'retired' else ''}{status}: "
               f"`pyml promote {name} --version {version}` serves it)")
    return (f"{name}: unchanged since v{version} \u2014 same spec, SQL and data; "
            f"--force retrains{serving}")


def _loads(con: duckdb.DuckDBPyConnection, name: str, version: int) -> bool:
    """Whether a stored version decodes: one that does not (hand-edited JSON, a broken
    booster) is retrained rather than skipped, as its error message tells the user to."""
    try:
        registry.load_version(con, name, version)
    except RegistryError:
        return False
    return True


def _check_split(spec: ModelSpec, sizes: Sequence[int]) -> None:
    if sizes[0] == 0 or sizes[2] == 0:
        raise DataError(f"{spec.where}: the split left {sizes[0]} training and {sizes[2]} "
                        "holdout rows; adjust split.test_fraction or the data")


def _log_split(spec: ModelSpec, sizes: Sequence[int], log: Log) -> None:
    log(f"[{spec.name}] split ({spec.split.method}): {sizes[0]:,} train, {sizes[1]:,} "
        f"validation, {sizes[2]:,} holdout")


def _train_in_memory(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                     features: Sequence[Feature], target: Target, part_sql: str,
                     part_params: list[Any], tune: bool | None, log: Log,
                     presence: Presence) -> _Fitted:
    """Read the parts into float32 arrays in one pass, check, tune, fit and evaluate."""
    ts = read_training_set(con, spec, source, features, target, part_sql, part_params,
                           log=log)
    # Everything the fit needs is in memory now: dbt, BI readers and other pyml commands may
    # use the file until the version is written (the next use of `con` reopens it).
    release(con)
    sizes = (len(ts.train.y), len(ts.valid.y), len(ts.test.y))
    _check_split(spec, sizes)
    _log_split(spec, sizes, log)
    check_training(spec, ts.features, ts.train.X, ts.train.y, ts.target.classes, log,
                   presence)
    # Tuning searches on the train/validation parts only; the holdout stays unseen.
    tuning = run_study(con, spec, ts, log) if wants_tuning(spec, tune) else None
    release(con)  # the study recorded its trials through it
    chosen = tuning.spec if tuning else spec
    if spec.final_fit == "cv_average":
        booster, rounds, params, cv = fit_fold_average(chosen, ts, log)
        best = None
    else:
        booster, best, params = fit_in_memory(chosen, ts, log)
        cv = None
    # The holdout is measured with the evaluated booster, before any refit has seen it.
    note = tuning.note(ts.test.y, booster.inplace_predict(ts.test.X)) if tuning else None
    evaluation = evaluate_version(spec, booster, params, ts, log, cv=cv)
    if spec.final_fit == "cv_average":
        final = FinalFit("cv_average", f"the average of {len(rounds)} fold boosters "
                         f"({', '.join(map(str, rounds))} rounds), each fitted on "
                         f"{len(rounds) - 1}/{len(rounds)} of the {sizes[0] + sizes[1]:,} "
                         "train + validation rows", "holdout of the stored booster",
                         sizes[0] + sizes[1], booster.num_boosted_rounds())
    elif spec.final_fit == "refit":
        booster, final = _refit(chosen, ts, booster, best, params, log)
    else:
        final = _evaluated_scores(booster, sizes[0], "final_fit: none")
    return _Fitted(booster, best, params, evaluation, sizes, note, tuning, final)


def _refit(spec: ModelSpec, ts: TrainingSet, evaluated: xgb.Booster, best: int | None,
           params: dict[str, Any], log: Log) -> tuple[xgb.Booster, FinalFit]:
    """The booster refitted on every labelled row (pyml.modelling.fit.refit_all), and the
    version's account of it; the evaluated booster is kept for promotion."""
    n_train = len(ts.train.y)
    n_all = n_train + len(ts.valid.y) + len(ts.test.y)
    rounds = refit_rounds(evaluated.num_boosted_rounds(), best, n_train, n_all)
    how = (f"early stopping's {best + 1} x {n_all:,}/{n_train:,} rows" if best is not None
           else "num_boost_round, no early stopping")
    log(f"[{spec.name}] final fit: refit on all {n_all:,} labelled rows for {rounds} rounds "
        f"({how}); the metrics stay the evaluated fit's holdout figures")
    booster = refit_all(spec, ts, params, rounds, log)
    return booster, FinalFit(
        "refit", f"refit on {n_all:,} rows (train + validation + holdout), {rounds} rounds "
        f"({how})", f"holdout of the evaluated fit ({n_train:,} train rows, "
        f"{evaluated.num_boosted_rounds()} rounds)", n_all, rounds, evaluated)


def _evaluated_scores(booster: xgb.Booster, n_train: int, why: str) -> FinalFit:
    """The final fit of a version whose stored booster is the evaluated fit."""
    return FinalFit("none", f"the evaluated fit ({n_train:,} train rows, "
                    f"{booster.num_boosted_rounds()} rounds; {why})",
                    "holdout of the stored booster", n_train, booster.num_boosted_rounds())


def _train_on_disk(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                   features: tuple[Feature, ...], target: Target, part_sql: str,
                   part_params: list[Any], budget: extmem.Budget, tuning: bool, log: Log,
                   presence: Presence, forced: bool = False) -> _Fitted:
    """The same steps with XGBoost external memory: see pyml.extmem."""
    why, fix = (("--external-memory trains from disk", "drop --external-memory") if forced
                else ("it does not fit max_memory", "raise max_memory"))
    if tuning:
        raise SpecError(f"{spec.where}: tuning needs the training set in memory, and {why}; "
                        f"tune on a smaller relation (e.g. a sampled dbt model) or {fix}")
    if spec.split.method == "kfold":
        raise SpecError(f"{spec.where}: split.method kfold needs the training set in memory, "
                        f"and {why}; use method random or time, or {fix}")
    n_train, n_valid, n_test = part_sizes(con, spec, source, part_sql, part_params)
    sizes = (n_train, n_valid, n_test)
    _check_split(spec, sizes)
    _log_split(spec, sizes, log)
    base = train_label_base(con, spec, source, target, part_sql, part_params)
    # The iterators stream from a cursor of their own, closed however training ends.
    with contextlib.closing(con.cursor()) as cursor, extmem.cache_folder() as folder:
        parts = extmem.ExternalSet(cursor, spec, source, features, target, part_sql,
                                   part_params, sizes, budget, folder, log)
        sample = parts.sample()
        check_training(spec, features, sample.X, sample.y, target.classes, log, presence)
        seen = int(np.count_nonzero(base)) if spec.task != "regression" else 0

        def data(kwargs: dict[str, Any], use_valid: bool
                 ) -> tuple[xgb.DMatrix, xgb.DMatrix | None]:
            dtrain = parts.dmatrix(0, None, **kwargs)
            return dtrain, parts.dmatrix(1, dtrain, **kwargs) if use_valid else None

        booster, best, params = fit(spec, features, len(target.classes), seen, sizes[1] > 0,
                                    data, log)
        y_test, raw, shap_rows = parts.holdout(booster)
    pred = probabilities(raw)
    order = prediction_order(y_test, pred)
    evaluation = evaluate_predictions(spec, booster, features, y_test[order], pred[order],
                                      base, shap_rows, sample.X)
    # A refit from disk would stream every part into a second external-memory cache (twice
    # the disk budget and the time): not done, and the version says so (docs/spec.md).
    why = "final_fit: none" if spec.final_fit == "none" else "refit not done: external memory"
    if spec.final_fit != "none":
        log(f"[{spec.name}] final fit: {why}; the evaluated fit scores")
    return _Fitted(booster, best, params, evaluation, sizes, None, None,
                   _evaluated_scores(booster, sizes[0], why))
