"""Model specs: the `config: meta: pyml:` blocks that dbt models carry in their YAML.

A spec is validated here, once, into a frozen :class:`ModelSpec`; every later step trusts it.
Each error names the YAML file, the dbt model, the pyml model and the key, and says what to
write instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, is_dataclass
from typing import Any

from pyml.dbt.spec_monitor import MonitorSpec, parse_monitor
from pyml.dbt.spec_tune import PromoteSpec, TuneSpec, parse_promote, parse_tune
from pyml.errors import SpecError
from pyml.tasks import TASKS, canonical_param

SPLIT_METHODS = ("random", "time", "kfold")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

ALLOWED_KEYS = {
    "name": "model name, a lower-case identifier (predictions land in ml.<name>_predictions)",
    "description": "one line shown by `pyml models`",
    "task": "binary | multiclass | regression",
    "target": "the label column",
    "key": "id column(s) carried into the predictions",
    "features": "feature columns to use (default: every other column)",
    "exclude": "columns never used as features",
    "split": "{method: random|time|kfold, test_fraction, validation_fraction, seed, column, "
             "folds}",
    "params": "XGBoost training parameters",
    "num_boost_round": "maximum number of boosting rounds",
    "early_stopping_rounds": "stop when the validation metric has not improved for N rounds",
    "threshold": "probability at or above which a binary prediction is the positive class",
    "positive_class": "the label value that counts as positive (binary)",
    "score": "{relation, batch_size, incremental}: what `pyml score` reads and how",
    "tune": "{n_trials, timeout, metric, direction, space, on_train, seed, cv}: Optuna "
            "search",
    "promote": "{policy: auto|manual, metric, min_delta, score}: when a new version becomes "
               "champion, and whether to rescore then",
    "allow_leakage": "true to train although one feature alone predicts the target ~perfectly",
    "drift_threshold": "PSI above which `pyml drift` reports a feature as drifted (0.2)",
    "monitor": "{time_column, window: day|week|month|quarter|year, thresholds, min_rows}: "
               "what `pyml monitor` windows and when it alerts",
    "max_memory": "memory budget of `pyml train`, e.g. 2GB: bigger training sets train from "
                  "disk (XGBoost external memory)",
    "num_workers": "Spark targets: xgboost.spark workers (default: the cluster's cores)",
    "final_fit": "refit | none | cv_average: the booster that scores (default refit: "
                 "refit on every labelled row after the holdout evaluation)",
}
FINAL_FITS = ("refit", "none", "cv_average")
MIN_MEMORY = 512 << 20  # the smallest max_memory: pyml and its libraries take ~400 MB
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
SPLIT_KEYS = ("method", "test_fraction", "validation_fraction", "seed", "column", "folds")
SCORE_KEYS = ("relation", "batch_size", "incremental")
# Rows per Arrow batch when pyml streams a relation (score, explain, drift, the champion's
# re-scoring): large enough that per-batch overheads vanish, small enough to bound memory.
DEFAULT_BATCH_ROWS = 100_000

DEFAULT_PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.1,
    "min_child_weight": 1.0,
    "seed": 0,
}


@dataclass(frozen=True)
class SplitSpec:
    """How labelled rows are divided into train, validation and holdout (test) parts."""

    method: str = "random"  # "random" (hash of the key) or "time" (latest rows are the holdout)
    test_fraction: float = 0.2  # share of labelled rows kept as the holdout
    validation_fraction: float = 0.2  # share of the non-holdout rows used for early stopping
    seed: int = 42  # salt of the key hash for the random split
    column: str | None = None  # the time column for method "time"
    folds: int = 5  # method "kfold": cross-validation folds of the non-holdout rows


@dataclass(frozen=True)
class ScoreSpec:
    """What `pyml score` reads."""

    relation: str | None = None  # dbt model name or schema.table; None = the feature model
    batch_size: int = DEFAULT_BATCH_ROWS  # rows per batch when streaming
    incremental: bool = False  # rescore only new and changed rows (pyml score --incremental)


@dataclass(frozen=True)
class ModelSpec:
    """One pyml model, as declared on a dbt feature model."""

    name: str  # model name; predictions go to ml.<name>_predictions
    task: str  # binary | multiclass | regression
    target: str  # label column
    key: tuple[str, ...]  # id columns carried into predictions
    feature_model: str  # dbt unique_id of the model the spec sits on
    schema: str  # schema of the feature relation
    relation: str  # identifier of the feature relation
    source_file: str  # the YAML file that declares the spec (for messages)
    features: tuple[str, ...] | None = None  # explicit feature list, or None for "all others"
    exclude: tuple[str, ...] = ()
    split: SplitSpec = field(default_factory=SplitSpec)
    params: Mapping[str, Any] = field(default_factory=dict)
    num_boost_round: int = 500
    early_stopping_rounds: int | None = 30
    threshold: float = 0.5
    positive_class: Any = None
    description: str = ""
    score: ScoreSpec = field(default_factory=ScoreSpec)
    tune: TuneSpec | None = None  # hyperparameter search (`pyml tune`, or train with on_train)
    promote: PromoteSpec = field(default_factory=PromoteSpec)  # champion/challenger policy
    allow_leakage: bool = False  # train even if one feature alone predicts the target
    drift_threshold: float = 0.2  # PSI above which `pyml drift` flags a feature
    monitor: MonitorSpec = field(default_factory=MonitorSpec)  # `pyml monitor` windows, alerts
    max_memory: int | None = None  # bytes `pyml train` may use (None: no budget)
    num_workers: int | None = None  # Spark targets: xgboost.spark workers (None: all cores)
    final_fit: str = "refit"  # refit | none | cv_average: which booster scores (fit.py)

    @property
    def where(self) -> str:
        """Where the spec lives, for error messages."""
        return f"{self.source_file}: model '{self.name}' on {self.feature_model}"

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able data (stored with every version)."""
        out = asdict(self)
        out["params"] = dict(self.params)
        # `exclude` is a set: sorted, so the order it is written in changes neither the spec
        # fingerprint (pyml.data.lineage: a reordered list trains nothing) nor the stored spec
        # (the twin rule compares it). `features` keeps its order: it is the matrix's.
        out["exclude"] = sorted(self.exclude)
        return out


