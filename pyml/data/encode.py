"""Columns -> XGBoost inputs: feature resolution, category mappings, Arrow -> float32 matrix.

Data leaves DuckDB only as Arrow. Numeric columns are selected as DOUBLE and rounded to
float32 once, here, exactly as XGBoost would round them; string columns become category codes
through the mapping fixed at training time (a value not in the mapping is missing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import quote
from pyml.errors import DataError, OutputNameClash, SchemaMismatch, SpecError
from pyml.tasks import (
    ALL_EXTRAS,
    INTERNAL_PREFIX,
    class_clash,
    internal_name,
    key_clash,
    output_columns,
)

_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|REAL|DOUBLE|DECIMAL(\(\d+,\s*\d+\))?|BOOLEAN)$"
)
_CATEGORICAL = re.compile(r"^(VARCHAR|ENUM\(.*\))$", re.S)
# What a time split can order rows by (DuckDB's and Spark's names): dates, timestamps, numbers.
_ORDERED = re.compile(r"^(DATE|TIMESTAMP.*|TINYINT|SMALLINT|INT|INTEGER|BIGINT|HUGEINT|UTINYINT"
                      r"|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|REAL|DOUBLE|DECIMAL.*"
                      r"|NUMERIC.*|LONG|SHORT|BYTE)$", re.S)
# XGBoost refuses these characters in feature names; such columns get positional names. So do
# names with control characters: no JSON escape of them reads back through XGBoost's parser.
_XGB_BAD_NAME = re.compile(r"[\[\]<,\x00-\x1f\x7f]")
MAX_CATEGORIES = 10_000
F32_MAX = float(np.finfo(np.float32).max)

# How a feature's value is read into its float32 input (`InputRule.read`).
READ_NUMBER = "number"  # as DOUBLE (an integer to the nearest double), then float32
READ_BOOLEAN = "boolean"  # true/false as 1/0, then as a number
READ_CATEGORY = "category"  # the value's index in the training categories
# The rules of the plan in words; the model card carries them beside the plan.
ENCODING = {
    "row": "one float32 value per feature, in the order of `features` (and of `plan`)",
    "numeric": "the value as a double (an integer to the nearest double; true/false as 1/0 "
               "for a boolean feature), rounded to float32 to nearest; a value float32 "
               "cannot hold (it rounds to infinity) is an error",
    "categorical": "the index of the value in the feature's `categories` (0-based); a value "
                   "not in the list is missing",
    "missing": "NaN (a null, an absent field, a NaN or an unseen category)",
}


_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
# What each trained feature accepts when it is scored, by the rule of its training type
# (`accepts`; docs/spec.md, "Column types"). `pyml score`, `pyml explain`, the notebook's
# `predict` and `pyml sql`'s query read a column the same way only within these, so
# `check_schema` refuses anything else for all of them.
SCORING_TYPES = {
    "numeric": "any integer, DECIMAL, FLOAT or DOUBLE type (not BOOLEAN)",
    "boolean": "BOOLEAN",
    "categorical": "VARCHAR or ENUM",
}


def kind_of(dtype: str) -> str | None:
    """'numeric', 'categorical' or None (unsupported) for a DuckDB type name."""
    upper = dtype.upper()
    if _NUMERIC.match(upper):
        return "numeric"
    if _CATEGORICAL.match(upper):
        return "categorical"
    return None


@dataclass(frozen=True)
class Feature:
    """One model input column, as it was at training time."""

    name: str  # column name in the relation
    kind: str  # "numeric" or "categorical"
    dtype: str  # DuckDB type at training time
    categories: tuple[str, ...] = ()  # categorical: code i stands for categories[i]

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in the registry."""
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype,
                "categories": list(self.categories)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Feature:
        """Inverse of to_dict."""
        return Feature(d["name"], d["kind"], d["dtype"], tuple(d.get("categories") or ()))


@dataclass(frozen=True)
class InputRule:
    """How one feature becomes one float32 of the model's input row: a step of the plan."""

    name: str  # the feature's column (a record's field)
    read: str  # READ_NUMBER | READ_BOOLEAN | READ_CATEGORY
    categories: tuple[str, ...] = ()  # READ_CATEGORY: code i stands for categories[i]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the model card's `plan` and pyml.data.records read it."""
        return {"name": self.name, "read": self.read, "categories": list(self.categories)}


