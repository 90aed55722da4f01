"""Profile a raw relation's columns in SQL, for `pyml scaffold`.

One aggregate scan measures every column (missing markers, what its text parses as, under
the same expressions the package's macros use: clean_amount's stripping, parse_timestamp's
formats and bounds, clean_boolean's spellings); a second reads the values of the few
low-cardinality text columns (category spellings). No per-value Python loop.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import duckdb

from pyml.engines.duckdb import qualified, quote

# Texts that mean "no value" in raw extracts (compared trimmed and lower-cased). 'na' is how R
# and many statistics tools write a missing value to CSV. 'unknown' is left alone: in many
# tables it is a real category (a user drops it with clean_category's accepted list).
MISSING_MARKERS = ("?", "??", "n/a", "na", "n.a.", "null", "(null)", "none", "nan", "-", "--",
                   "#n/a")
# Markers that are also two-letter codes ('NA' is Namibia): in a column of such codes they are
# values, not missing.
CODE_MARKERS = ("na",)
CODE_SHARE = 0.9  # a column is one of two-letter codes when this share of its values are
# parse_timestamp's default formats (pyml/dbt_package/macros/parse_timestamp.sql).
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%m/%d/%Y %H:%M",
                "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d")
NARROW_DATES = ("2000-01-01", "2030-12-31")  # the demo's bounds; written out by scaffold
WIDE_DATES = ("1900-01-01", "2099-12-31")
TRUE_WORDS = ("true", "t", "yes", "y")
FALSE_WORDS = ("false", "f", "no", "n")
LOW_SENTINELS = (-1, -99, -999, -9999)
HIGH_SENTINELS = (999, 9999, 99999, 999999)
MAX_CATEGORIES = 20  # more distinct values than this is free text, not a category
TEXT_TYPES = ("VARCHAR", "TEXT", "STRING")
NUMBER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DOUBLE", "FLOAT",
                "REAL", "DECIMAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


@dataclass(frozen=True)
class Spelling:
    """One cleaned category value and the raw spellings that fold into it."""

    value: str  # trimmed, lower-cased
    count: int  # rows holding it
    raws: tuple[str, ...]  # distinct raw spellings, most frequent first


@dataclass(frozen=True)
class ColumnProfile:
    """What one column holds (counts are rows)."""

    name: str  # column name in the relation
    type: str  # DuckDB type
    stats: dict[str, Any]  # aggregate name -> value (see _text_aggregates)
    markers: dict[str, int] = field(default_factory=dict)  # missing marker -> rows
    categories: tuple[Spelling, ...] = ()  # low-cardinality text: its values

    @property
    def is_text(self) -> bool:
        """A text column (what the profiler parses)."""
        return self.type.upper() in TEXT_TYPES


@dataclass(frozen=True)
class RelationProfile:
    """A relation's size and its columns' profiles."""

    rows: int  # rows in the relation
    distinct_rows: int  # rows left after `select distinct *`
    columns: tuple[ColumnProfile, ...]  # in the relation's order


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(values: tuple[Any, ...]) -> str:
    return ", ".join(_lit(v) if isinstance(v, str) else str(v) for v in values)


def _text_aggregates(c: str, markers: tuple[str, ...] = MISSING_MARKERS) -> dict[str, str]:
    """Aggregate SQL per statistic of text column `c` (already quoted)."""
    # The same whitespace pyml.null_if_empty removes (the macros the scaffold writes), so a
    # key 'k0' beside 'k0\t' is one value here as in the model (its unique test failed).
    stripped = rf"regexp_replace(trim({c}), '^[\s\v\p{{Z}}]+|[\s\v\p{{Z}}]+$', '', 'g')"
    trimmed = f"nullif({stripped}, '')"
    folded = f"lower({stripped})"
    present = f"{trimmed} is not null and {folded} not in ({_in(markers)})"
    # A comma counts only as a thousands separator ('1,234.5'): clean_amount removes every
    # comma, so European '3,5' became 35 (an audit); such text is no number here.
    grouped = rf"regexp_full_match({trimmed}, '\$?-?\$?[0-9]{{1,3}}(,[0-9]{{3}})+(\.[0-9]*)?')"
    num = (f"try_cast(case when strpos({trimmed}, ',') = 0 or {grouped} then "
           f"replace(replace({trimmed}, '$', ''), ',', '') end as double)")
    ts = f"try_strptime({trimmed}, [{_in(DATE_FORMATS)}])"
    narrow = (f"{ts} >= timestamp '{NARROW_DATES[0]}' and "
              f"{ts} < timestamp '{NARROW_DATES[1]}' + interval 1 day")
    wide = (f"{ts} >= timestamp '{WIDE_DATES[0]}' and "
            f"{ts} < timestamp '{WIDE_DATES[1]}' + interval 1 day")
    aggs = {
        "null": f"count(*) filter (where {c} is null)",
        "blank": f"count(*) filter (where {c} is not null and {trimmed} is null)",
        "present": f"count(*) filter (where {present})",
        "distinct": f"count(distinct {folded}) filter (where {present})",
        "code2": f"count(*) filter (where {present} and regexp_full_match({folded}, '[a-z]{{2}}'))",
        "distinct_trimmed": f"count(distinct {stripped}) filter (where {present})",
        "distinct_raw": f"count(distinct {c}) filter (where {present})",
        "num": f"count(*) filter (where {present} and {num} is not null)",
        "num_distinct": f"count(distinct {num}) filter (where {present})",
        "money": f"count(*) filter (where {present} and {num} is not null "
                 f"and ({c} like '%$%' or {c} like '%,%'))",
        "frac": f"count(*) filter (where {present} and {num} <> floor({num}))",
        "neg": f"count(*) filter (where {present} and {num} < 0)",
        "zero": f"count(*) filter (where {present} and {num} = 0)",
        "num_min": f"min({num}) filter (where {present})",
        "num_max": f"max({num}) filter (where {present})",
        "date": f"count(*) filter (where {present} and {ts} is not null)",
        "date_narrow": f"count(*) filter (where {present} and {narrow})",
        "date_wide": f"count(*) filter (where {present} and {wide})",
        "date_min": f"cast(min({ts}) filter (where {present}) as varchar)",
        "date_max": f"cast(max({ts}) filter (where {present}) as varchar)",
        "time": f"count(*) filter (where {present} and {ts} <> date_trunc('day', {ts}))",
        "bool": f"count(*) filter (where {present} and "
                f"{folded} in ({_in(TRUE_WORDS + FALSE_WORDS + ('1', '0'))}))",
        "bool_word": f"count(*) filter (where {present} and "
                     f"{folded} in ({_in(TRUE_WORDS + FALSE_WORDS)}))",
        "email": f"count(*) filter (where {present} and "
                 rf"regexp_full_match({folded}, '[^@\s]+@[^@\s]+\.[a-z]{{2,}}'))",
        # Quotes, backslashes, control characters and Jinja's braces (dbt renders the YAML's
        # accepted values: '{{ 7 * 6 }}' became 42): no category code can hold them.
        "odd_chars": f"count(*) filter (where {present} and (strpos({c}, chr(39)) > 0 "
                     f"or strpos({c}, chr(92)) > 0 or regexp_matches({c}, '[\\x00-\\x1f]') "
                     f"or strpos({c}, '{{{{') > 0 or strpos({c}, '{{%') > 0))",
    }
    for marker in markers:
        aggs[f"marker:{marker}"] = f"count(*) filter (where {folded} = {_lit(marker)})"
    for s in LOW_SENTINELS + HIGH_SENTINELS:
        aggs[f"sentinel:{s}"] = f"count(*) filter (where {present} and {num} = {s})"
    for s in HIGH_SENTINELS:
        aggs[f"below:{s}"] = f"max({num}) filter (where {present} and {num} < {s})"
    for i, fmt in enumerate(DATE_FORMATS):
        aggs[f"format:{i}"] = (f"count(*) filter (where {present} and "
                               f"try_strptime({trimmed}, {_lit(fmt)}) is not null)")
    return aggs


def _other_aggregates(c: str, type_: str) -> dict[str, str]:
    aggs = {"null": f"count(*) filter (where {c} is null)",
            "distinct": f"count(distinct {c})"}
    if type_.upper().split("(")[0] in NUMBER_TYPES:
        aggs.update({"num_min": f"min({c})", "num_max": f"max({c})",
                     "neg": f"count(*) filter (where {c} < 0)"})
        for s in LOW_SENTINELS + HIGH_SENTINELS:
            aggs[f"sentinel:{s}"] = f"count(*) filter (where {c} = {s})"
    return aggs


def profile_relation(con: duckdb.DuckDBPyConnection, schema: str, name: str,
                     columns: list[tuple[str, str]]) -> RelationProfile:
    """Profile `schema.name` (whose (column, type) pairs are `columns`) in two scans."""
    source = qualified(schema, name)
    selects = ["count(*)"]
    keys: list[tuple[int, str]] = []
    for i, (col, type_) in enumerate(columns):
        aggs = (_text_aggregates(quote(col)) if type_.upper() in TEXT_TYPES
                else _other_aggregates(quote(col), type_))
        for key, sql in aggs.items():
            keys.append((i, key))
            selects.append(sql)
    row = con.execute(f"select {', '.join(selects)} from {source}").fetchone()
    assert row is not None
    distinct_row = con.execute(f"select count(*) from (select distinct * from {source})"
                               ).fetchone()
    stats: list[dict[str, Any]] = [{} for _ in columns]
    for (i, key), value in zip(keys, row[1:], strict=True):
        stats[i][key] = value
    coded = _code_columns(con, source, columns, stats)
    categories = _categories(con, source, columns, stats, coded)
    profiles = []
    for i, (col, type_) in enumerate(columns):
        markers = {k.split(":", 1)[1]: v for k, v in stats[i].items()
                   if k.startswith("marker:") and v}
        profiles.append(ColumnProfile(col, type_, stats[i], markers,
                                      tuple(categories.get(col, ()))))
    return RelationProfile(int(row[0]), int(distinct_row[0]) if distinct_row else 0,
                           tuple(profiles))


def _code_columns(con: duckdb.DuckDBPyConnection, source: str, columns: list[tuple[str, str]],
                  stats: list[dict[str, Any]]) -> set[str]:
    """Text columns of two-letter codes holding a CODE_MARKERS value ('NA' among 'US', 'DE').

    There the marker is a code: the column's statistics are measured again without it (one
    scan of those columns), so it counts as a value everywhere, categories included.
    """
    found = [(i, col) for i, (col, type_) in enumerate(columns)
             if type_.upper() in TEXT_TYPES and stats[i].get("present")
             and any(stats[i].get(f"marker:{m}") for m in CODE_MARKERS)
             and stats[i]["code2"] >= CODE_SHARE * stats[i]["present"]]
    if not found:
        return set()
    markers = tuple(m for m in MISSING_MARKERS if m not in CODE_MARKERS)
    keys, selects = [], []
    for i, col in found:
        for key, sql in _text_aggregates(quote(col), markers).items():
            keys.append((i, key))
            selects.append(sql)
    row = con.execute(f"select {', '.join(selects)} from {source}").fetchone()
    assert row is not None
    for i, _ in found:
        stats[i] = {}
    for (i, key), value in zip(keys, row, strict=True):
        stats[i][key] = value
    return {col for _, col in found}


def _categories(con: duckdb.DuckDBPyConnection, source: str, columns: list[tuple[str, str]],
                stats: list[dict[str, Any]], coded: set[str]) -> dict[str, list[Spelling]]:
    """The values of low-cardinality text columns, one grouped scan for all of them."""
    wanted = [col for (col, type_), s in zip(columns, stats, strict=True)
              if type_.upper() in TEXT_TYPES and 0 < s["distinct"] <= MAX_CATEGORIES]
    if not wanted:
        return {}
    parts = " union all ".join(
        f"select {_lit(col)} as col, {quote(col)} as raw from {source}" for col in wanted)
    codes = tuple(m for m in MISSING_MARKERS if m in CODE_MARKERS)
    others = tuple(m for m in MISSING_MARKERS if m not in CODE_MARKERS)
    kept = f"or col in ({_in(tuple(sorted(coded)))})" if coded else ""
    rows = con.execute(
        f"select col, lower(trim(raw)) as value, raw, count(*) as n from ({parts}) "
        f"where nullif(trim(raw), '') is not null "
        f"and lower(trim(raw)) not in ({_in(others)}) "
        f"and (lower(trim(raw)) not in ({_in(codes)}) {kept}) "
        "group by all order by col, value, n desc, raw").fetchall()
    grouped: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(dict)
    for col, value, raw, n in rows:
        grouped[col].setdefault(value, []).append((raw, n))
    # Most frequent spelling first; on a tie, one already trimmed (the likely canonical one).
    return {col: [Spelling(v, sum(n for _, n in raws), tuple(
                      r for r, _ in sorted(raws, key=lambda x: (-x[1], x[0] != x[0].strip()))))
                  for v, raws in values.items()]
            for col, values in grouped.items()}
