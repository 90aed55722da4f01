"""Issue 16: reproducible training, lineage fingerprints, skipping what has not changed.

- the same rows in any order give a byte-identical stored booster and identical metrics
  (the in-memory read sorts each part by row hash: pyml.data.trainset);
- `pyml train` on unchanged inputs trains nothing and says so in one line, exit 0;
- any change to a cell, a row or the spec changes the fingerprints, so the model trains;
- a version whose booster equals the champion's is never promoted.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml import api
from pyml.data import extmem
from pyml.data.encode import resolve_features
from pyml.data.lineage import fingerprints
from pyml.dbt.spec import ModelSpec, parse_specs
from pyml.engines.duckdb import relation_columns
from pyml.store.registry import same_sql
from pyml.verbs.train import train_one

from .conftest import SCHEMA_YML, Loans

UNCHANGED = "default_risk: unchanged since v{} \u2014 same spec, SQL and data; --force retrains"
N_ROWS = 400


def _versions(loans: Loans, name: str = "default_risk") -> list[tuple[int, str]]:
    return [(int(v), str(s)) for v, s in loans.sql(
        "select version, status from ml.models where model_name = ? order by 1", [name])]


def _metrics(loans: Loans, version: int) -> list[tuple[Any, ...]]:
    return loans.sql("select split, metric, value, baseline, n_rows, ci_low, ci_high from "
                     "ml.metrics where model_name = 'default_risk' and version = ? "
                     "order by all", [version])


def _shuffle(loans: Loans, seed: float) -> None:
    """Rewrite main.loan_features with the same rows in another order, as dbt may."""
    loans.sql(f"select setseed({seed}); create table main.shuffled as select * from "
              "main.loan_features order by random()")
    loans.sql("drop table main.loan_features")
    loans.sql("alter table main.shuffled rename to loan_features")


def test_unchanged_inputs_train_nothing(scored: Loans) -> None:
    before = scored.sql("select count(*) from ml.model_events")
    result = scored.pyml("train", "default_risk")
    assert result.exit_code == 0, result.output
    assert UNCHANGED.format(1) in result.output.splitlines()
    assert _versions(scored) == [(1, "champion")]
    assert scored.sql("select count(*) from ml.model_events") == before
    # The same rows in another order are the same data.
    _shuffle(scored, 0.5)
    assert UNCHANGED.format(1) in scored.ok("train", "default_risk").output.splitlines()
    assert _versions(scored) == [(1, "champion")]


def test_a_shuffled_forced_retrain_is_identical_and_never_promoted(scored: Loans) -> None:
    first = scored.sql("select loan_id from main.loan_features limit 5")
    _shuffle(scored, 0.25)
    assert scored.sql("select loan_id from main.loan_features limit 5") != first
    out = scored.ok("train", "default_risk", "--force").output
    assert _versions(scored) == [(1, "champion"), (2, "challenger")]
    (same,), = scored.sql("select a.booster = b.booster from ml.models a, ml.models b where "
                          "a.model_name = 'default_risk' and b.model_name = a.model_name "
                          "and a.version = 1 and b.version = 2")
    assert same
    assert _metrics(scored, 2) == _metrics(scored, 1)
    reason = ("v2 is identical to champion v1 (the same booster, spec and features): v1 stays "
              "champion")
    assert f"-> challenger: {reason}" in out
    assert scored.sql("select event, reason from ml.model_events where version = 2 and "
                      "model_name = 'default_risk'") == [("rejected", reason)]
    lineage = scored.sql("select version, data_rows, booster_sha256 from ml.lineage where "
                         "model_name = 'default_risk' order by version")
    assert [r[:2] for r in lineage] == [(1, 3000), (2, 3000)] and lineage[0][2] == lineage[1][2]


def test_what_changes_retrains(scored: Loans) -> None:
    # A spec edit (and the re-parse that drops the manifest's compiled SQL) trains; the same
    # booster with another threshold is another model, promoted as not worse.
    scored.write_schema(SCHEMA_YML.replace("exclude: [loss, grade]\n",
                                           "exclude: [loss, grade]\n            threshold: 0.4\n",
                                           1))
    assert "default_risk v2 (binary)" in scored.ok("train", "default_risk").output
    assert _versions(scored) == [(1, "retired"), (2, "champion")]
    # One changed label trains.
    scored.sql("update main.loan_features set defaulted = not defaulted where loan_id = 7")
    assert "default_risk v3 (binary)" in scored.ok("train", "default_risk").output
    assert UNCHANGED.format(3) in scored.ok("train", "default_risk").output.splitlines()
    # The library's force.
    results = api.train(["default_risk"], project_dir=scored.dir, profiles_dir=scored.dir)
    assert [r.unchanged for r in results] == [True]
    results = api.train(["default_risk"], project_dir=scored.dir, profiles_dir=scored.dir,
                        force=True)
    assert [(r.unchanged, r.version) for r in results] == [(False, 4)]


def test_inputs_of_an_older_version_train_nothing(scored: Loans) -> None:
    # Not only the latest version counts: a spec edited and reverted (or a plain train after
    # `pyml tune` stored a tuned challenger) has v1's inputs, and says which version serves.
    scored.write_schema(SCHEMA_YML.replace("exclude: [loss, grade]\n",
                                           "exclude: [loss, grade]\n            threshold: 0.4\n",
                                           1))
    assert "default_risk v2 (binary)" in scored.ok("train", "default_risk").output
    scored.write_schema(SCHEMA_YML)
    out = scored.ok("train", "default_risk").output.splitlines()
    assert UNCHANGED.format(1) + (" (v1 is retired: `pyml promote default_risk --version 1` "
                                  "serves it)") in out
    assert _versions(scored) == [(1, "retired"), (2, "champion")]


def test_a_score_edit_trains_nothing(scored: Loans) -> None:
    """`score:` is read by pyml score at every run: editing it is no training input (a README
    walk: it stored and promoted an identical booster)."""
    scored.sql("create table main.to_score as select * from main.loan_features")
    scored.write_schema(SCHEMA_YML.replace(
        "exclude: [loss, grade]\n", "exclude: [loss, grade]\n            score: {relation: "
        "main.to_score, batch_size: 100}\n", 1))
    out = scored.ok("train", "default_risk").output.splitlines()
    assert UNCHANGED.format(1) in out, out


def test_inputs_of_an_older_version_train_when_the_champion_learned_other_data(
        scored: Loans) -> None:
    """A feature changed (v2, the champion, learned amount x 60) and changed back: the inputs
    are v1's again, but v1 never faced v2 and v2 never saw this data. Training nothing left
    v2 scoring the old definition (a README walk: 868 of 10,375 predictions flipped). So it
    trains (v3) and the policy judges it against v2; after that, v3's inputs are unchanged."""
    scored.sql("create table main.kept as select * from main.loan_features")
    scored.replace_features("select * replace (amount * 60 as amount)")
    assert "default_risk v2 (binary)" in scored.ok("train", "default_risk").output
    if _versions(scored)[-1] != (2, "champion"):
        scored.ok("promote", "default_risk", "--version", "2")
    scored.replace_features("select * from main.kept --")  # the original rows again
    scored.sql("drop table main.kept")
    out = scored.ok("train", "default_risk").output
    assert "default_risk v3 (binary)" in out and "unchanged" not in out, out
    again = scored.ok("train", "default_risk").output
    assert any(line.startswith(UNCHANGED.format(3)) for line in again.splitlines()), again


