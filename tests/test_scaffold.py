"""`pyml scaffold`: on a fresh dbt project (not the demo) with a dirty raw table, the staging
model and YAML it writes build on the first `dbt build` with every generated test passing,
and the built table holds the cleaned values; its mistakes are one line, exit 1, nothing
written."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml.cli import cli
from pyml.dbt.package import init_project

DIRTY = [
    # id, plan, signup, charge, tenure, note, account
    ("1", "Fiber optic", "2024-01-31", "$1,234.50", "12", "ok", "a1"),
    ("2", " fiber optic ", "01/15/2024", "$20.00", "-1", "?", "a2"),
    ("3", "FIBER OPTIC", "2024-02-01", "35", "3", "N/A", "a3"),
    ("4", "DSL", "?", "N/A", "7", "", "a4"),
    ("5", "dsl ", "15.03.2024", "-5", "-1", "late", "a5"),
    ("6", "?", "", "$2,000", "24", "x", "a6"),
    ("7", "N/A", "2024-03-01", "", "1", "y", "a7"),
    ("8", "No", "2024-13-45", "12.5", "5", "z", "a8"),
    ("9", "Fiber optic", "2024-04-01", "10", "2", "w", "a1"),
    ("1", "Fiber optic", "2024-01-31", "$1,234.50", "12", "ok", "a1"),  # an exact duplicate row
]


def _project(root: Path, rows: list[tuple[str | None, ...]], columns: list[str],
             source: bool = True) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(
        "name: shop\nversion: '1.0'\nprofile: shop\nmodel-paths: [models]\n")
    (root / "profiles.yml").write_text(
        f"shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: {root / 'shop.duckdb'}\n      threads: 1\n")
    if source:
        (root / "models" / "_sources.yml").write_text(
            "version: 2\nsources:\n  - name: raw\n    schema: raw\n    tables:\n"
            "      - name: customers\n")
    con = duckdb.connect(str(root / "shop.duckdb"))
    con.execute("create schema raw")
    con.execute("create table raw.customers ("
                + ", ".join(f'"{c}" varchar' for c in columns) + ")")
    if rows:
        con.executemany(f"insert into raw.customers values ({', '.join('?' * len(columns))})",
                        rows)
    con.close()
    assert init_project(root).change == "created"
    return root


def _dbt(root: Path, *args: str) -> object:
    from dbt.cli.main import dbtRunner

    return dbtRunner().invoke([*args, "--project-dir", str(root), "--profiles-dir", str(root),
                               "--quiet"])


def _scaffold(root: Path, *args: str) -> object:
    return CliRunner().invoke(cli, ["scaffold", *args, "--project-dir", str(root),
                                    "--profiles-dir", str(root)])


def _build_green(root: Path) -> list[str]:
    """Run dbt build; the names of the tests that ran (asserting all passed)."""
    res = _dbt(root, "build")
    results = res.result  # type: ignore[attr-defined]
    assert res.exception is None, res.exception  # type: ignore[attr-defined]
    bad = [f"{r.node.name}: {r.status} {r.message}" for r in results
           if str(r.status) not in ("success", "pass")]
    assert not bad, bad
    return [r.node.name for r in results if r.node.resource_type == "test"]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _project(tmp_path_factory.mktemp("scaffold") / "shop", DIRTY,  # type: ignore[arg-type]
                    ["customer_id", "plan", "signup_date", "monthly_charge", "tenure", "note",
                     "account_id"])
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    return root


def test_scaffold_builds_green_and_cleans(dirty: Path) -> None:
    res = _scaffold(dirty, "raw.customers")
    assert res.exit_code == 0, res.output
    sql = (dirty / "models/staging/stg_raw__customers.sql").read_text()
    doc = yaml.safe_load((dirty / "models/staging/_stg_raw__customers__models.yml").read_text())
    assert "{{ source('raw', 'customers') }}" in sql
    tests = _build_green(dirty)
    assert any(t.startswith("unique_stg_raw__customers_customer_id") for t in tests)
    assert any(t.startswith("accepted_values_stg_raw__customers_plan") for t in tests)
    cols = {c["name"]: c["description"] for c in doc["models"][0]["columns"]}
    assert "3 spellings of 'Fiber optic'" in cols["plan"]
    assert "not a unique key" in cols["account_id"]
    assert "1 value '?' -> NULL" in cols["plan"] and "mixed formats" in cols["signup_date"]
    con = duckdb.connect(str(dirty / "shop.duckdb"))
    rows = con.execute("select * from main.stg_raw__customers order by customer_id").fetchall()
    names = [d[0] for d in con.description]  # type: ignore[union-attr]
    types = dict(con.execute("select column_name, data_type from information_schema.columns "
                             "where table_name = 'stg_raw__customers'").fetchall())
    con.close()
    got = [dict(zip(names, r, strict=True)) for r in rows]
    assert len(got) == 9  # the duplicate row is gone
    assert [r["plan"] for r in got] == ["fiber optic"] * 3 + ["dsl"] * 2 + [None, None, "no",
                                                                          "fiber optic"]
    assert types["signup_date"] == "DATE" and types["customer_id"] == "BIGINT"
    assert [r["signup_date"] for r in got[:3]] == [
        dt.date(2024, 1, 31), dt.date(2024, 1, 15), dt.date(2024, 2, 1)]
    assert got[4]["signup_date"] == dt.date(2024, 3, 15) and got[7]["signup_date"] is None
    assert got[7]["is_signup_date_invalid"] and not got[3]["is_signup_date_invalid"]
    assert [r["monthly_charge"] for r in got] == [1234.5, 20.0, 35.0, None, None, 2000.0,
                                                  None, 12.5, 10.0]
    assert got[4]["is_monthly_charge_invalid"] and not got[6]["is_monthly_charge_invalid"]
    assert [r["tenure"] for r in got] == [12, None, 3, 7, None, 24, 1, 5, 2]
    assert got[1]["is_tenure_invalid"] and not got[3]["is_tenure_invalid"]
    assert [r["note"] for r in got] == ["ok", None, None, None, "late", "x", "y", "z", "w"]


def test_scaffold_mistakes_write_nothing(dirty: Path) -> None:
    out = dirty / "elsewhere"
    res = _scaffold(dirty, "raw.customers", "raw.nope", "--output-dir", str(out))
    assert res.exit_code == 1 and "relation 'raw.nope'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()
    res = _scaffold(dirty, "raw.customers", "--output-dir", str(out))
    assert res.exit_code == 0, res.output
    before = (out / "stg_raw__customers.sql").read_text()
    (out / "stg_raw__customers.sql").write_text(before + "-- edited\n")
    res = _scaffold(dirty, "raw.customers", "--output-dir", str(out))
    assert res.exit_code == 1 and "--force" in res.output
    assert (out / "stg_raw__customers.sql").read_text().endswith("-- edited\n")
    res = _scaffold(dirty, "raw.customers", "--output-dir", str(out), "--force")
    assert res.exit_code == 0 and (out / "stg_raw__customers.sql").read_text() == before


def test_scaffold_refuses_an_empty_table(tmp_path: Path) -> None:
    root = _project(tmp_path / "shop", [], ["a"], source=False)
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    res = _scaffold(root, "raw.customers")
    assert res.exit_code == 1 and "is empty" in res.output
    assert not (root / "models" / "staging").exists()


_MESSY = st.sampled_from(["", " ", "?", "N/A", "null", "-", None])
# Families of values a raw column holds (plus markers): each column draws from one, or
# from all at once (a column of junk).
_FAMILIES = [
    st.sampled_from(["Red", " red", "RED ", "Blue", "blue", "green"]),
    st.sampled_from(["2024-01-31", "01/15/2024", "15.03.2024", "2024-02-30", "1999-12-31",
                     "2024-01-31 10:30:00"]),
    st.sampled_from(["$1,234.50", "12", "-1", "9999", "0.5", "-3", "7"]),
    st.sampled_from(["yes", "No", "t", "0", "maybe"]),
    st.sampled_from(["a@b.com", " X@Y.org", "nope@", "c@d.io"]),
    st.text(alphabet="ab ,'$%-\\{}", max_size=4),
]
_FAMILIES.append(st.one_of(*_FAMILIES))


@settings(max_examples=int(os.environ.get("PYML_SCAFFOLD_EXAMPLES", "4")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_scaffold_of_random_dirty_tables_builds_green(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Whatever mix of markers, categories, dates, amounts and junk a column holds, the
    generated model builds and every test it declares passes (a test that fails on the
    data it was generated from would be a wrong claim about that data)."""
    families = data.draw(st.lists(st.sampled_from(_FAMILIES), min_size=1, max_size=4))
    n = data.draw(st.integers(1, 15))
    rows = [(str(i), *(data.draw(st.one_of(_MESSY, f)) for f in families))
            for i in range(n)]
    rows += data.draw(st.lists(st.sampled_from(rows), max_size=2))  # duplicate rows
    # An odd column name (space, capitals) and a table that is no dbt source (read by name).
    names = ["row_id", *[f"c{j}" for j in range(len(families) - 1)], "Odd Name"]
    source = data.draw(st.booleans())
    root = _project(tmp_path_factory.mktemp("prop") / "shop", rows, names, source=source)
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    res = _scaffold(root, "raw.customers" if source else "customers")
    assert res.exit_code == 0, res.output
    _build_green(root)


