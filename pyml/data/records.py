"""Records (JSON objects) -> float32 input rows, by the plan of `pyml.data.encode.input_plan`.

`pyml serve` encodes request bodies with this code, and `pyml export` copies the code below
the `portable` marker verbatim into the exported `predict.py`, which reads the same plan from
the model card: a record becomes the same row in both, by construction. So this module
imports nothing from pyml and nothing beyond math and numpy.

The rules (the plan's, as `pyml score` applies them in SQL and on Arrow columns):

- a number is read as a double (an integer to the nearest double) and rounded to float32,
  to nearest, in one cast; a boolean feature reads true/false (or 1/0) as 1/0, and nothing
  else, as `pyml score` reads a BOOLEAN column;
- NaN, null, an absent field and an unseen category are missing (NaN);
- a category is its index in the training categories (a string; anything else is refused);
- a number that float32 cannot hold (it would round to infinity) is refused, with the record
  and field named.
"""

import json
import math
from pathlib import Path

import numpy as np

# predict.py imports json, math and numpy as np itself: the portable code uses those names.
PORTABLE_MARKER = "# --- portable: copied into predict.py by pyml export ---\n"


def portable_source() -> str:
    """The code below the marker: what `pyml export` writes into predict.py."""
    return Path(__file__).read_text(encoding="utf-8").split(PORTABLE_MARKER, 1)[1]


# --- portable: copied into predict.py by pyml export ---
# The record encoder of pyml (pyml/data/records.py): the model card's "plan" -> float32 rows.

NUMBER, BOOLEAN, CATEGORY = 0, 1, 2  # how a field is read (plan "read": number/boolean/category)
_READS = {"number": NUMBER, "boolean": BOOLEAN, "category": CATEGORY}
# The smallest double that float32 rounds to infinity (float32's largest value plus half its
# last step, a tie that rounds up): a number at or beyond it has no float32 input.
F32_LIMIT = 2.0**128 - 2.0**103
_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number",
               dict: "object", list: "array", type(None): "null"}


class RecordError(ValueError):
    """A record the model cannot read; the message names the record and the field."""


def prepare(plan: list[dict]) -> tuple:
    """The plan (a list of {"name", "read", "categories"}) in the form `encode_rows` reads:
    per feature (field, column, how, category -> code)."""
    return tuple((rule["name"], j, _READS[rule["read"]],
                  {c: float(i) for i, c in enumerate(rule["categories"])})
                 for j, rule in enumerate(plan))


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_records(data: object, what: str = "body") -> list:
    """`data` (decoded JSON) as a list of records, else RecordError naming what it is:
    `what` (the request body, the input file) must be a list, each record an object."""
    if not isinstance(data, list):
        raise RecordError(f"{what} must be a JSON list of records (objects), got "
                          f"{json_type(data)}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise RecordError(f"record {i + 1} must be a JSON object of field: value, "
                              f"got {json_type(rec)}")
    return data


def show(value: object) -> str:
    """A value as JSON, cut to 40 characters, for messages."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def encode_rows(prepared: tuple, records: list) -> np.ndarray:
    """The float32 input rows (C order, NaN = missing) of a list of records (dicts)."""
    width = len(prepared)
    nan = math.nan
    rows = []
    # Messages count records from 1, as people do: "record 1" is the first.
    for i, rec in enumerate(records):
        row = [nan] * width
        for name, j, how, codes in prepared:
            v = rec.get(name)
            if v is None:
                continue
            t = type(v)
            if how == CATEGORY:
                if t is not str:
                    raise RecordError(f"record {i + 1}: field '{name}' must be a string "
                                      f"(a category) or null, got {json_type(v)} {show(v)}")
                row[j] = codes.get(v, nan)
            elif how == BOOLEAN and (t is bool or ((t is int or t is float) and v in (0, 1))):
                row[j] = float(v)  # true/false, or 1/0 as JSON clients without booleans send
            elif how == BOOLEAN and t is float and math.isnan(v):
                continue  # missing, as for a number
            elif how == NUMBER and (t is float or t is int):
                try:
                    x = float(v)
                except OverflowError:  # an integer beyond any double
                    x = math.inf
                if abs(x) < F32_LIMIT:
                    row[j] = x
                elif not math.isnan(x):  # NaN stays missing; infinities are refused
                    raise RecordError(f"record {i + 1}: field '{name}' is {show(v)}, outside "
                                      "the float32 range the model reads")
            else:
                want = "true, false, 0, 1" if how == BOOLEAN else "a number"
                raise RecordError(f"record {i + 1}: field '{name}' must be {want} or null, "
                                  f"got {json_type(v)} {show(v)}")
        rows.append(row)
    # Double -> float32 in one cast, rounding to nearest as numpy, DuckDB and XGBoost do.
    return np.array(rows, dtype=np.float64).astype(np.float32).reshape(len(rows), width)