@settings(max_examples=60, deadline=None)
@given(champion_fits=st.booleans(), after=st.lists(st.booleans(), min_size=1, max_size=4),
       known=st.booleans())
def test_the_unchanged_rule(champion_fits: bool, after: list[bool], known: bool) -> None:
    """pick_unchanged: the champion when it matches; another match only when the champion
    learned the current data, or when it was trained after the champion was crowned."""
    from datetime import datetime, timedelta

    from pyml.store.registry import Fingerprinted, Lineage, pick_unchanged

    now = Lineage("spec", "raw:a", "data", 10, "p", "x")
    crowned = datetime(2026, 1, 1)
    champion = Fingerprinted(99, "champion", Lineage("tuned", "raw:a", "data" if
                                                     champion_fits else "other", 10, "p",
                                                     "x"), crowned)
    matches = [Fingerprinted(i, "challenger", now, crowned + timedelta(hours=1 if a else -1))
               for i, a in enumerate(after)]
    got = pick_unchanged(now, [champion, *matches], crowned if known else None)
    eligible = [m.version for m in matches if champion_fits or not known
                or m.created_at >= crowned]
    assert got == ((eligible[0], "challenger") if eligible else None)
    assert pick_unchanged(now, [Fingerprinted(99, "champion", now, crowned), *matches],
                          crowned) == (99, "champion")