# Spec keys read on every run that leave the booster as it is (docs/spec.md).
RUN_TIME_KEYS = ("description", "score", "promote", "allow_leakage", "drift_threshold",
                 "max_memory")


def _stored_default(name: str) -> Any:
    """ModelSpec's default of field `name`, as `to_dict` stores it."""
    f = ModelSpec.__dataclass_fields__[name]
    value = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def trained_part(spec: Any) -> Any:
    """A stored spec (`ModelSpec.to_dict`) without what is read on every run and cannot
    change the booster: `monitor` left out, `description`, `score`, `promote`,
    `allow_leakage`, `drift_threshold` and `max_memory` as their defaults (whether the run
    trained from disk is recorded apart), `tune` as none unless `pyml train` tunes
    (`on_train`). The spec fingerprint (pyml.data.lineage) and the twin rule
    (pyml.store.registry.same_model) read this: a description edit stored and promoted a
    byte-identical booster and flagged the predictions stale (an audit). Defaults, not
    absences, so that the fingerprints of specs that never set these keys stay as they were.
    """
    if not isinstance(spec, Mapping):  # a damaged registry's spec: compared as it is
        return spec
    out = {k: v for k, v in spec.items() if k != "monitor"}
    out.update({name: _stored_default(name) for name in RUN_TIME_KEYS})
    tune = spec.get("tune")
    if not (isinstance(tune, Mapping) and tune.get("on_train")):
        out["tune"] = None
    return out


def parse_specs(
    raw: Any, *, feature_model: str, schema: str, relation: str, source_file: str
) -> list[ModelSpec]:
    """Validate the value of `meta: pyml:` (one mapping or a list of them)."""
    items = raw if isinstance(raw, list) else [raw]
    specs = []
    for i, item in enumerate(items):
        where = f"{source_file}: {feature_model} meta.pyml[{i}]"
        specs.append(
            _parse_one(
                item,
                where=where,
                feature_model=feature_model,
                schema=schema,
                relation=relation,
                source_file=source_file,
            )
        )
    return specs


