"""Boosters -> SQL: one SELECT that scores a relation exactly as `pyml score` does.

The query is built from the stored model only (booster, features, category mappings, classes,
threshold) and reads like a dbt model: import CTE -> inputs -> trees -> margins -> final.

* **inputs** delivers each numeric feature as DOUBLE (as pyml feeds XGBoost), once with NULL
  and NaN standing in as -1e308 (for splits whose missing values go left) and once as +1e308
  (missing goes right), so a split is one comparison against a double bound that agrees with
  XGBoost's float32 comparison (:func:`pyml.sqlgen.trees.split_bound`). Categorical features
  stay strings: a split is ``col in ('a', 'b')`` on the values, and a value outside the
  training mapping, or NULL, takes the default branch as in `pyml score`.
* **trees** holds one nested CASE per tree (a column each, so DuckDB binds and optimizes a
  1,000-tree model in seconds, not minutes). In DuckDB, rows are first ordered by the leaf
  they reach in the first tree: rows that follow the same paths then sit in the same vector,
  and DuckDB skips every CASE branch that no row of a vector takes.
* **margins** adds the float32 leaf values in tree order starting from the base margin, each
  addition rounded to float32 exactly like XGBoost: natively in DuckDB (FLOAT) and PostgreSQL
  (REAL); elsewhere with Veltkamp's split ``c - (c - x)``, ``c = x * (2^29 + 1)``, which
  rounds a double to 24 significant bits, ties to even.
* **final** applies the objective: sigmoid (binary, label decided on the margin), softmax
  (multiclass, label = first class with the largest margin) or identity (regression).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp

from pyml.data.encode import READ_BOOLEAN, Feature, InputRule, input_plan
from pyml.engines.duckdb import quote
from pyml.errors import InternalError, OutputError, RegistryError, SqlGenError, UsageError
from pyml.files import replacing
from pyml.modelling.model import check_outputs
from pyml.sqlgen.checks import check_name_lengths, checked_source
from pyml.sqlgen.outputs import output_ctes
from pyml.sqlgen.trees import (
    Forest,
    Tree,
    label_cut,
    model_json,
    read_forest,
    split_bound,
    tree_sql,
    used_sides,
)
from pyml.store.registry import StoredModel
from pyml.tasks import OBJECTIVES, PREDICTION_EXTRAS

DIALECTS = ("duckdb", "postgres", "snowflake", "bigquery", "sqlite", "spark")
# Dialects with a float32 type whose + rounds like C's float addition (Spark's FLOAT is a
# Java float: IEEE binary32, round to nearest even, and FLOAT + FLOAT stays FLOAT).
NATIVE_FLOAT32 = ("duckdb", "postgres", "spark")
TREES_PER_LEVEL = 100  # float32 additions per margin CTE (keeps expressions shallow)
TREES_PER_TABLE = 500  # tree columns per CTE where sums are emulated (SQLite: 2,000 at most)
SORT_MIN_TREES = 8  # below this, ordering rows by the first tree costs more than it saves
MISSING_LEFT, MISSING_RIGHT = "-1e308", "1e308"  # NULL/NaN stand-ins (beyond any float32)
VELTKAMP = "536870913.0"  # 2^29 + 1: splits a double's 53 bits into 24 + 29
DBT_SOURCE = "__pyml_dbt_source__"
_ENDRAW = re.compile(r"\{%[-+]?\s*endraw\b", re.I)
_DBT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TREE_SLOT = re.compile(r"__pyml_tree_(\d+)__")


@dataclass(frozen=True)
class _Plan:
    """What the query builders share."""

    stored: StoredModel  # the registry version
    forest: Forest  # its trees, exact
    dialect: str  # target dialect
    native: bool  # float32 additions by the database's own float type
    source: str  # relation SQL to read
    keys: tuple[str, ...]  # quoted key columns
    literal: Callable[[str], str]  # a string literal in the target dialect
    cut: float | None  # binary: smallest float32 margin labelled positive (None: unknown)


def scoring_sql(stored: StoredModel, *, dialect: str = "duckdb", dbt_model: bool = False,
                relation: str | None = None) -> str:
    """SQL that scores the model's feature relation (or, for dbt, its `ref`) in `dialect`.

    `relation`: what `pyml score` reads instead, the spec's score.relation (a dbt model name,
    or schema.table). The result has the key columns, the prediction columns of `pyml score`
    (prediction, probability, probability_<class>) and model_version.
    """
    if dialect not in DIALECTS:
        raise UsageError(f"unknown dialect '{dialect}'; choose one of {', '.join(DIALECTS)}")
    where = f"model '{stored.name}' v{stored.version}"
    check_outputs(stored, PREDICTION_EXTRAS[:1])  # the query has model_version, no scored_at
    check_name_lengths(stored, dialect, where)
    raw = model_json(stored.booster, where)
    forest = read_forest(raw, len(stored.features), where)
    expected = OBJECTIVES.get(stored.task)
    if expected != forest.objective:
        raise RegistryError(f"{where}: task '{stored.task}' does not match the booster's objective "
                        f"'{forest.objective}'; retrain the model")
    source = DBT_SOURCE if dbt_model else _table(relation) or _relation(stored)
    threshold = stored.threshold
    cut = (label_cut(raw, len(stored.features), threshold) if stored.task == "binary"
           else None)
    plan = _Plan(stored, forest, dialect, dialect in NATIVE_FLOAT32, source,
                 tuple(quote(k) for k in stored.key), _literal(dialect), cut)
    ctes = _input_ctes(plan) + (_native_margin_ctes(plan) if plan.native
                                else _emulated_margin_ctes(plan))
    ctes += output_ctes(stored, forest, plan.keys, plan.native, cut, _class_literal,
                        _fence(plan), lists=dialect == "duckdb")
    body = "with " + ",\n\n".join(f"{name} as {mat}(\n{sql}\n)" for name, sql, mat in ctes)
    body += "\n\nselect * from final\n"
    if dialect != "duckdb":
        # sqlglot rewrites the query around the trees; the trees themselves (CASE, IN, numbers,
        # string literals in the target dialect) read the same everywhere and are spliced in
        # afterwards, which keeps a 1,000-tree model from taking minutes to transpile.
        body = _transpile(body, dialect)
        body = _TREE_SLOT.sub(lambda m: _tree_case(plan, forest.trees[int(m.group(1))]), body)
    header = _header(stored, forest, dialect)
    if not dbt_model:
        return header + body
    return _dbt_wrap(stored, header, body, relation)


def _table(relation: str | None) -> str | None:
    """A score.relation written as schema.table, quoted; None for a dbt model name (or none)."""
    return ".".join(quote(p) for p in relation.split(".")) if relation and "." in relation \
        else None


def _relation(stored: StoredModel) -> str:
    schema = stored.schema
    relation = stored.relation
    if not (isinstance(schema, str) and isinstance(relation, str)):
        schema, _, relation = stored.feature_relation.partition(".")
    return f"{quote(schema)}.{quote(relation)}"


def _header(stored: StoredModel, forest: Forest, dialect: str) -> str:
    return (f"-- pyml model '{stored.name}' version {stored.version}: {forest.objective}, "
            f"{len(forest.trees)} trees, {dialect} SQL.\n"
            "-- Generated by `pyml sql` from the stored model; regenerate after retraining.\n")


def _num(value: float) -> str:
    """A double literal that every dialect reads back exactly (an exponent keeps it DOUBLE)."""
    text = repr(float(value))
    return text if ("e" in text or "inf" in text or "nan" in text) else text + "e0"


def _str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _literal(dialect: str) -> Callable[[str], str]:
    """String literals as `dialect` writes them (BigQuery and Snowflake escape backslashes)."""
    if dialect in ("duckdb", "postgres", "sqlite"):
        return _str
    cache: dict[str, str] = {}

    def literal(value: str) -> str:
        if value not in cache:
            cache[value] = exp.Literal.string(value).sql(dialect=dialect)
        return cache[value]
    return literal


def _class_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"cast({value} as bigint)"
    if isinstance(value, float):
        return _num(value)
    return _str(str(value))


def _feature_sql(rule: InputRule, dtype: str, nan_is_missing: bool = True) -> str:
    """A number or boolean feature as DOUBLE, as the input plan reads it (pyml.data.encode);
    NaN made NULL (missing) if asked, whatever the training type: a column trained as
    INTEGER may be DOUBLE now (pyml.data.encode.SCORING_TYPES), NaN included.

    The DOUBLE is compared with double split bounds that agree with XGBoost's float32
    comparison (:func:`pyml.sqlgen.trees.split_bound`), which stands in for the plan's
    float32 rounding.
    """
    col = quote(rule.name)
    if rule.read == READ_BOOLEAN:  # true/false as 1/0 in every dialect
        return f"cast(cast({col} as integer) as double)"
    value = f"cast({col} as double)"
    if nan_is_missing:
        return f"case when isnan({value}) then null else {value} end"
    return value


def _x(j: int, side: str) -> str:
    return f"__pyml_x{j}_{side}"


Condition = Callable[[Tree, int], "tuple[str, bool] | None"]


def _condition(features: Sequence[Feature], column: Callable[[int, str], str],
               literal: Callable[[str], str], or_lists: bool) -> Condition:
    """Split conditions on the input columns (`column(j, side)` names them)."""
    def member(col: str, values: list[str]) -> str:
        if len(values) == 1:
            return f"{col} = {literal(values[0])}"
        if len(values) >= 5 and or_lists:
            # DuckDB turns each IN list of five or more constants into a join; with
            # thousands of splits that costs seconds before the first row.
            return "(" + " or ".join(f"{col} = {literal(v)}" for v in values) + ")"
        return f"{col} in ({', '.join(map(literal, values))})"

    def condition(tree: Tree, node: int) -> tuple[str, bool] | None:
        j = tree.feature[node]
        if node in tree.right_codes:
            # The input column holds known categories only (NULL otherwise), so a split can
            # name whichever side is shorter: the missing rows are NULL on both sides.
            cats = features[j].categories
            right = [c for i, c in enumerate(cats) if i in tree.right_codes[node]]
            left = [c for i, c in enumerate(cats) if i not in tree.right_codes[node]]
            default, other = (left, right) if tree.default_left[node] else (right, left)
            if not other:
                return None  # every row takes the default branch
            col = column(j, "c")
            to_left = not tree.default_left[node]  # "in other" leads away from the default
            if not default:
                return f"{col} is null", not to_left
            if len(default) + 1 < len(other):
                return f"({col} is null or {member(col, default)})", not to_left
            return member(col, other), to_left
        bound, inclusive = split_bound(tree.value[node])
        side = "l" if tree.default_left[node] else "r"
        text = _num(bound)
        if bound == float("-inf"):  # no value is below -inf: only missing ones may go left
            text, inclusive = MISSING_LEFT, tree.default_left[node]
        return f"{column(j, side)} {'<=' if inclusive else '<'} {text}", True
    return condition


def _tree_case(plan: _Plan, tree: Tree, leaf_ids: bool = False,
               column: Callable[[int, str], str] = _x) -> str:
    ids = {n: i for i, n in enumerate(tree.leaves())} if leaf_ids else {}

    def leaf(t: Tree, node: int) -> str:
        return str(ids[node]) if leaf_ids else _num(t.value[node])

    return tree_sql(tree, _condition(plan.stored.features, column, plan.literal,
                                     plan.dialect == "duckdb"), leaf)


def _input_sql(rule: InputRule, dtype: str, side: str) -> str:
    """The input column expression of one step of the input plan: a number with its missing
    stand-in, or a category's string (NULL when it is not one of the training categories:
    missing, as in `pyml score`)."""
    if side == "c":
        value = f"cast({quote(rule.name)} as varchar)"
        if not rule.categories:
            return "cast(null as varchar)"
        return (f"case when {value} in ({', '.join(map(_str, rule.categories))}) "
                f"then {value} end")
    if side == "r":
        # NaN already goes right: every dialect with NaN finds `NaN < bound` false.
        return f"coalesce({_feature_sql(rule, dtype, nan_is_missing=False)}, {MISSING_RIGHT})"
    return f"coalesce({_feature_sql(rule, dtype)}, {MISSING_LEFT})"


def _sort_sql(f: Feature, side: str) -> str:
    """The raw column, for the row-ordering key only (any deterministic key will do)."""
    return quote(f.name) if f.dtype.upper() != "BOOLEAN" or side == "c" else \
        f"cast({quote(f.name)} as integer)"


def _input_ctes(plan: _Plan) -> list[tuple[str, str, str]]:
    features = plan.stored.features
    sides = [(j, "l" if left else "r") for j, left in sorted(used_sides(plan.forest.trees))]
    sides += [(j, "c") for j in sorted({t.feature[n] for t in plan.forest.trees
                                         for n in t.right_codes})]
    rules = input_plan(features)
    cols = list(plan.keys) + [f"{_input_sql(rules[j], features[j].dtype, side)} as "
                              f"{_x(j, side)}" for j, side in sides]
    mat = _fence(plan)
    if not plan.native:
        # Emulated float32 needs one CTE per tree, joined on a row number that must not
        # change between CTEs: number rows by the (unique) key and materialize.
        cols.append(f"row_number() over (order by {', '.join(plan.keys)}) as __pyml_rid")
    source = (checked_source(plan.stored, plan.source) if plan.dialect == "duckdb"
              else f"select * from {plan.source}")
    ctes = [("__pyml_source", f"    {source}", "")]
    prev = "__pyml_source"
    if plan.dialect == "duckdb" and len(plan.forest.trees) >= SORT_MIN_TREES:
        # Rows reaching the same leaf of the first tree mostly share their paths through
        # the others; processed together, they let DuckDB skip the CASE branches no row of
        # a vector takes (about half the work on a typical model).
        leaf0 = _tree_case(plan, plan.forest.trees[0], leaf_ids=True,
                           column=lambda j, side: _sort_sql(features[j], side))
        ctes.append(("__pyml_ordered", f"    select * from __pyml_source\n    order by {leaf0}",
                     ""))
        prev = "__pyml_ordered"
    ctes.append(("__pyml_inputs", "    select\n        " + ",\n        ".join(cols)
                 + f"\n    from {prev}", mat))
    carry = ["__pyml_rid"] if not plan.native else list(plan.keys)
    trees = []
    for k, tree in enumerate(plan.forest.trees):
        case = _tree_case(plan, tree) if plan.dialect == "duckdb" else f"__pyml_tree_{k}__"
        trees.append(f"cast({case} as float) as __pyml_t{k}" if plan.native
                     else f"{case} as __pyml_t{k}")
    if plan.native:
        ctes.append(("__pyml_trees", "    select\n        " + ",\n        ".join(carry + trees)
                     + "\n    from __pyml_inputs", ""))
        return ctes
    # SQLite allows 2,000 columns a result: the emulated sums read the trees from tables of
    # TREES_PER_TABLE columns each.
    for start in range(0, max(1, len(trees)), TREES_PER_TABLE):
        ctes.append((_trees_table(start), "    select\n        " + ",\n        ".join(
            carry + trees[start:start + TREES_PER_TABLE]) + "\n    from __pyml_inputs", mat))
    return ctes


def _trees_table(k: int) -> str:
    """The emulated dialects' CTE that holds tree k's leaf values."""
    return f"__pyml_trees_{k // TREES_PER_TABLE}"


def _fence(plan: _Plan) -> str:
    """`materialized ` where a CTE must be computed once.

    PostgreSQL inlines CTEs that are used once and then copies an expression into every
    place its column is used: without a fence each input column would be recomputed for
    every split that reads it. DuckDB keeps projections apart and needs no fence here.
    """
    return "" if plan.dialect == "duckdb" else "materialized "


def _m(group: int, step: int | str) -> str:
    return f"__pyml_m{group}_{step}"


def _native_margin_ctes(plan: _Plan) -> list[tuple[str, str, str]]:
    """float32 sums in the database's float type, left to right in tree order."""
    forest = plan.forest
    current = {g: f"cast({_num(b)} as float)" for g, b in enumerate(forest.base_margin)}
    ctes: list[tuple[str, str, str]] = []
    prev = "__pyml_trees"
    n = len(forest.trees)
    for level, start in enumerate(range(0, n, TREES_PER_LEVEL)):
        sums = dict(current)
        for k in range(start, min(n, start + TREES_PER_LEVEL)):
            g = forest.trees[k].group
            sums[g] = f"{sums[g]} + __pyml_t{k}"
        name = f"__pyml_margin_{level + 1}"
        items = [f"{sums[g]} as {_m(g, level + 1)}" for g in range(forest.num_groups)]
        ctes.append((name, "    select\n        *,\n        " + ",\n        ".join(items)
                     + f"\n    from {prev}", ""))
        current = {g: _m(g, level + 1) for g in range(forest.num_groups)}
        prev = name
    outs = [f"{current[g]} as __pyml_m{g}" for g in range(forest.num_groups)]
    # A fence: wrapped in another query (an aggregate, a filter, a dbt view), the optimizer
    # would otherwise fold the tree projections into the outer expressions, which takes
    # DuckDB minutes on a large model; materialized, only keys and margins are kept.
    ctes.append(("__pyml_scores", "    select\n        " + ",\n        ".join(
        [*plan.keys, *outs]) + f"\n    from {prev}", "materialized "))
    return ctes