@settings(max_examples=200, deadline=None)
@given(raw=st.sampled_from([None, "r1", "r2"]), compiled=st.sampled_from([None, "c1", "c2"]),
       raw2=st.sampled_from([None, "r1", "r2"]), compiled2=st.sampled_from([None, "c1", "c2"]))
def test_sql_fingerprints_agree_on_every_kind_both_have(raw: str | None, compiled: str | None,
                                                        raw2: str | None,
                                                        compiled2: str | None) -> None:
    def fingerprint(r: str | None, c: str | None) -> str | None:
        parts = [f"{k}:{v}" for k, v in (("raw", r), ("compiled", c)) if v is not None]
        return " ".join(parts) or None

    a, b = fingerprint(raw, compiled), fingerprint(raw2, compiled2)
    common = [(x, y) for x, y in ((raw, raw2), (compiled, compiled2))
              if x is not None and y is not None]
    expected = (a == b) if a is None or b is None else (
        bool(common) and all(x == y for x, y in common))
    assert same_sql(a, b) == expected == same_sql(b, a)
    # An older version's single-kind fingerprint ("compiled:<sha>") reads the same way.
    if compiled is not None and compiled2 is not None:
        assert same_sql(f"compiled:{compiled}", b) == (compiled == compiled2)


def test_a_registry_from_before_lineage_retrains_once(scored: Loans) -> None:
    scored.sql("drop table ml.lineage")
    assert "default_risk v2 (binary)" in scored.ok("train", "default_risk").output
    # v2 is v1's twin, kept a challenger; only v2 has fingerprints.
    assert UNCHANGED.format(2) + (" (v2 is a challenger: `pyml promote default_risk --version "
                                  "2` serves it)") in scored.ok("train", "default_risk"
                                                                ).output.splitlines()


# --- properties on a small real table ---------------------------------------------------

def _table(seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=N_ROWS)
    x2 = np.where(rng.random(N_ROWS) < 0.1, np.nan, rng.normal(size=N_ROWS))
    colour = rng.choice(["red", "green", "blue"], size=N_ROWS)
    y = (x1 + np.nan_to_num(x2) * 0.5 + (colour == "red") + rng.normal(0, 0.7, N_ROWS)) > 0.5
    return pa.table({"id": pa.array(np.arange(N_ROWS), pa.int64()),
                     "x1": x1, "x2": pa.array(x2, from_pandas=True),
                     "colour": colour, "y": y})


def _spec(**extra: Any) -> ModelSpec:
    raw = {"name": "m", "task": "binary", "target": "y", "key": "id",
           "num_boost_round": 20, "early_stopping_rounds": 5,
           "params": {"max_depth": 3, "subsample": 0.8, "colsample_bytree": 0.8}, **extra}
    [spec] = parse_specs(raw, feature_model="model.p.f", schema="main", relation="f",
                         source_file="models/f.yml")
    return spec


def _write(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    con.register("pyml_test_rows", table)
    con.execute("create or replace table main.f as select * from pyml_test_rows")
    con.unregister("pyml_test_rows")


def _stored(con: duckdb.DuckDBPyConnection, version: int) -> tuple[Any, ...]:
    (blob,), = con.execute("select booster from ml.models where version = ?",
                           [version]).fetchall()
    metrics = con.execute("select split, metric, value, ci_low, ci_high from ml.metrics "
                          "where version = ? order by all", [version]).fetchall()
    return blob, metrics


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(N_ROWS)),
       # None: in memory; else trained from disk (external memory) with the parts staged in
       # this many row hash buckets (pyml.data.extmem.Staged)
       buckets=st.sampled_from([None, 1, 4]))
