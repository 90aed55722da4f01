"""`pyml scaffold`: a cleansing staging model and its YAML, written from a raw relation's
profile (pyml.dbt.profiling).

Each column gets the package macro its values call for (clean_category, parse_date,
clean_amount, ...), missing markers become NULL, values the cleaning drops get an
`is_<column>_invalid` flag, and the YAML carries what was found and only the tests the
profiled data passes. Existing files are never replaced without `force`; all files are
checked before any is written, and each is written atomically.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml

from pyml.dbt.profiling import (
    DATE_FORMATS,
    HIGH_SENTINELS,
    LOW_SENTINELS,
    NARROW_DATES,
    WIDE_DATES,
    ColumnProfile,
    RelationProfile,
    profile_relation,
)
from pyml.dbt.project import Project
from pyml.engines.duckdb import quote, relation_columns
from pyml.errors import OutputError, RelationNotFound, UsageError
from pyml.files import replacing

# Whole words of the name: "fee" inside feedback_score made it an amount (an audit).
_AMOUNT_NAME = re.compile(r"(^|_)(amount|price|cost|revenue|charge|fee|total|balance|salary|"
                          r"spend)s?(_|$)")
_KEY_NAME = re.compile(r"(^|_)(id|key)$")
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
_SHARE = 0.8  # share of present values that must parse for a column to get that type
_FORMAT_NAMES = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH", "%M": "MI", "%S": "SS"}


@dataclass(frozen=True)
class Target:
    """A relation to scaffold and how the model refers to it."""

    schema: str  # schema in the target database
    name: str  # table or view name
    reference: str  # SQL/Jinja in the model: {{ source(...) }} or "schema"."name"
    source: str | None  # the dbt source name when declared as one
    model: str  # stg_<source>__<entity>s


@dataclass(frozen=True)
class Column:
    """One output column: its SQL and YAML entry."""

    sql: str  # the cleansing expression, aliased
    entry: dict[str, Any]  # its YAML (name, description, data_tests)
    flag: tuple[str, dict[str, Any]] | None = None  # is_<col>_invalid SQL and YAML
    settings: str | None = None  # a `{%- set ... -%}` line the SQL needs


def _jinja(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    """A column name as the model writes it: quoted unless plain and no reserved word (a
    column named `select` made the model fail to parse: an audit)."""
    return name if _PLAIN.fullmatch(name) and name not in _reserved() else quote(name)


@functools.cache
def _reserved() -> frozenset[str]:
    """DuckDB's keywords that cannot stand as a bare column name."""
    with duckdb.connect() as con:
        rows = con.execute("select keyword_name from duckdb_keywords() "
                           "where keyword_category <> 'unreserved'").fetchall()
    return frozenset(str(r[0]).lower() for r in rows)


def _plural(entity: str) -> str:
    return entity if entity.endswith("s") else entity + "s"


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "relation"


def find_target(project: Project, con: duckdb.DuckDBPyConnection, relation: str) -> Target:
    """A dbt source `source.table`, else a relation `schema.table` (or `table` when one
    schema holds it) of the target database; RelationNotFound otherwise."""
    for node in project.manifest.get("sources", {}).values():
        if f"{node['source_name']}.{node['name']}" == relation:
            ref = "{{ source(" + _jinja(node["source_name"]) + ", " + _jinja(node["name"]) + ") }}"
            return Target(str(node["schema"]), str(node.get("identifier") or node["name"]),
                          ref, str(node["source_name"]),
                          f"stg_{_safe_name(node['source_name'])}__"
                          f"{_plural(_safe_name(node['name']))}")
    parts = relation.split(".")
    if len(parts) == 2:
        where, params = "table_schema = ? and table_name = ?", parts
    elif len(parts) == 1:
        where, params = "table_name = ?", parts
    else:
        raise UsageError(f"relation '{relation}': give a dbt source as source.table or a "
                         "table as schema.table")
    found = con.execute("select table_schema, table_name from information_schema.tables "
                        f"where table_catalog = current_database() and {where}",
                        params).fetchall()
    if len(found) != 1:
        what = "is in several schemas" if found else "is neither a dbt source of this " \
            "project nor a table or view of the target database"
        raise RelationNotFound(f"relation '{relation}' {what}: name it as source.table "
                               "(a declared dbt source) or schema.table")
    schema, name = str(found[0][0]), str(found[0][1])
    return Target(schema, name, f"{quote(schema)}.{quote(name)}", None,
                  f"stg_{_safe_name(schema)}__{_plural(_safe_name(name))}")


def _values(n: int) -> str:
    return "value" if n == 1 else "values"