def input_plan(features: Sequence[Feature]) -> tuple[InputRule, ...]:
    """The record encoder plan: one rule per feature, in the booster's column order.

    Every encoder pyml has renders it: `matrix_sql` (DuckDB builds the rows for score and
    train), `Encoder` (Arrow columns), pyml.data.records (serve's request bodies and the
    exported predict.py, from the card's copy of the plan) and `pyml sql`'s input columns.
    The rules are ENCODING's: a number as DOUBLE rounded to float32 to nearest, a category its
    code, and NULL, NaN or an unseen category missing.
    """
    return tuple(
        InputRule(f.name, READ_CATEGORY, f.categories) if f.kind == "categorical"
        else InputRule(f.name, READ_BOOLEAN if f.dtype.upper() == "BOOLEAN" else READ_NUMBER)
        for f in features)


def booster_feature_names(features: Sequence[Feature]) -> list[str]:
    """Names given to XGBoost: the column names, or f0..fn when one is not allowed there."""
    names = [f.name for f in features]
    if any(_XGB_BAD_NAME.search(n) for n in names):
        return [f"f{i}" for i in range(len(names))]
    return names


def dmatrix_kwargs(features: Sequence[Feature]) -> dict[str, Any]:
    """The feature arguments every DMatrix pyml builds takes: names, types ('c' categorical,
    'q' numeric) and categorical support, so the booster splits on category codes."""
    return {"feature_names": booster_feature_names(features),
            "feature_types": ["c" if f.kind == "categorical" else "q" for f in features],
            "enable_categorical": True}


def resolve_features(spec: ModelSpec, columns: Sequence[tuple[str, str]]) -> list[Feature]:
    """The spec's feature columns with their kinds, checked against the relation's columns."""
    types = dict(columns)
    relation = f"{spec.schema}.{spec.relation}"
    needed = [("target", spec.target), *[("key", k) for k in spec.key]]
    needed += [("exclude", c) for c in spec.exclude]
    if spec.split.column:
        needed.append(("split.column", spec.split.column))
    for role, col in needed:
        if col not in types:
            raise SchemaMismatch(
                f"{spec.where}: {role} column '{col}' is not in {relation}; "
                f"columns are: {', '.join(types)}"
            )
    reserved = {spec.target, *spec.key, *spec.exclude}
    if spec.split.column:
        reserved.add(spec.split.column)
        dtype = types[spec.split.column]
        if not _ORDERED.match(dtype.upper()):
            raise SpecError(f"{spec.where}: split.column '{spec.split.column}' of {relation} "
                            f"is {dtype}; a time split orders the rows by it, so it must be a "
                            "DATE, TIMESTAMP or number column (cast it in the dbt model)")
    if spec.features is not None:
        for col in spec.features:
            if col not in types:
                raise SchemaMismatch(
                    f"{spec.where}: feature '{col}' is not in {relation}; "
                    f"columns are: {', '.join(types)}"
                )
            if col in (spec.target, *spec.key):
                raise SpecError(f"{spec.where}: '{col}' is the target or a key and cannot "
                                "also be a feature")
        names = list(spec.features)
    else:
        names = [c for c, _ in columns if c not in reserved]
    if not names:
        raise SpecError(f"{spec.where}: no feature columns are left in {relation} after "
                        "removing the key, target and excluded columns")
    internal = internal_name([*spec.key, *names])
    if internal is not None:
        raise OutputNameClash(f"{spec.where}: column '{internal}' of {relation} starts with "
                              f"'{INTERNAL_PREFIX}', which pyml keeps for the columns of the "
                              "SQL it writes; rename it in the dbt model")
    features = []
    for name in names:
        kind = kind_of(types[name])
        if kind is None:
            raise DataError(
                f"{spec.where}: column '{name}' of {relation} has type {types[name]}, which "
                "pyml cannot use as a feature; derive a number or a string from it in SQL, "
                "or add it to 'exclude'"
            )
        features.append(Feature(name, kind, types[name]))
    return features


def select_exprs(features: Sequence[Feature]) -> list[str]:
    """SQL select items that deliver each feature as DOUBLE or VARCHAR, in order."""
    exprs = []
    for i, f in enumerate(features):
        cast = "DOUBLE" if f.kind == "numeric" else "VARCHAR"
        exprs.append(f"CAST({quote(f.name)} AS {cast}) AS {quote(f'__pyml_f{i}')}")
    return exprs


def sql_literal(value: str) -> str:
    """A SQL string literal (single quotes doubled); for values from the registry only."""
    return "'" + value.replace("'", "''") + "'"