def test_na_is_a_code_among_two_letter_codes_and_missing_elsewhere() -> None:
    """'NA' is Namibia in a column of country codes but "no value" in an R-written CSV: the
    profiler tells them apart, so no scaffolded model silently turns Namibia into NULL."""
    from pyml.dbt.profiling import profile_relation

    con = duckdb.connect()
    con.execute("create schema raw")
    con.execute("create table raw.t (country varchar, sex varchar, mass varchar)")
    con.executemany("insert into raw.t values (?, ?, ?)", [
        ("US", "MALE", "3750"), ("DE", "FEMALE", "NA"), ("NA", "NA", "3800"),
        ("na ", "MALE", "4050.5"), ("FR", "FEMALE", "NA"), ("N/A", "MALE", "3900")])
    cols = {p.name: p for p in profile_relation(
        con, "raw", "t", [("country", "VARCHAR"), ("sex", "VARCHAR"), ("mass", "VARCHAR")]).columns}
    assert cols["country"].markers == {"n/a": 1}
    assert {s.value: s.count for s in cols["country"].categories} == {
        "us": 1, "de": 1, "na": 2, "fr": 1}
    assert cols["sex"].markers == {"na": 1}
    assert {s.value for s in cols["sex"].categories} == {"male", "female"}
    assert cols["mass"].markers == {"na": 2}
    assert cols["mass"].stats["num"] == cols["mass"].stats["present"] == 4


