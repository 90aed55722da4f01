"""The promotion policy on Spark: the champion and the challenger scored on the rows held
out by both (the challenger's split SQL and the champion's, rebuilt from its stored record),
compared on the spec's metric.

The rule and its limits (MIN_COMMON_ROWS, MIN_CLASS_ROWS) are pyml.modelling.policy's; the
rows are a bounded hashed sample of those (COMPARE_ROWS), collected to the driver with
every feature either version reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data import split
from pyml.data.encode import Encoder, check_schema
from pyml.data.trainset import labels
from pyml.dbt.spec import ModelSpec, trained_part
from pyml.engines.spark import qualified, quote, relation_columns, sql
from pyml.errors import SchemaMismatch
from pyml.modelling.compare import Comparison, compare
from pyml.modelling.policy import (
    _CannotCompare,
    _check_common,
    classes_differ,
    decide,
    holdout_condition,
)
from pyml.store import spark_registry
from pyml.store.lifecycle import Decision
from pyml.store.registry import StoredModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Log = Callable[[str], None]
COMPARE_ROWS = 500_000  # holdout rows both versions score at most (a hashed sample)
SAMPLE_SALT = 7


def _same_model(spark: SparkSession, name: str, a: int, b: int) -> bool:
    """Whether two versions are the same model (pyml.store.registry.same_model): the same
    booster (compared re-serialised as UBJ: equal stored bytes load and save to equal
    bytes), trained spec (`trained_part`), features, classes and key."""
    one, two = (spark_registry.load_version(spark, name, v) for v in (a, b))
    return ((trained_part(one.spec), one.features, one.target, one.key) ==
            (trained_part(two.spec), two.features, two.target, two.key) and
            bytes(one.booster.save_raw("ubj")) == bytes(two.booster.save_raw("ubj")))


class SparkHoldoutPolicy:
    """The spec's `promote:` policy, deciding a new version's status on Spark."""

    def __init__(self, spec: ModelSpec, holdout_sql: str, holdout_params: list[Any],
                 log: Log) -> None:
        self.spec, self.holdout_sql, self.holdout_params = spec, holdout_sql, holdout_params
        self.log = log

    def __call__(self, spark: SparkSession, version: int, champion: int) -> Decision:
        return decide(self.spec, version, champion, self.log,
                      lambda metric: self.comparison(spark, champion, version, metric),
                      lambda: _same_model(spark, self.spec.name, champion, version))

    def comparison(self, spark: SparkSession, champion: int, challenger: int, metric: str
                   ) -> tuple[Comparison, list[str]]:
        """Both versions' predictions on the rows held out by both, compared; also how the
        two splits differ ([] when alike)."""
        spec = self.spec
        old = spark_registry.load_version(spark, spec.name, champion)
        new = spark_registry.load_version(spark, spec.name, challenger)
        if old.task != new.task:
            raise _CannotCompare(f"its task is {old.task}")
        if list(old.target.classes) != list(new.target.classes):
            raise _CannotCompare(classes_differ(list(old.target.classes),
                                                 list(new.target.classes)))
        columns = relation_columns(spark, spec.schema, spec.relation)
        try:
            check_schema(f"champion v{champion}", old.features, columns,
                         f"{spec.schema}.{spec.relation}")
        except SchemaMismatch as e:
            raise _CannotCompare(str(e).split(": ", 1)[-1]) from e
        both_sql, both_params, differ = _champion_holdout(spark, spec, old, challenger,
                                                          dict(columns))
        names = list(dict.fromkeys(f.name for f in (*old.features, *new.features)))
        kinds = {f.name: f.kind for f in (*old.features, *new.features)}
        items = [f"cast({quote(n)} as {'double' if kinds[n] == 'numeric' else 'string'}) "
                 f"as {quote(n)}" for n in names]
        y = quote(spec.target)
        source = qualified(spec.schema, spec.relation)
        held = (f"from {source} where {y} is not null and ({self.holdout_sql}) = 2 "
                f"and {both_sql}")
        params = [*self.holdout_params, *both_params]
        keep = "true"
        total = sql(spark, f"select count(*) {held}", params).collect()[0][0]
        if total > COMPARE_ROWS:
            keep = split.sample_sql(spec.key, COMPARE_ROWS / total, SAMPLE_SALT, "spark")
        table = sql(spark, f"select {y} as `__pyml_y`, {', '.join(items)} {held} and {keep}",
                    params).toArrow()
        classes = pa.array(list(new.target.classes)) if spec.task != "regression" else None
        y_col = table.column(0)
        if classes is not None and pc.index_in(y_col, value_set=classes).null_count:
            raise _CannotCompare("the holdout has labels outside the trained classes")
        y_codes = labels(y_col, classes)
        _check_common(len(y_codes), y_codes, classes, differ)
        return compare(spec.task, metric, y_codes, _raw(old, table), _raw(new, table),
                       old.threshold, new.threshold), differ


def _champion_holdout(spark: SparkSession, spec: ModelSpec, old: StoredModel, challenger: int,
                      columns: dict[str, str]) -> tuple[str, list[Any], list[str]]:
    """The champion's holdout condition in Spark SQL (rebuilt from its stored split record),
    its parameters, and how its split differs from the challenger's (the rule of
    pyml.modelling.policy.champion_holdout)."""
    return holdout_condition(spark_registry.split_record(spark, spec.name, old.version),
                             spark_registry.split_record(spark, spec.name, challenger),
                             old.spec, tuple(old.key), spec.key, columns, "spark")


def _raw(stored: StoredModel, table: pa.Table) -> np.ndarray:
    columns = [table.column(f.name) for f in stored.features]
    X = Encoder(stored.features).matrix(columns, f"model '{stored.name}' v{stored.version}")
    return np.asarray(stored.booster.inplace_predict(X), dtype=np.float64)
