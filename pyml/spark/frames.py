"""The encoder plan on Spark: the SQL that delivers features, the float32 range check, and
Arrow columns -> the float32 matrix.

The rules are pyml.data.encode's (ENCODING): a number as DOUBLE rounded to float32 to
nearest, a category its code in the training mapping, NULL / NaN / an unseen category
missing. Spark's DOUBLE -> FLOAT cast and numpy's both round to nearest (IEEE 754), so the
matrix xgboost.spark trains on and the one the scoring executors build hold the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pyml.data.encode import READ_CATEGORY, Feature, input_plan, out_of_range
from pyml.engines.spark import quote


def column(i: int) -> str:
    """The alias of feature i in pyml's frames (never a user's column name)."""
    return f"__pyml_f{i}"


def raw_exprs(features: Sequence[Feature]) -> list[str]:
    """Select items that deliver each feature as DOUBLE or STRING (what `Encoder.matrix`
    reads), aliased `__pyml_f<i>`."""
    return [f"cast({quote(f.name)} as {'double' if f.kind == 'numeric' else 'string'}) "
            f"as {quote(column(i))}" for i, f in enumerate(features)]


def encoded_exprs(features: Sequence[Feature]) -> tuple[list[str], list[Any]]:
    """Select items that deliver each feature as its float32 model input (the plan in Spark
    SQL), with their positional parameters: a category's code is looked up in a map of the
    training categories, bound as arrays (a value not in it is NULL, i.e. missing)."""
    items, params = [], []
    for i, rule in enumerate(input_plan(features)):
        q = quote(rule.name)
        if rule.read != READ_CATEGORY:  # a BOOLEAN casts to 1/0 on its own
            items.append(f"cast(cast({q} as double) as float) as {quote(column(i))}")
        elif rule.categories:
            items.append(f"cast(try_element_at(map_from_arrays(?, ?), cast({q} as string)) "
                         f"as float) as {quote(column(i))}")
            params += [list(rule.categories), list(range(len(rule.categories)))]
        else:  # no value was ever seen in training: always missing
            items.append(f"cast(null as float) as {quote(column(i))}")
    return items, params


def range_items(features: Sequence[Feature], condition: str = "true") -> list[str]:
    """Aggregate select items counting each numeric feature's values that float32 cannot
    hold among the rows where `condition` holds (they use the named parameter `:f32_max`,
    F32_MAX); see `check_range`."""
    return [f"count_if({condition} and abs(cast({quote(f.name)} as double)) > :f32_max)"
            for f in features if f.kind == "numeric"]


def check_range(features: Sequence[Feature], counts: Sequence[int], where: str) -> None:
    """DataError naming the first numeric feature with values float32 cannot hold, from the
    `range_items` counts.

    DuckDB refuses such a cast; Spark makes it infinity, so pyml counts them first (in a
    query the verb runs anyway), with the same message as on DuckDB.
    """
    numeric = [f for f in features if f.kind == "numeric"]
    for f, bad in zip(numeric, counts, strict=True):
        if bad:
            raise out_of_range(where, f.name, bad)


def matrix(table: pa.Table, width: int, offset: int = 0) -> np.ndarray:
    """The float32 matrix (NaN = missing) from `width` encoded columns starting at
    `offset` (columns of `encoded_exprs`, already float32)."""
    out = np.empty((table.num_rows, width), dtype=np.float32)
    for j in range(width):
        col = table.column(offset + j)
        out[:, j] = col.to_numpy(zero_copy_only=False) if len(col) else []
    return out