@pytest.mark.slow
def test_scaffold_on_palmer_penguins_raw(tmp_path: Path) -> None:
    """A public dirty table nobody tuned the profiler for: palmerpenguins' penguins_raw, as it
    ships in the package (R's CSV: 'NA' for missing, upper-case categories, column names with
    spaces, brackets and slashes), landed as text. The scaffold builds green on the first
    `dbt build` with 'NA' -> NULL, categories folded, numbers and dates typed."""
    from importlib.resources import files

    csv = files("palmerpenguins") / "data" / "penguins-raw.csv"
    root = _project(tmp_path / "shop", [], ["x"])
    con = duckdb.connect(str(root / "shop.duckdb"))
    con.execute("drop table raw.customers")
    con.execute(f"create table raw.penguins as select * from read_csv('{csv}', all_varchar=true)")
    raw_na = con.execute("select count(*) from raw.penguins where \"Sex\" = 'NA'").fetchall()[0][0]
    con.close()
    (root / "models" / "_sources.yml").write_text(
        "version: 2\nsources:\n  - name: raw\n    schema: raw\n    tables:\n"
        "      - name: penguins\n")
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    res = _scaffold(root, "raw.penguins")
    assert res.exit_code == 0, res.output
    tests = _build_green(root)
    assert tests
    con = duckdb.connect(str(root / "shop.duckdb"))
    types = dict(con.execute("select column_name, data_type from information_schema.columns "
                             "where table_name = 'stg_raw__penguins'").fetchall())
    sexes = con.execute('select "Sex", count(*) from main.stg_raw__penguins group by all'
                        ).fetchall()
    rows = con.execute("select count(*) from main.stg_raw__penguins").fetchall()[0][0]
    con.close()
    assert rows == 344 and raw_na > 0
    assert dict(sexes) == {"male": 168, "female": 165, None: 11}
    assert types["Culmen Length (mm)"] == "DOUBLE" and types["Date Egg"] == "DATE"
    assert types["Sample Number"] == "BIGINT" and types["Delta 15 N (o/oo)"] == "DOUBLE"