def matrix_sql(features: Sequence[Feature]) -> str:
    """One SQL expression: the model input row as FLOAT[k] (NULL = missing).

    DuckDB builds the row-major float32 matrix itself, in parallel, so Python receives an
    Arrow FixedSizeList whose values buffer *is* the XGBoost input (a zero-copy reshape; NULLs
    become NaN in `Encoder.from_fixed`). Numbers go DOUBLE -> FLOAT, rounding to nearest as
    numpy and XGBoost do; a value beyond the float32 range makes DuckDB fail the cast, and
    `range_error` then names the column. Categories become their codes through an inline ENUM
    of the training mapping (a hashed lookup; a value not in it is NULL, i.e. missing).
    """
    items = []
    for rule in input_plan(features):
        q = quote(rule.name)
        if rule.read != READ_CATEGORY:  # a BOOLEAN casts to 1/0 on its own
            items.append(f"cast({q} as double)")
        elif rule.categories:
            enum = "ENUM(" + ", ".join(sql_literal(c) for c in rule.categories) + ")"
            items.append(f"enum_code(try_cast(cast({q} as varchar) as {enum}))")
        else:  # no value was ever seen in training: always missing
            items.append("cast(null as float)")
    return f"[{', '.join(items)}]::FLOAT[{len(items)}]"


def is_range_error(error: BaseException) -> bool:
    """Whether a DuckDB/Arrow error is a DOUBLE -> FLOAT overflow from `matrix_sql`."""
    return "out of range for the destination type FLOAT" in str(error)


def range_error(con: duckdb.DuckDBPyConnection, source: str, features: Sequence[Feature],
                where: str) -> DataError:
    """The DataError naming the first feature with values beyond the float32 range."""
    for f in features:
        if f.kind != "numeric":
            continue
        rows = con.execute(f"select count(*) from {source} "
                           f"where abs(cast({quote(f.name)} as double)) > ?",
                           [F32_MAX]).fetchall()
        if rows and rows[0][0]:
            return out_of_range(where, f.name, int(rows[0][0]))
    return DataError(f"{where}: a feature has values beyond the float32 range; clean them in "
                     "the dbt model and retry")


def out_of_range(where: str, feature: str, count: int) -> DataError:
    """The one message, on every engine and command, for a numeric feature with values that
    float32 (XGBoost's input) cannot hold."""
    return DataError(f"{where}: feature '{feature}' has {count} infinite or out-of-range values "
                     f"(|x| > {F32_MAX:.3g}); clean them in the dbt model (e.g. NULL them) and "
                     "retry")


# SCORING_TYPES as RE2 patterns of DuckDB's typeof() (pyml sql's in-query type check).
TYPEOF_PATTERNS = {
    "numeric": r"U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL\([0-9]+,[0-9]+\)",
    "boolean": "BOOLEAN",
    "categorical": r"(?s)VARCHAR|ENUM\(.*\)",
}


def scoring_kind(dtype: str) -> str | None:
    """The rule of SCORING_TYPES a DuckDB type falls under ('numeric', 'boolean',
    'categorical'), or None for a type no feature accepts."""
    if dtype.upper() == "BOOLEAN":
        return "boolean"
    return kind_of(dtype)


def accepts(feature: Feature, dtype: str) -> bool:
    """Whether a feature trained as `feature.dtype` may be scored from a column of `dtype`:
    the same rule of SCORING_TYPES. A BOOLEAN where a number was trained (or the reverse)
    is refused: `pyml sql` cannot compare it with a split bound, and a rebuilt column of
    another kind is nearly always a changed meaning, not a changed storage."""
    return scoring_kind(dtype) == scoring_kind(feature.dtype)


def check_schema(where: str, features: Sequence[Feature], columns: Sequence[tuple[str, str]],
                 relation: str, source: str = "the dbt model") -> None:
    """Scoring-time check: each feature present with a type its training type accepts
    (SCORING_TYPES; extra columns are ignored). `source` is where the user fixes a column
    (the dbt model, or a DataFrame handed to the Python API)."""
    types = dict(columns)
    for f in features:
        if f.name not in types:
            raise SchemaMismatch(
                f"{where}: feature '{f.name}' is missing from {relation}; add it back to "
                f"{source} or retrain the model without it"
            )
        if not accepts(f, types[f.name]):
            raise SchemaMismatch(
                f"{where}: feature '{f.name}' was {f.dtype} ({scoring_kind(f.dtype)}) at "
                f"training but is {types[f.name]} in {relation}; cast it back in {source} "
                "or retrain"
            )


