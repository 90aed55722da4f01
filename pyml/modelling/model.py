"""A trained model loaded from the registry, ready to predict.

The same object scores DuckDB batches (`pyml score`) and pandas DataFrames (notebooks), with
the same checks: a missing feature is an error, a changed type is an error, extra columns are
ignored and an unseen category is a missing value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa

from pyml.data.encode import Encoder, check_schema, is_range_error, matrix_sql, range_error
from pyml.engines.duckdb import connect, fetch_arrow, quote
from pyml.errors import DataError, OutputNameClash, SchemaMismatch
from pyml.store.registry import StoredModel, load_version
from pyml.tasks import INTERNAL_PREFIX, class_clash, internal_name, key_clash, output_columns

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class OutputColumn:
    """One column that a prediction adds next to the keys."""

    name: str  # column name in ml.<model>_predictions (pyml.tasks.output_columns)
    type: pa.DataType  # Arrow type: the target's own for the class, else float64


class LoadedModel:
    """A registry version with its encoder; predicts on Arrow columns or DataFrames."""

    def __init__(self, stored: StoredModel) -> None:
        self.stored = stored
        self.encoder = Encoder(stored.features)
        self._classes = (pa.array(list(stored.target.classes))
                         if stored.target.classes else None)

    def with_threads(self, n: int) -> LoadedModel:
        """The same version predicting on `n` threads, through a copy of its booster (this
        one is left as it is)."""
        booster = self.stored.booster.copy()
        booster.set_param({"nthread": n})
        return LoadedModel(replace(self.stored, booster=booster))

    @property
    def name(self) -> str:
        """Model name."""
        return self.stored.name

    @property
    def version(self) -> int:
        """Registry version."""
        return self.stored.version

    @property
    def feature_names(self) -> list[str]:
        """Input columns, in the order the booster expects them."""
        return [f.name for f in self.stored.features]

    def output_columns(self) -> list[OutputColumn]:
        """The prediction columns this model's task produces."""
        label = self._classes.type if self._classes is not None else pa.float64()
        return [OutputColumn(c.name, label if c.holds == "class" else pa.float64())
                for c in output_columns(self.stored.task, self.stored.target.classes)]

    def predict_columns(self, columns: Sequence[pa.Array | pa.ChunkedArray],
                        where: str) -> list[pa.Array]:
        """Prediction arrays (matching output_columns) for one Arrow column per feature."""
        return self.predict_matrix(self.encoder.matrix(columns, where))

    def predict_matrix(self, X: np.ndarray) -> list[pa.Array]:
        """Prediction arrays (matching output_columns) for a float32 input matrix."""
        raw = np.asarray(self.stored.booster.inplace_predict(X), dtype=np.float64)
        task = self.stored.task
        if task == "regression":
            return [pa.array(raw)]
        assert self._classes is not None
        if task == "binary":
            threshold = self.stored.threshold
            label = pa.array((raw >= threshold).astype(np.int64))
            return [self._classes.take(label), pa.array(raw)]
        label = pa.array(raw.argmax(axis=1).astype(np.int64))
        return [self._classes.take(label), pa.array(raw.max(axis=1)),
                *[pa.array(raw[:, k]) for k in range(raw.shape[1])]]

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """Predict on a pandas DataFrame; returns key columns present plus prediction columns.

        The frame goes through the same DuckDB casts as `pyml score`, so a notebook gets the
        very numbers the predictions table holds.
        """
        con = duckdb.connect()
        try:
            con.register("__pyml_input", df)
            rel = con.execute("describe select * from __pyml_input").fetchall()
            columns = [(str(r[0]), str(r[1])) for r in rel]
            check_outputs(self.stored, ())
            check_schema(f"model '{self.name}'", self.stored.features, columns, "the DataFrame",
                         source="the DataFrame")
            keys = [k for k in self.stored.key if k in dict(columns)]
            exprs = [quote(k) for k in keys] + [matrix_sql(self.stored.features)]
            try:
                table = fetch_arrow(con, f"select {', '.join(exprs)} from __pyml_input")
            except (duckdb.Error, OSError) as e:
                if is_range_error(e):
                    raise range_error(con, "__pyml_input", self.stored.features,
                                      f"model '{self.name}'") from None
                raise
        finally:
            con.close()
        X = self.encoder.from_fixed(table.column(len(keys)), f"model '{self.name}'")
        preds = self.predict_matrix(X)
        out = {k: table.column(i) for i, k in enumerate(keys)}
        out.update({c.name: a for c, a in zip(self.output_columns(), preds, strict=True)})
        result = pa.table(out).to_pandas()
        result.index = df.index  # row i answers row i: `df.assign(p=...)` aligns on the index
        return result


def load_model(name: str, version: int | None = None, *, project_dir: str | Path | None = None,
               profiles_dir: str | Path | None = None, target: str | None = None,
               lock_timeout: float = 5.0) -> LoadedModel:
    """Load a trained model for notebooks: `pyml.load_model("churn").predict(df)`."""
    from pyml.dbt.project import load_project

    project = load_project(project_dir, profiles_dir, target)
    if project.spark is not None:  # a Spark target: the registry is in its catalog
        from pyml.engines.spark import spark_session
        from pyml.store.spark_registry import load_version as spark_load_version

        spark = spark_session(project.spark.master, project.spark.conf, project.target_name)
        return LoadedModel(spark_load_version(spark, name, version))
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        return LoadedModel(load_version(con, name, version))
    finally:
        con.close()