def _parse_one(
    item: Any, *, where: str, feature_model: str, schema: str, relation: str, source_file: str
) -> ModelSpec:
    if not isinstance(item, Mapping):
        raise SpecError(
            f"{where}: a pyml spec must be a mapping with keys name, task, target, key; "
            f"got {type(item).__name__}"
        )
    name = item.get("name")
    if isinstance(name, str):
        where = f"{source_file}: model '{name}' on {feature_model}"
    unknown = sorted(set(map(str, item)) - set(ALLOWED_KEYS))
    if unknown:
        raise SpecError(
            f"{where}: unknown key '{unknown[0]}'; allowed keys are {', '.join(ALLOWED_KEYS)}"
        )
    for required in ("name", "task", "target", "key"):
        if item.get(required) in (None, "", []):
            raise SpecError(f"{where}: missing required key '{required}' "
                            f"({ALLOWED_KEYS[required]})")
    name = _str(item, "name", where)
    if not NAME_RE.match(name):
        raise SpecError(
            f"{where}: name '{name}' is not a valid model name; use lower-case letters, digits "
            "and underscores, starting with a letter (at most 63 characters)"
        )
    task = _str(item, "task", where)
    if task not in TASKS:
        raise SpecError(f"{where}: task '{task}' is not one of {', '.join(TASKS)}")
    target = _str(item, "target", where)
    key = _columns(item, "key", where)
    features = _columns(item, "features", where) if "features" in item else None
    exclude = _columns(item, "exclude", where) if "exclude" in item else ()
    if features is not None and exclude:
        raise SpecError(f"{where}: give either 'features' or 'exclude', not both")
    params = item.get("params") or {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise SpecError(f"{where}: 'params' must be a mapping of XGBoost parameter names to values")
    for banned in ("objective", "num_class"):
        if banned in params:
            raise SpecError(
                f"{where}: params.{banned} is set by pyml from 'task'; remove it from params"
            )
    params = _canonical_params(params, where)
    num_boost_round = _int(item, "num_boost_round", where, default=500, minimum=1)
    esr_raw = item.get("early_stopping_rounds", 30)
    if esr_raw == 0 and not isinstance(esr_raw, bool):
        raise SpecError(f"{where}: 'early_stopping_rounds' must be at least 1, got 0; to train "
                        "every round without early stopping, write early_stopping_rounds: "
                        "null")
    early = None if esr_raw is None else _int(item, "early_stopping_rounds", where, 30, minimum=1)
    threshold = _float(item, "threshold", where, default=0.5)
    if not 0.0 < threshold < 1.0:
        raise SpecError(f"{where}: threshold must be between 0 and 1 (exclusive), got {threshold}")
    positive = item.get("positive_class")
    if positive is not None and task != "binary":
        raise SpecError(f"{where}: positive_class only applies to task: binary")
    if "threshold" in item and task != "binary":  # it would train a new version for nothing
        raise SpecError(f"{where}: threshold only applies to task: binary (a {task} model "
                        "predicts without one); remove it")
    description = item.get("description") or ""
    allow_leakage = item.get("allow_leakage", False)
    if not isinstance(allow_leakage, bool):
        raise SpecError(f"{where}: 'allow_leakage' must be true or false, got {allow_leakage!r}")
    drift_threshold = _float(item, "drift_threshold", where, default=0.2)
    if drift_threshold <= 0:
        raise SpecError(f"{where}: drift_threshold must be above 0 (a PSI), "
                        f"got {drift_threshold}")
    if not isinstance(description, str):
        raise SpecError(f"{where}: 'description' must be text")
    max_memory = item.get("max_memory")
    final_fit = item.get("final_fit", "refit")
    if final_fit not in FINAL_FITS:
        raise SpecError(f"{where}: final_fit must be one of {', '.join(FINAL_FITS)}, got "
                        f"{final_fit!r}")
    split_spec = _split(item.get("split"), where)
    score = _score(item.get("score"), where)
    tune = parse_tune(item.get("tune"), task, where)
    if final_fit == "cv_average" and split_spec.method != "kfold" and not (tune and tune.cv):
        raise SpecError(f"{where}: final_fit cv_average averages k fold boosters: set "
                        "split: {method: kfold} or tune.cv: k, or use final_fit refit")
    workers = (None if item.get("num_workers") is None
               else _int(item, "num_workers", where, default=1, minimum=1))
    return ModelSpec(
        name=name,
        task=task,
        target=target,
        key=key,
        feature_model=feature_model,
        schema=schema,
        relation=relation,
        source_file=source_file,
        features=features,
        exclude=exclude,
        split=split_spec,
        params=dict(params),
        num_boost_round=num_boost_round,
        early_stopping_rounds=early,
        threshold=threshold,
        positive_class=positive,
        description=description.strip(),
        score=score,
        tune=tune,
        promote=parse_promote(item.get("promote"), task, where),
        allow_leakage=allow_leakage,
        drift_threshold=drift_threshold,
        monitor=parse_monitor(item.get("monitor"), where),
        max_memory=None if max_memory is None else parse_size(max_memory, f"{where}: max_memory"),
        num_workers=workers,
        final_fit=str(final_fit),
    )


def parse_size(value: Any, what: str) -> int:
    """Bytes from `2GB`, `512MiB`, `1.5 GB` or a whole number of bytes, at least MIN_MEMORY."""
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        # ASCII: `\d` and float() would also read other scripts' digits ('２GB').
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", value,
                             re.IGNORECASE | re.ASCII)
        if match and match.group(2).upper() in _UNITS:
            size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size is None:
        raise SpecError(f"{what} must be a size such as 2GB or 512MB, got {value!r}")
    if size < MIN_MEMORY:
        raise SpecError(f"{what} {value} is too small: pyml and its libraries take about "
                        f"400MB before any data; give at least {MIN_MEMORY >> 20}MiB")
    return size