def _emulated_margin_ctes(plan: _Plan) -> list[tuple[str, str, str]]:
    """float32 sums in double arithmetic: each sum rounded by Veltkamp's split, one CTE a tree.

    The rounding expression uses its argument three times, so each partial sum must be a
    column of its own (a materialized CTE) or the text would grow exponentially when a
    database inlines the CTEs.
    """
    forest = plan.forest
    groups = range(forest.num_groups)
    first = [f"{_num(b)} as __pyml_m{g}" for g, b in enumerate(forest.base_margin)]
    ctes = [("__pyml_step_0", "    select\n        __pyml_rid,\n        " + ",\n        ".join(
        first) + "\n    from __pyml_inputs", "materialized ")]
    for k, tree in enumerate(forest.trees):
        items = []
        for g in groups:
            if g == tree.group:
                x = f"(p.__pyml_m{g} + q.__pyml_t{k})"
                items.append(f"{x} * {VELTKAMP} - ({x} * {VELTKAMP} - {x}) as __pyml_m{g}")
            else:
                items.append(f"p.__pyml_m{g} as __pyml_m{g}")
        ctes.append((f"__pyml_step_{k + 1}", "    select\n        p.__pyml_rid,\n        "
                     + ",\n        ".join(items) + f"\n    from __pyml_step_{k} as p\n"
                     f"    join {_trees_table(k)} as q on q.__pyml_rid = p.__pyml_rid",
                     "materialized "))
    last = f"__pyml_step_{len(forest.trees)}"
    keys = [f"i.{k}" for k in plan.keys]
    outs = [f"s.__pyml_m{g} as __pyml_m{g}" for g in groups]
    ctes.append(("__pyml_scores", "    select\n        " + ",\n        ".join(keys + outs)
                 + f"\n    from __pyml_inputs as i\n    join {last} as s on s.__pyml_rid = "
                 "i.__pyml_rid", ""))
    return ctes