def _missing_notes(p: ColumnProfile) -> list[str]:
    notes = [f"{n:,} {_values(n)} '{m}' -> NULL" for m, n in sorted(p.markers.items())]
    if p.stats.get("blank"):
        notes.append(f"{p.stats['blank']:,} blank -> NULL")
    if p.stats.get("null"):
        notes.append(f"{p.stats['null']:,} NULL")
    return notes


def _formats(p: ColumnProfile) -> str:
    found = []
    for i, fmt in enumerate(DATE_FORMATS):
        n = p.stats.get(f"format:{i}") or 0
        if n:
            name = fmt
            for k, v in _FORMAT_NAMES.items():
                name = name.replace(k, v)
            found.append(f"{name} ({n:,})")
    return ", ".join(found)


def _column(p: ColumnProfile, key: str | None) -> Column:
    """The cleansing of one column, chosen from what its values parse as."""
    col, s = p.name, p.stats
    arg = _jinja(_ident(col))
    alias = _ident(col)
    tests: list[Any] = []
    notes = _missing_notes(p) if p.is_text else (
        [f"{s['null']:,} NULL"] if s.get("null") else [])
    settings = None
    if not p.is_text:
        expr = alias
        kind = f"kept as {p.type}"
        if s.get("num_min") is not None and s["num_min"] >= 0:
            tests.append({"pyml.accepted_range": {"arguments": {"min_value": 0}}})
        sentinels = [str(v) for v in LOW_SENTINELS + HIGH_SENTINELS if s.get(f"sentinel:{v}")]
        if sentinels:
            notes.append(f"possible sentinel values {', '.join(sentinels)} (kept: edit to NULL)")
        invalid = 0
    else:
        present = s["present"]
        invalid = 0
        if present == 0:
            expr, kind = f"{{{{ pyml.clean_text({arg}, case='none') }}}}", "all values missing"
        elif s["bool"] >= _SHARE * present and s["bool_word"] and s["distinct"] <= 8:
            expr, kind = f"{{{{ pyml.clean_boolean({arg}) }}}}", "boolean"
            invalid = present - s["bool"]
        elif s["num"] >= _SHARE * present:
            expr, kind, invalid, extra, tests = _number(p, arg, key)
            notes += extra
        elif s["date"] >= _SHARE * present:
            wide = s["date_narrow"] < s["date_wide"]
            bounds = WIDE_DATES if wide else NARROW_DATES
            macro = "parse_timestamp" if s["time"] else "parse_date"
            # Always written: without them the project's vars (or the macro's 1900-2099)
            # decide, and the invalid count here was against other bounds (an audit).
            args = f"{arg}, min_date='{bounds[0]}', max_date='{bounds[1]}'"
            expr = f"{{{{ pyml.{macro}({args}) }}}}"
            kind = "timestamp" if s["time"] else "date"
            invalid = present - (s["date_wide"] if wide else s["date_narrow"])
            formats = _formats(p)
            notes.append(("mixed formats: " if "," in formats else "format ") + formats)
            notes.append(f"{s['date_min'][:10]} to {s['date_max'][:10]}")
        elif s["email"] >= _SHARE * present:
            expr, kind = f"{{{{ pyml.clean_email({arg}) }}}}", "email"
            invalid = present - s["email"]
        elif (p.categories and col != key and not s["odd_chars"]
              and s["distinct"] * 2 <= present):
            values = [c.value for c in p.categories]
            name = f"{_safe_name(col)}_values"
            settings = "{%- set " + name + " = [" + ", ".join(_jinja(v) for v in values) + "] -%}"
            expr, kind = f"{{{{ pyml.clean_category({arg}, {name}) }}}}", "category"
            tests.append({"accepted_values": {"arguments": {"values": values}}})
            for c in p.categories:
                if len(c.raws) > 1:
                    notes.append(f"{len(c.raws)} spellings of '{c.raws[0].strip()}'")
        elif col == key and s["num"] == present and not s["frac"] and not s["money"]:
            expr, kind = f"{{{{ pyml.safe_cast(pyml.null_if_empty({arg}), 'bigint') }}}}", \
                "integer key"
        else:
            expr, kind = f"{{{{ pyml.clean_text({arg}, case='none') }}}}", "text, trimmed"
            if s["distinct_trimmed"] < s["distinct_raw"]:
                notes.append("padded with whitespace")
    if col == key:
        tests = ["unique", "not_null", *tests]
    elif _KEY_NAME.search(col.lower()) and p.is_text and s["present"]:
        distinct = s["num_distinct"] if kind == "integer" else s["distinct_trimmed"]
        if distinct < s["present"]:
            notes.append(f"values repeat ({distinct:,} distinct in {s['present']:,} rows, "
                         "exact duplicate rows included): not a unique key")
    description = f"{col}: {kind}" + ("; " + "; ".join(notes) if notes else "") + "."
    entry: dict[str, Any] = {"name": col, "description": description}
    if alias != col:
        entry["quote"] = True  # dbt's tests then quote the name as the model does
    if tests:
        entry["data_tests"] = tests
    flag = None
    if invalid:
        flag_name = f"is_{_safe_name(col)}_invalid"
        cleaned = expr[3:-3]  # the macro call without its {{ }}
        flag = (f"{{{{ pyml.is_invalid_flag({arg}, {cleaned}) }}}} as {flag_name}",
                {"name": flag_name,
                 "description": f"{col} was given but its value was dropped "
                                f"({invalid:,} rows).",
                 "data_tests": ["not_null"]})
        entry["description"] = description[:-1] + f"; {invalid:,} invalid -> NULL."
    return Column(f"{expr} as {alias}", entry, flag, settings)