def test_any_row_order_gives_the_same_booster(tmp_path_factory: pytest.TempPathFactory,
                                              order: list[int], buckets: int | None) -> None:
    db = tmp_path_factory.mktemp("order") / "f.duckdb"
    table = _table()
    con = duckdb.connect(str(db))
    external = buckets is not None
    try:
        with pytest.MonkeyPatch.context() as patch:
            if buckets is not None:
                patch.setattr(extmem, "bucket_count", lambda *_: buckets)
            _write(con, table)
            train_one(con, None, _spec(), external=external)
            _write(con, table.take(pa.array(order)))
            train_one(con, None, _spec(), external=external, force=True)
        assert _stored(con, 2) == _stored(con, 1)
        assert con.execute("select status from ml.models order by version").fetchall() == [
            ("champion",), ("challenger",)]
    finally:
        con.close()


SPEC_EDITS: list[dict[str, Any]] = [
    {"threshold": 0.4}, {"split": {"seed": 7}}, {"split": {"test_fraction": 0.3}},
    {"params": {"max_depth": 4, "subsample": 0.8, "colsample_bytree": 0.8}},
    {"num_boost_round": 21}, {"exclude": ["x2"]},
]
# Keys read on every run: no training input (a description edit stored and promoted a
# byte-identical booster: an audit).
RUNTIME_EDITS: list[dict[str, Any]] = [
    {"description": "another"}, {"promote": {"policy": "manual"}}, {"drift_threshold": 0.3},
    {"allow_leakage": True},
]


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["cell", "add", "remove", "duplicate", "spec", "runtime"]))
    row = draw(st.integers(0, N_ROWS - 1))
    if kind == "cell":
        column = draw(st.sampled_from(["id", "x1", "x2", "colour", "y"]))
        return kind, (row, column, draw(st.integers(1, 2**31)))
    if kind in ("spec", "runtime"):
        return kind, draw(st.sampled_from(SPEC_EDITS if kind == "spec" else RUNTIME_EDITS))
    return kind, row


def _changed(table: pa.Table, kind: str, arg: Any) -> pa.Table:
    rows = table.to_pylist()
    if kind == "cell":
        i, column, salt = arg
        old = rows[i][column]
        new: Any
        if column == "id":
            new = N_ROWS + salt  # a key no row has
        elif column == "y":
            new = not old
        elif column == "colour":
            new = None if salt % 3 == 0 else f"c{salt}"
        else:  # a float that differs from the old one (NULL <-> value too)
            new = None if old is not None and not math.isnan(old) and salt % 4 == 0 \
                else float(salt) + 0.5
        rows[i][column] = new
    elif kind == "add":
        rows.append({**rows[arg], "id": N_ROWS + arg})
    elif kind == "duplicate":
        rows.append(dict(rows[arg]))
    else:
        del rows[arg]
    return pa.Table.from_pylist(rows, schema=table.schema)


def _fingerprints(con: duckdb.DuckDBPyConnection, spec: ModelSpec) -> Any:
    columns = relation_columns(con, "main", "f")
    return fingerprints(con, None, spec, resolve_features(spec, columns), dict(columns),
                        {"tune": False, "external": False})


@settings(max_examples=80, deadline=None)
@given(change=changes(), order=st.permutations(range(N_ROWS)))
def test_any_change_trains_and_no_reorder_does(change: tuple[str, Any],
                                               order: list[int]) -> None:
    kind, arg = change
    table = _table()
    con = duckdb.connect()
    try:
        _write(con, table)
        before = _fingerprints(con, _spec())
        _write(con, table.take(pa.array(order)))
        assert _fingerprints(con, _spec()).changes(before) == []  # same rows: unchanged
        if kind == "spec":
            after = _fingerprints(con, _spec(**arg))
            assert "spec" in after.changes(before)  # (and data, when columns are dropped)
        elif kind == "runtime":
            assert _fingerprints(con, _spec(**arg)).changes(before) == []
        else:
            _write(con, _changed(table, kind, arg))
            assert _fingerprints(con, _spec()).changes(before) == ["data"]
    finally:
        con.close()