_AUDITED = [
    # tweet_ref: 19-digit ids; country: codes with Namibia beside an NA-for-missing column;
    # rate: European decimals; delta: -1 beside 0; feedback_score: "fee" inside a word;
    # select: a reserved word; note: a tab-padded value.
    ("1", "1500000000000000001", "US", "NA", "3,5", "-1", "-4", "a", "k\t"),
    ("2", "1500000000000000004", "NA", "MALE", "4,25", "0", "3", "b", "k"),
    ("3", "1500000000000000007", "NA", "FEMALE", "12,0", "1", "-2", "a", "j"),
    ("4", "1500000000000000010", "DE", "MALE", "1,5", "0", "5", "b", "j"),
    ("5", "1500000000000000013", "FR", "FEMALE", "2,75", "-1", "-1", "a", "k"),
    ("6", "1500000000000000016", "DE", "NA", "3,0", "1", "2", "b", "i"),
]


def test_scaffold_keeps_what_the_audit_saw_it_change(tmp_path: Path) -> None:
    """Each of these was changed by a green build (an audit): long ids rounded through a
    double, Namibia nulled by another column's NA marker, '3,5' read as 35, -1 beside 0
    nulled as a sentinel, negatives of feedback_score dropped as amounts ("fee"), and a
    column named `select` left unquoted (the build failed). Now none is."""
    names = ["row_id", "tweet_ref", "country", "sex", "rate", "delta", "feedback_score",
             "select", "code"]
    root = _project(tmp_path / "shop", _AUDITED, names)  # type: ignore[arg-type]
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    res = _scaffold(root, "raw.customers")
    assert res.exit_code == 0, res.output
    _build_green(root)
    con = duckdb.connect(str(root / "shop.duckdb"))
    got = con.execute('select tweet_ref, country, sex, rate, delta, feedback_score, "select" '
                      "from main.stg_raw__customers order by row_id").fetchall()
    con.close()
    assert [r[0] for r in got] == [raw[1] for raw in _AUDITED]  # kept as text, exact
    assert [r[1] for r in got] == ["US", "NA", "NA", "DE", "FR", "DE"]
    assert [r[2] for r in got] == [None, "male", "female", "male", "female", None]
    assert {r[3] for r in got} == {raw[4] for raw in _AUDITED}  # text, not 35, 425, ...
    assert [r[4] for r in got] == [-1, 0, 1, 0, -1, 1]
    assert [r[5] for r in got] == [-4, 3, -2, 5, -1, 2]
    assert [r[6] for r in got] == ["a", "b", "a", "b", "a", "b"]


def test_scaffold_refuses_two_relations_of_one_model_and_an_unusable_folder(
        tmp_path: Path) -> None:
    root = _project(tmp_path / "shop", [("1", "a")], ["id", "v"], source=False)
    assert _dbt(root, "deps").success  # type: ignore[attr-defined]
    con = duckdb.connect(str(root / "shop.duckdb"))
    con.execute("create table raw.customer as select * from raw.customers")
    con.close()
    res = _scaffold(root, "raw.customers", "raw.customer")
    assert res.exit_code == 1 and "two of the relations would write" in res.output, res.output
    assert not (root / "models" / "staging").exists()
    blocker = root / "afile"
    blocker.write_text("x")
    res = _scaffold(root, "raw.customers", "--output-dir", str(blocker / "staging"))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1].startswith(
        f"Error: cannot create the output folder {blocker / 'staging'}"), res.output