def _str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _columns(item: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = item.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}: '{key}' must be a column name or a list of column names")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}: '{key}' lists a column twice")
    return tuple(value)


def _int(item: Mapping[str, Any], key: str, where: str, default: int, minimum: int,
         section: str = "") -> int:
    """item[key] (`section`: the mapping's own key, as in split.folds), an integer."""
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: {_named(key, section)} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where}: {_named(key, section)} must be at least {minimum}, "
                        f"got {value}")
    return value


def _float(item: Mapping[str, Any], key: str, where: str, default: float,
           section: str = "") -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: {_named(key, section)} must be a number, got {value!r}")
    if not math.isfinite(value):  # YAML's .nan: drift_threshold .nan never alerted (an audit)
        raise SpecError(f"{where}: {_named(key, section)} must be a finite number, got "
                        f"{value!r}")
    return float(value)


def _canonical_params(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`params` under XGBoost's first names (learning_rate -> eta, ...); one parameter given
    under two names is refused."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in params.items():
        name = canonical_param(key)
        if name in out:
            raise SpecError(f"{where}: params gives one parameter twice, as {given[name]} and "
                            f"{key} (XGBoost names for the same thing); keep one")
        out[name], given[name] = value, key
    return out


def _named(key: str, section: str) -> str:
    """A spec key as messages name it: 'threshold' at the top level, split.folds below."""
    return f"{section}.{key}" if section else f"'{key}'"


def _split(raw: Any, where: str) -> SplitSpec:
    if raw is None:
        return SplitSpec()
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: 'split' must be a mapping such as "
                        "{method: random, test_fraction: 0.2, seed: 42}")
    unknown = sorted(set(map(str, raw)) - set(SPLIT_KEYS))
    if unknown:
        raise SpecError(
            f"{where}: unknown key 'split.{unknown[0]}'; allowed: {', '.join(SPLIT_KEYS)}"
        )
    method = raw.get("method", "random")
    if method not in SPLIT_METHODS:
        raise SpecError(f"{where}: split.method '{method}' is not one of random, time, kfold")
    test_fraction = _float(raw, "test_fraction", where, 0.2, section="split")
    validation_fraction = _float(raw, "validation_fraction", where, 0.2, section="split")
    for label, value in (("test_fraction", test_fraction),
                         ("validation_fraction", validation_fraction)):
        if not 0.0 <= value < 1.0:
            span = "(0, 1)" if label == "test_fraction" else "[0, 1)"
            raise SpecError(f"{where}: split.{label} must be in {span}, got {value}")
    if test_fraction == 0.0:
        raise SpecError(f"{where}: split.test_fraction must be above 0: pyml always keeps a "
                        "holdout to report honest metrics")
    seed = _int(raw, "seed", where, 42, minimum=0, section="split")
    if "seed" in raw and method == "time":
        raise SpecError(f"{where}: split.seed only applies to split.method random or kfold "
                        "(a time split cuts by the column's values)")
    column = raw.get("column")
    if method == "time":
        if not isinstance(column, str) or not column:
            raise SpecError(f"{where}: split.method time needs split.column, the time column")
    elif column is not None:
        raise SpecError(f"{where}: split.column only applies to split.method time")
    folds = _int(raw, "folds", where, 5, minimum=2, section="split")
    if "folds" in raw and method != "kfold":
        raise SpecError(f"{where}: split.folds only applies to split.method kfold")
    if folds > 20:
        raise SpecError(f"{where}: split.folds must be at most 20, got {folds}")
    return SplitSpec(method, test_fraction, validation_fraction, seed, column, folds)


def _score(raw: Any, where: str) -> ScoreSpec:
    if raw is None:
        return ScoreSpec()
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: 'score' must be a mapping such as {{relation: my_model}}")
    unknown = sorted(set(map(str, raw)) - set(SCORE_KEYS))
    if unknown:
        raise SpecError(
            f"{where}: unknown key 'score.{unknown[0]}'; allowed: {', '.join(SCORE_KEYS)}"
        )
    relation = raw.get("relation")
    if relation is not None and (not isinstance(relation, str) or not relation):
        raise SpecError(f"{where}: score.relation must be a dbt model name or schema.table")
    batch_size = _int(raw, "batch_size", where, DEFAULT_BATCH_ROWS, minimum=1,
                      section="score")
    incremental = raw.get("incremental", False)
    if not isinstance(incremental, bool):
        raise SpecError(f"{where}: score.incremental must be true or false, got {incremental!r}")
    return ScoreSpec(relation, batch_size, incremental)