def _number(p: ColumnProfile, arg: str, key: str | None
            ) -> tuple[str, str, int, list[str], list[Any]]:
    """clean_amount for numeric text: bounds from negative amounts and sentinels."""
    s, notes = p.stats, list[str]()
    amount = bool(s["money"]) or bool(_AMOUNT_NAME.search(p.name.lower()))
    if not s["frac"] and not amount and max(abs(s["num_min"] or 0), abs(s["num_max"] or 0)) \
            >= 2**53:
        # Whole numbers a double cannot hold (19-digit ids): clean_amount's double made ten
        # distinct ids one, and 20 digits NULL (an audit). Kept as text.
        return (f"{{{{ pyml.clean_text({arg}, case='none') }}}}",
                "text (whole numbers too long for a double)", 0, notes, [])
    if s["money"]:
        notes.append(f"{s['money']:,} with currency signs or thousands separators")
    # -1 beside 0 is a value (a delta, a rating change), not a missing marker: nulling it
    # dropped a third of a {-1, 0, 1} column (an audit).
    sentinels = [v for v in LOW_SENTINELS if s[f"sentinel:{v}"] and not (v == -1 and s["zero"])]
    low = sum(s[f"sentinel:{v}"] for v in sentinels)
    min_value: float | None = None
    dropped = 0
    if s["neg"] and (amount or s["neg"] == low):
        min_value, dropped = 0, s["neg"]
        what = "negative amounts" if amount and s["neg"] != low else "sentinel values " + \
            ", ".join(str(v) for v in sentinels)
        notes.append(f"{s['neg']:,} {what} -> NULL")
    elif amount or (s["num_min"] is not None and s["num_min"] >= 0):
        min_value = 0
    max_value = None
    for v in HIGH_SENTINELS:
        below = s[f"below:{v}"]
        if s[f"sentinel:{v}"] and (below is None or below < v / 5) and s["num_max"] == v:
            max_value = v - 1
            dropped += s[f"sentinel:{v}"]
            notes.append(f"{s[f'sentinel:{v}']:,} sentinel values {v} -> NULL")
            break
    unparsed = s["present"] - s["num"]
    if unparsed:
        notes.append(f"{unparsed:,} not numbers -> NULL")
    bounds = f", min_value={'none' if min_value is None else min_value}"
    if max_value is not None:
        bounds += f", max_value={max_value}"
    expr = f"pyml.clean_amount({arg}{bounds})"
    integer = not s["frac"] and not amount
    if integer:
        expr = f"pyml.safe_cast({expr}, 'bigint')"
    tests: list[Any] = []
    args: dict[str, Any] = {}
    if min_value is not None:
        args["min_value"] = min_value
    if max_value is not None:
        args["max_value"] = max_value
    if args:
        tests.append({"pyml.accepted_range": {"arguments": args}})
    kind = "integer" if integer else ("amount" if amount else "number")
    return f"{{{{ {expr} }}}}", kind, unparsed + dropped, notes, tests


def _key(profile: RelationProfile) -> str | None:
    """The first id-like column whose cleaned values are present and unique on every row
    left after deduplication."""
    for p in profile.columns:
        if not _KEY_NAME.search(p.name.lower()):
            continue
        s = p.stats
        if p.is_text:
            present = s["present"]
            if s["num"] >= _SHARE * present:  # cleaned as a number (see _column)
                ok = s["num"] == present and not s["neg"] and s["num_max"] < HIGH_SENTINELS[0]
                distinct = s["num_distinct"] if ok else -1
            elif max(s["bool"], s["date"], s["email"]) >= _SHARE * present:
                distinct = -1  # not cleaned as plain text: not a key
            else:
                distinct = s["distinct_trimmed"]
            if present == profile.rows and distinct == profile.distinct_rows:
                return p.name
        elif not s["null"] and s["distinct"] == profile.distinct_rows:
            return p.name
    return None