class Encoder:
    """Turns Arrow columns (numbers as DOUBLE, categories as VARCHAR) into the float32 matrix
    XGBoost sees: the plan (`input_plan`) on Arrow."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = list(features)
        self._value_sets: dict[int, pa.Array] = {
            j: pa.array(rule.categories, type=pa.string())
            for j, rule in enumerate(input_plan(self.features)) if rule.read == READ_CATEGORY
        }

    def matrix(self, columns: Sequence[pa.Array | pa.ChunkedArray], where: str) -> np.ndarray:
        """A C-ordered float32 matrix (NaN = missing) from one Arrow column per feature."""
        n = len(columns[0]) if columns else 0
        out = np.empty((n, len(self.features)), dtype=np.float32)
        for j, col in enumerate(columns):
            if j in self._value_sets:
                codes = pc.index_in(col, value_set=self._value_sets[j])
                out[:, j] = codes.to_numpy(zero_copy_only=False)
            else:
                values = col.to_numpy(zero_copy_only=False)
                with np.errstate(over="ignore", invalid="ignore"):
                    out[:, j] = values
        self._check_finite(out, where)
        return out

    def from_fixed(self, column: pa.Array | pa.ChunkedArray, where: str) -> np.ndarray:
        """The matrix from a `matrix_sql` column: a zero-copy view when it is one chunk."""
        if isinstance(column, pa.ChunkedArray):
            column = (column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
        width = len(self.features)
        values = column.flatten()
        if values.null_count:
            values = pc.fill_null(values, np.float32("nan"))
        flat = values.to_numpy(zero_copy_only=False)
        out = flat.reshape(-1, width) if width else np.empty((len(column), 0), np.float32)
        self._check_finite(out, where)
        return out

    def _check_finite(self, out: np.ndarray, where: str) -> None:
        bad = np.isinf(out)
        if bad.any():
            counts = bad.sum(axis=0)
            j = int(np.argmax(counts))
            raise out_of_range(where, self.features[j].name, int(counts[j]))


def learn_categories(features: Sequence[Feature], columns: Sequence[pa.ChunkedArray],
                     where: str) -> list[Feature]:
    """Fix each categorical feature's mapping from the training rows (sorted distinct values)."""
    out = []
    for f, col in zip(features, columns, strict=True):
        if f.kind != "categorical":
            out.append(f)
            continue
        values = pc.unique(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        cats = sorted(v for v in values.to_pylist() if v is not None)
        if len(cats) > MAX_CATEGORIES:
            raise DataError(
                f"{where}: categorical feature '{f.name}' has {len(cats)} distinct values "
                f"(more than {MAX_CATEGORIES}); it looks like an id: add it to 'exclude' or "
                "bucket it in SQL"
            )
        out.append(Feature(f.name, f.kind, f.dtype, tuple(cats)))
    return out


@dataclass(frozen=True)
class Target:
    """How label values map to what XGBoost learns."""

    dtype: str  # DuckDB type of the target column
    classes: tuple[Any, ...] = field(default=())  # class values, index = XGBoost label

    def arrow_type(self) -> pa.DataType:
        """Arrow type of the prediction column (for classifiers the target's type family:
        bool, int64, float64 or string)."""
        if not self.classes:
            return pa.float64()
        return pa.array(list(self.classes)).type


def positive_label(given: Any, classes: Sequence[Any]) -> Any:
    """The target's own value that a spec's positive_class names, or None.

    YAML's `1` names `true` of a BOOLEAN target and `true` names `1` of an INTEGER one, as
    they compare equal in SQL and Python. The class list must keep the column's own value:
    mixing `True` into integer classes made Arrow refuse the classes (or, worse, stored
    labels of another type than the prediction column).
    """
    return next((c for c in classes if c == given), None)


def label_column(col: pa.Array | pa.ChunkedArray, dtype: str) -> pa.Array | pa.ChunkedArray:
    """A classifier's label column as its classes hold it: DuckDB hands DECIMAL and HUGEINT
    labels over as Arrow decimals, which become DOUBLE and BIGINT (the target's type family,
    stored as JSON numbers; as text, '1.00' was the prediction). Other types stay."""
    if not pa.types.is_decimal(col.type):
        return col
    return _decimal_as(col, pa.int64() if _INTEGER.match(dtype.upper()) else pa.float64())


def _decimal_as(col: pa.Array | pa.ChunkedArray, to: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Arrow decimals as integers, or as the double DuckDB's cast gives: through their text,
    since Arrow's decimal -> double cast is not correctly rounded (a label 3.30 became
    3.3000000000000003, so `prediction = label` was false for its class: an audit)."""
    return pc.cast(col if pa.types.is_integer(to) else pc.cast(col, pa.string()), to)


def label_codes(col: pa.Array | pa.ChunkedArray, classes: pa.Array) -> pa.Array:
    """Each label's index in `classes` (null for a label that is not one of them)."""
    if pa.types.is_decimal(col.type) and not pa.types.is_decimal(classes.type):
        col = _decimal_as(col, classes.type)  # as label_column made the classes
    return pc.index_in(col, value_set=classes)


def check_output_names(spec: ModelSpec, classes: Sequence[Any]) -> None:
    """Train-time rule: every column pyml will write for this model (predictions,
    explanations, serve's fields) has a name of its own, also to DuckDB, which ignores case."""
    clash = class_clash(spec.task, classes)
    if clash is not None:
        raise OutputNameClash(f"{spec.where}: target '{spec.target}': {clash}; give the "
                              "classes labels that differ in more than case in the dbt model")
    names = [c.name for c in output_columns(spec.task, classes)] + list(ALL_EXTRAS)
    nul = next((n for n in names if "\x00" in n), None)
    if nul is not None:  # DuckDB cuts a column name at NUL: two columns, one name
        raise OutputNameClash(f"{spec.where}: target '{spec.target}' has a class label with a "
                              f"NUL character, which column {nul!r} cannot hold in DuckDB; "
                              "map the label to printable text in the dbt model")
    clash = key_clash(spec.key, names)
    if clash is not None:
        raise OutputNameClash(f"{spec.where}: {clash}; rename it in the dbt model")


def encode_target(spec: ModelSpec, dtype: str, col: pa.ChunkedArray) -> tuple[np.ndarray, Target]:
    """Labels as float array plus the Target description; errors name the column."""
    where = f"{spec.where}: target '{spec.target}'"
    kind = kind_of(dtype)
    if spec.task == "regression":
        if kind != "numeric" or dtype.upper() == "BOOLEAN":
            raise DataError(f"{where} has type {dtype}; a regression target must be numeric")
        check_output_names(spec, ())
        y = col.to_numpy().astype(np.float64)
        if not np.isfinite(y).all():
            raise DataError(f"{where} has {int((~np.isfinite(y)).sum())} NaN or infinite "
                            "values; NULL or clean them in the dbt model")
        return y, Target(dtype)
    if kind is None:
        raise DataError(f"{where} has type {dtype}; a class label must be a boolean, "
                        "integer or string column")
    distinct = pc.unique(col.combine_chunks())
    try:
        values = pc.unique(label_column(distinct, dtype)).to_pylist()
    except pa.ArrowInvalid:  # a HUGEINT label beyond BIGINT
        values = [2**63]
    if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):  # or UBIGINT
        raise DataError(f"{where} has class labels beyond the BIGINT range; map them to "
                        "smaller numbers or strings in the dbt model")
    if len(values) < len(distinct):  # two DECIMAL labels that are one DOUBLE
        raise DataError(f"{where} has DECIMAL class labels that differ only beyond a "
                        "DOUBLE's precision; round them or cast them to text in the dbt model")
    if any(isinstance(v, float) and not np.isfinite(v) for v in values):
        raise DataError(f"{where} has NaN or infinite values; clean them in the dbt model")
    classes = sorted(v for v in values if v is not None)
    if len(classes) < 2:
        shown = classes[0] if classes else "none"
        raise DataError(f"{where} has only one class ({shown}) among labelled rows; "
                        f"a {spec.task} model needs at least two")
    if spec.task == "binary":
        if len(classes) > 2:
            raise DataError(f"{where} has {len(classes)} classes; use task: multiclass")
        if spec.positive_class is not None:
            positive = positive_label(spec.positive_class, classes)
            if positive is None:
                raise SpecError(f"{spec.where}: positive_class {spec.positive_class!r} is not "
                                f"a value of the target (values: {classes})")
            classes = [c for c in classes if c is not positive] + [positive]
    check_output_names(spec, classes)
    codes = label_codes(col, pa.array(classes))
    return codes.to_numpy(zero_copy_only=False).astype(np.float64), Target(dtype, tuple(classes))