def _transpile(sql: str, dialect: str) -> str:
    """DuckDB SQL -> `dialect` with sqlglot, fixing what sqlglot leaves dialect-specific."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:  # a bug in pyml, not the user's to fix
        raise InternalError(f"sqlglot cannot parse the generated SQL: {e}") from e

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.IsNan):
            arg = node.this
            if dialect == "sqlite":
                return exp.false()  # SQLite stores NaN as NULL: nothing to catch
            if dialect in ("postgres", "snowflake"):
                # NaN = NaN is true in both (they order NaN above every number).
                nan = exp.cast(exp.Literal.string("NaN"), exp.DataType.build("double"))
                return exp.EQ(this=arg, expression=nan)
        if isinstance(node, exp.CTE) and dialect in ("bigquery", "snowflake", "spark"):
            # None accepts MATERIALIZED. Spark inlines CTEs but does not collapse a
            # projection into one that reads its non-trivial columns more than once
            # (CollapseProject), so each input column is still computed once per row.
            node.set("materialized", None)
        return node

    return tree.transform(fix, copy=False).sql(dialect=dialect, pretty=True) + "\n"


def _dbt_wrap(stored: StoredModel, header: str, body: str, relation: str | None = None
              ) -> str:
    """A dbt model: config, the ref to the feature model (or to `relation`, the spec's
    score.relation: a model name, or schema.table read as it is), the rest kept out of
    Jinja."""
    table = _table(relation)
    feature_model = (relation if relation and table is None
                     else stored.feature_model.split(".")[-1])
    if not _DBT_NAME.match(feature_model):
        raise SqlGenError(f"model '{stored.name}' v{stored.version}: stored feature model "
                        f"'{feature_model}' is not a dbt model name; retrain the model")
    before, found, after = body.partition(DBT_SOURCE)
    if not found:
        raise InternalError("the generated SQL lost its source relation")
    if _ENDRAW.search(before + after):
        raise SqlGenError(f"model '{stored.name}': a column name, category or class contains "
                        "'{% endraw', which cannot be written into a dbt model; rename it")
    read = table or f"{{{{ ref('{feature_model}') }}}}"
    return ("{{ config(materialized='table') }}\n"
            "-- noqa: disable=all\n" + header
            + "{% raw %}" + before + "{% endraw %}"
            + read
            + "{% raw %}" + after + "{% endraw %}\n")


def write_model_file(path: Path, text: str) -> Path:
    """Write a dbt model file atomically (temp file + rename) into an existing folder."""
    path = path.expanduser().resolve()
    if path.suffix.lower() != ".sql":
        raise OutputError(f"output file {path}: a dbt model file must end in .sql")
    if not path.parent.is_dir():
        raise OutputError(f"output file {path}: folder {path.parent} does not exist; create it "
                        "(inside your dbt project's models/) and retry")
    try:
        with replacing(path) as tmp:
            tmp.write_text(text)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    return path