def render(target: Target, relation: str, profile: RelationProfile) -> tuple[str, str]:
    """The model's SQL and YAML for `profile`."""
    key = _key(profile)
    columns = [_column(p, key) for p in profile.columns]
    how = ("a dbt source of this project" if target.source
           else "not a dbt source: referenced by name; declare it as a source to track it")
    # The `set` lines go first: their whitespace control would pull a comment onto `with`.
    lines = [c.settings for c in columns if c.settings]
    lines += [f"-- Generated by `pyml scaffold {relation}` from {target.schema}.{target.name} "
             f"({how}),",
             f"-- profiled on {profile.rows:,} rows. Edit freely: pyml scaffold replaces this "
             "file only with --force."]
    ctes = [f"source as (\n\n    select * from {target.reference}\n\n)"]
    previous = "source"
    if profile.distinct_rows < profile.rows:
        ctes.append("deduplicated as (\n\n    -- "
                    f"{profile.rows - profile.distinct_rows:,} exact duplicate rows\n"
                    "    select distinct * from source\n\n)")
        previous = "deduplicated"
    marked = [p for p in profile.columns if p.markers]
    if marked:
        selects = []
        for p in profile.columns:
            c = _ident(p.name)
            # Each column's own markers: one list for all nulled Namibia's 'NA' in a column
            # of country codes when another column used NA for missing (an audit).
            markers = ", ".join(f"'{m}'" for m in sorted(p.markers))
            selects.append(f"case when lower(trim({c})) in ({markers}) then null else {c} end"
                           f" as {c}" if p.markers else c)
        ctes.append("missing_markers_nulled as (\n\n    -- missing-value markers found in "
                    "the data\n    select\n        " + ",\n        ".join(selects)
                    + f"\n    from {previous}\n\n)")
        previous = "missing_markers_nulled"
    body = [c.sql for c in columns] + [c.flag[0] for c in columns if c.flag]
    ctes.append("cleaned as (\n\n    select\n        " + ",\n        ".join(body)
                + f"\n    from {previous}\n\n)")
    ctes.append("final as (\n\n    select * from cleaned\n\n)")
    sql = "\n".join(lines) + "\n\nwith\n\n" + ",\n\n".join(ctes) + "\n\nselect * from final\n"
    entries = [c.entry for c in columns] + [c.flag[1] for c in columns if c.flag]
    grain = f"One row per {key}" if key else "One row per source row (no unique key found)"
    dupes = (f"; {profile.rows - profile.distinct_rows:,} exact duplicate rows removed"
             if profile.distinct_rows < profile.rows else "")
    doc = {"version": 2, "models": [{
        "name": target.model,
        "description": f"{grain}: {target.schema}.{target.name} cleaned ({profile.rows:,} "
                       f"rows profiled by pyml scaffold{dupes}).",
        "columns": entries}]}
    return sql, yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def scaffold(project: Project, con: duckdb.DuckDBPyConnection, relations: list[str], *,
             output_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Write a staging model + YAML per relation; the paths written. Nothing is written
    when any relation fails or any file exists (without `force`)."""
    if not relations:
        raise UsageError("name at least one relation: pyml scaffold raw.customers")
    folder = output_dir or project.project_dir / "models" / "staging"
    planned: list[tuple[Path, str]] = []
    for relation in relations:
        target = find_target(project, con, relation)
        columns = relation_columns(con, target.schema, target.name)
        profile = profile_relation(con, target.schema, target.name, columns)
        if profile.rows == 0:
            raise UsageError(f"relation '{relation}' is empty: there is nothing to profile; "
                             "load data into it first")
        sql, doc = render(target, relation, profile)
        planned += [(folder / f"{target.model}.sql", sql),
                    (folder / f"_{target.model}__models.yml", doc)]
    paths = [path for path, _ in planned]
    twice = next((p for p in paths if paths.count(p) > 1), None)
    if twice is not None:  # raw.tag and raw.tags: the second overwrote the first (an audit)
        raise UsageError(f"two of the relations would write {twice}: scaffold them one at a "
                         "time with --output-dir, or rename one model afterwards")
    if not force:
        for path in paths:
            if path.exists():
                raise OutputError(f"{path} exists: edit it, or pass --force to replace it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {folder}: {e.strerror}") from None
    for path, text in planned:
        with replacing(path) as tmp:
            tmp.write_text(text)
    return paths
