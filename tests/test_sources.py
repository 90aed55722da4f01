"""`pyml sources`: every ml table declared as a dbt source with the descriptions pyml stores as
COMMENTs, key tests that hold (and pass before the tables exist), and `dbt docs generate`
showing them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pyml.dbt.package import init_project
from pyml.store.schema import TABLES
from pyml.verbs.sources import MARKER

from .conftest import Loans, dbt
from .support import error_line

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def _declared(path: Path) -> dict[str, dict]:
    (source,) = yaml.safe_load(path.read_text())["sources"]
    assert source["name"] == source["schema"] == "ml"
    return {t["name"]: t for t in source["tables"]}


def test_sources_declare_and_describe_every_ml_table(loans: Loans) -> None:
    init_project(loans.dir)
    dbt(loans.dir, "deps")
    path = loans.dir / "models" / "ml" / "_ml__sources.yml"
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk")
    loans.ok("explain", "default_risk")
    loans.ok("profile", "default_risk")
    path.parent.mkdir()
    path.write_text(f"{MARKER} earlier\n")
    loans.ok("sources")  # its own file: replaced without --force
    tables = _declared(path)
    in_db = {t for (t,) in loans.sql("select table_name from duckdb_tables() "
                                     "where schema_name = 'ml'")}
    assert in_db <= set(tables)
    assert {"default_risk_explanations", "profile_loan_features"} <= set(tables)
    comments = dict(((t, c), text) for t, c, text in loans.sql(
        "select table_name, column_name, comment from duckdb_columns() "
        "where schema_name = 'ml'"))
    for name, table in tables.items():
        assert table["description"], name
        for column in table["columns"]:
            assert column["description"], (name, column["name"])
            if name in in_db:  # the YAML says what the COMMENT says: one source of text
                assert comments[name, column["name"]] == column["description"]
        if name in in_db:
            assert [c["name"] for c in table["columns"]] == [
                c for (t, c) in comments if t == name]
    pred = tables["default_risk_predictions"]
    assert pred["config"]["loaded_at_field"] == "scored_at"
    assert "pyml.predictions_current_champion" in pred["data_tests"]
    assert {"pyml.key_is_unique": {"arguments": {"columns": ["loan_id", "rank"]}}} in tables[
        "default_risk_explanations"]["data_tests"]
    assert "data_tests" not in tables["drift"]  # no key: one set of rows per check

    # The declared keys hold on every written table (what pyml.key_is_unique checks in
    # `dbt build`; test_demo runs it on the demo's predictions).
    for name, table in tables.items():
        tests = [t for t in table.get("data_tests", []) if isinstance(t, dict)]
        if name in in_db and tests:
            key = ", ".join(tests[0]["pyml.key_is_unique"]["arguments"]["columns"])
            assert loans.sql(f"select count(*) = count(distinct ({key})) from ml.{name} "
                             f"where ({key}) is not null") == [(True,)], name
    dbt(loans.dir, "docs", "generate")  # lists every table, described
    manifest = json.loads((loans.dir / "target" / "manifest.json").read_text())
    catalog = json.loads((loans.dir / "target" / "catalog.json").read_text())
    docs = {s["name"]: s for s in manifest["sources"].values() if s["source_name"] == "ml"}
    assert set(docs) == set(tables)
    assert all(s["description"] and all(c["description"] for c in s["columns"].values())
               for s in docs.values())
    assert {s["metadata"]["name"] for s in catalog["sources"].values()} == in_db


def test_sources_keep_a_hand_written_file(loans: Loans) -> None:
    path = loans.dir / "models" / "_ml__sources.yml"
    path.write_text("version: 2\n")
    result = loans.pyml("sources", "--output", str(path))
    assert error_line(result.output, result.exit_code) == (
        f"{path} exists and was not written by `pyml sources`: move it, or pass "
        "--force to replace it")
    assert path.read_text() == "version: 2\n"
    loans.ok("sources", "--output", str(path), "--force")
    assert path.read_text().startswith(MARKER)
    # Before any pyml command: the registry and the predictions are declared (their key
    # tests pass on tables that do not exist yet, a fresh clone's `dbt build`: test_demo's
    # fixture builds the demo with its committed file), with the columns every task writes.
    tables = _declared(path)
    assert set(tables) == {t.name for t in TABLES} | {
        "default_risk_predictions", "loss_amount_predictions", "grade_predictions"}
    pred = tables["grade_predictions"]
    assert [c["name"] for c in pred["columns"]] == ["loan_id", "model_version", "scored_at"]
    assert "data_tests" not in pred  # pyml's dbt package is not installed here


def test_docs_tables_md_names_every_registry_table_and_column() -> None:
    # docs/tables.md is prose for people; pyml.store.schema holds the COMMENTs. A table or
    # column added to one must reach the other.
    text = DOCS.read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    for table in TABLES:
        section = next((s for s in sections if s.startswith(f"`ml.{table.name}`")), None)
        assert section is not None, f"docs/tables.md has no section for ml.{table.name}"
        missing = [c.name for c in table.columns if f"`{c.name}`" not in section]
        assert not missing, f"docs/tables.md, ml.{table.name}: no word on {missing}"


def test_select_prints_only_pyml_output_on_stdout(scored: Loans) -> None:
    # `dbt ls` (behind --select) printed its JSON rows ({"unique_id": ...}) on stdout.
    result = scored.ok("train", "-s", "loan_features")
    assert "unchanged since v1" in result.output
    assert "unique_id" not in result.output


def test_sources_repair_a_file_that_misses_what_a_model_reads(scored: Loans) -> None:
    # A mart written on the predictions before `pyml sources` declared them: dbt cannot
    # parse the project, and `pyml sources` (the fix) needs a parsed project. It declares
    # what dbt asks for to parse it, then writes the real file.
    path = scored.dir / "models" / "ml" / "_ml__sources.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = f"{MARKER}\nversion: 2\nsources:\n  - name: ml\n    tables:\n      - name: models\n"
    path.write_text(stale)
    mart = scored.dir / "models" / "risky_loans.sql"
    mart.write_text("select loan_id from {{ source('ml', 'default_risk_predictions') }} "
                    "where prediction\n")
    before = scored.pyml("models")
    assert "depends on a source named 'ml.default_risk_predictions'" in error_line(
        before.output, before.exit_code)
    result = scored.ok("sources")
    assert "declaring them to parse it" in result.output
    assert "default_risk_predictions" in _declared(path)
    dbt(scored.dir, "parse")
    # An error after the stub was written (a hand-written file kept without --force is
    # refused before; a locked database fails later): the file is put back as it was.
    path.write_text(stale)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(120)", str(scored.db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locked = scored.pyml("sources", "--lock-timeout", "0")
    finally:
        holder.kill()
        holder.wait()
    assert "is locked by another process" in error_line(locked.output, locked.exit_code)
    assert path.read_text() == stale