def key_types(columns: Sequence[tuple[str, str]], key: Sequence[str], where: str,
              relation: str) -> None:
    """Every key column must be present in the relation being scored."""
    present = dict(columns)
    for k in key:
        if k not in present:
            raise SchemaMismatch(f"{where}: key column '{k}' is missing from {relation}; "
                                 "keys are carried into the predictions table")


def check_key_counts(where: str, relation: str, key: Sequence[str], total: int,
                     distinct: int, null_keys: int, *, training: bool = False) -> None:
    """The relation has rows, and its key is non-NULL and unique (one pass's counts: rows,
    distinct keys, rows with a NULL key part), on either engine. `training`: checked by
    `pyml train` (which refuses an empty relation itself), before a version that could not
    score is stored and promoted; the advice names the spec's key too."""
    if total == 0:
        raise DataError(f"{where}: {relation} is empty; nothing to score "
                        "(did `dbt build` run?)")
    why = " (pyml score writes one prediction per key)" if training else ""
    if null_keys:
        raise DataError(f"{where}: {relation} has {null_keys:,} rows with a NULL key "
                        f"({', '.join(key)}); filter or fill them in the dbt model{why}")
    if distinct != total:
        fix = ("add the columns that tell the rows apart to `key` in the spec, or make the "
               "key unique in the dbt model" if training else
               "make the key unique in the dbt model")
        raise DataError(f"{where}: {relation} has {total - distinct:,} duplicate keys "
                        f"({', '.join(key)}); {fix}{why}")


# Key types whose every value is an int64: StreamedKeyCheck indexes its slots with them.
DENSE_KEY_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT",
                             "USMALLINT", "UINTEGER"})
MAX_KEY_SLOTS = 1 << 25  # StreamedKeyCheck's slots: 64 MB at most


class KeyRepeats(Exception):
    """StreamedKeyCheck met a key value a second time, or one it was not prepared for (the
    relation changed since its bounds were read); the caller counts in SQL to say which."""


class StreamedKeyCheck:
    """The uniqueness check of a single integer key, made on the batches as they are scored
    instead of by a `count(distinct key)` pass before (which cost `pyml score` ~5% of its
    time, docs/benchmarks.md).

    One uint16 slot per value between the key's min and max (2 bytes a value: 10 MB for 5M
    dense keys). The keys go in runs of at most 65,535 rows: a run whose values find a slot
    already set repeats an earlier key; otherwise each value's slot gets its row's number
    within the run (1, 2, ...), and a slot that does not hold its row's number afterwards
    was overwritten by a later row of the same run. Either way, and for a NULL or a value
    outside [lo, hi] (the relation changed since the bounds were read), KeyRepeats. Safe
    to call from several threads.
    """

    RUN = 65_535  # rows numbered per run: uint16 slots

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.slots = np.zeros(hi - lo + 1, np.uint16)
        self._numbers = np.arange(1, self.RUN + 1, dtype=np.uint16)
        self._lock = threading.Lock()

    @staticmethod
    def fits(lo: int, hi: int, rows: int) -> bool:
        """Whether `rows` keys between `lo` and `hi` are checked this way: the span is small
        (at most 4 slots a row, MAX_KEY_SLOTS in all) and could hold them all once."""
        span = hi - lo + 1
        return rows <= span <= min(MAX_KEY_SLOTS, 4 * rows + 1024)

    def add(self, keys: pa.Array | pa.ChunkedArray) -> None:
        """Check one batch's keys against each other and every batch before."""
        if not len(keys):
            return
        if keys.null_count:
            raise KeyRepeats("a NULL key")
        values = np.asarray(keys.to_numpy(), dtype=np.int64)
        if values.min() < self.lo or values.max() > self.hi:
            raise KeyRepeats("a key beyond the bounds read before scoring")
        at = values - self.lo
        with self._lock:
            for start in range(0, len(at), self.RUN):
                run = at[start:start + self.RUN]
                numbers = self._numbers[:len(run)]
                if self.slots[run].any():
                    raise KeyRepeats("a key seen in an earlier run")
                self.slots[run] = numbers
                if not np.array_equal(self.slots[run], numbers):
                    raise KeyRepeats("a key twice in one run")


def check_outputs(stored: StoredModel, extras: Sequence[str], *, predictions: bool = True
                  ) -> None:
    """The train-time naming rule (pyml.data.encode.check_output_names) for a stored version,
    which may predate it: the columns a command writes (the prediction columns unless
    `predictions` is false, and `extras`) must not share a name with each other or a key."""
    where = f"model '{stored.name}' v{stored.version}"
    internal = internal_name([*stored.key, *(f.name for f in stored.features)])
    if internal is not None:
        raise OutputNameClash(f"{where}: column '{internal}' starts with '{INTERNAL_PREFIX}', "
                              "which pyml keeps for the columns of the SQL it writes; rename "
                              "it in the dbt model and retrain")
    names = list(extras)
    if predictions:
        clash = class_clash(stored.task, stored.target.classes)
        if clash is not None:
            raise OutputNameClash(f"{where}: {clash}; give the classes labels that differ in "
                                  "more than case in the dbt model and retrain")
        names = [c.name for c in output_columns(stored.task, stored.target.classes)] + names
    clash = key_clash(stored.key, names)
    if clash is not None:
        raise OutputNameClash(f"{where}: {clash}; rename it in the dbt model and retrain")


def describe(stored: StoredModel) -> dict[str, Any]:
    """A short JSON-able summary of a version (for CLI and notebooks)."""
    return {"name": stored.name, "version": stored.version, "task": stored.task,
            "features": [f.to_dict() for f in stored.features], "key": list(stored.key),
            "classes": list(stored.target.classes)}
