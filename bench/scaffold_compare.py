"""How much of the demo's hand-written staging cleansing `pyml scaffold` finds by itself.

    python -m bench.scaffold_compare [--keep DIR]

In a scratch copy of the demo project (its seeds, macros and hand-written staging models), it
runs `dbt seed`, `pyml scaffold` on the six raw tables, and `dbt build` of both the hand-written
and the scaffolded staging models. Then, per table:

- **rules**: each hand-written column is a rule set — its type (integer id, timestamp, date,
  category, amount, email, boolean, text), each bound of its value range (lower, upper), and an
  `is_<column>_invalid` flag where it keeps one. A rule is *found* when the scaffolded model
  applies the same kind of cleaning to the same raw column (read from the models' SQL).
- **values**: per category, integer, amount and boolean column, the distinct cleaned values of
  both built tables (case-folded: upper- or lower-case codes are a style choice). *Precision* is the
  share of the scaffold's values that the hand model also produces (below 1: the scaffold keeps
  values the hand model cleans away); *recall* the share of the hand model's values the scaffold
  produces too.
- **rows** kept by each model, and whether the scaffold's own tests passed on the first build.

The hand models also keep the newest version of each key (a business rule no profile can
infer); that is reported, not counted as a miss of the column rules. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
TABLES = ["customers", "payments", "plans", "subscriptions", "support_tickets", "usage_events"]
MACRO = re.compile(r"pyml\.(\w+)\('(\w+)'")


@dataclass
class Column:
    """One output column of a staging model's `cleaned` CTE."""

    raw: str
    alias: str
    kind: str
    bounds: set[str]  # 'min' and/or 'max': the range the cleaning enforces


@dataclass
class Model:
    columns: dict[str, Column] = field(default_factory=dict)  # by raw column
    flags: set[str] = field(default_factory=set)  # raw columns with an is_..._invalid flag
    keeps_latest: bool = False


def kind_of(expr: str) -> str:
    """The kind of cleaning an expression applies, from the macros it calls."""
    if re.search(r"'(bigint|integer)'\)|as integer\)", expr):
        return "integer"
    for macro, kind in [("parse_timestamp", "timestamp"), ("parse_date", "date"),
                        ("clean_category", "category"), ("clean_email", "email"),
                        ("clean_boolean", "boolean"), ("clean_amount", "amount"),
                        ("clean_text", "text")]:
        if f"pyml.{macro}(" in expr:
            return kind
    return "none"


def read_model(path: Path) -> Model:
    """The columns, flags and key rule of a staging model, from its SQL."""
    sql = path.read_text()
    body = sql.split("cleaned as (", 1)[1].split("\n),", 1)[0]
    # one output expression per `... as alias` (an expression may wrap onto the next line)
    exprs = re.findall(r"(\{\{.*?\}\}.*?|cast\(\{\{.*?\}\} as \w+\))\s+as\s+(\w+)", body, re.S)
    model = Model(keeps_latest="partition by" in sql)
    for expr, alias in exprs:
        calls = MACRO.findall(expr)
        if not calls:
            continue
        raw = calls[-1][1] if calls[0][0] != "is_invalid_flag" else calls[0][1]
        if calls[0][0] == "is_invalid_flag":
            model.flags.add(raw)
            continue
        bounds = {b for b in ("min", "max") if f"{b}_value=" in expr}
        model.columns[raw] = Column(raw, alias, kind_of(expr), bounds)
    return model


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> int:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.returncode


def distinct(con: duckdb.DuckDBPyConnection, table: str, column: str) -> set[str]:
    rows = con.execute(f'select distinct lower(cast("{column}" as varchar)) from {table} '
                       f'where "{column}" is not null').fetchall()
    return {r[0] for r in rows}


def mean(xs: list[float]) -> str:
    return f"{sum(xs) / len(xs):.2f}" if xs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="pyml-scaffold-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ["dbt_project.yml", "profiles.yml"]:
        shutil.copy(REPO / name, work / name)
    for folder in ["macros", "seeds"]:
        shutil.copytree(REPO / folder, work / folder, dirs_exist_ok=True)
    shutil.copytree(REPO / "models" / "staging", work / "models" / "staging", dirs_exist_ok=True)
    (work / "packages.yml").write_text(
        f"packages:\n  - local: {REPO / 'pyml' / 'dbt_package'}\n")
    env = {**os.environ, "PYML_DEMO_DB": str(work / "demo.duckdb"),
           "DBT_PROFILES_DIR": str(work), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    bin_dir = Path(sys.executable).parent
    dbt, pyml = str(bin_dir / "dbt"), str(bin_dir / "pyml")
    run([dbt, "deps", "--quiet"], work, env)
    run([dbt, "seed", "--quiet"], work, env)
    run([pyml, "scaffold", *[f"raw.raw_{t}" for t in TABLES], "--output-dir",
         "models/scaffolded", "--force"], work, env)
    run([dbt, "build", "--quiet", "--select", "staging", "scaffolded"], work, env, check=False)
    results = json.loads((work / "target" / "run_results.json").read_text())["results"]

    print("| raw table | hand rules | found | types | range bounds | flags | value precision "
          "| value recall | rows hand / scaffold | scaffold tests passed "
          "| hand keeps newest per key |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    total = found_total = 0
    con = duckdb.connect(str(work / "demo.duckdb"), read_only=True)
    for table in TABLES:
        hand = read_model(work / "models" / "staging" / f"stg_app__{table}.sql")
        scaf_name = f"stg_raw__raw_{table}"
        scaf = read_model(work / "models" / "scaffolded" / f"{scaf_name}.sql")
        types = ranges = flags = 0
        n_types = len(hand.columns)
        n_ranges = sum(len(c.bounds) for c in hand.columns.values())
        precision: list[float] = []
        recall: list[float] = []
        for raw, col in hand.columns.items():
            other = scaf.columns.get(raw)
            types += other is not None and other.kind == col.kind
            ranges += len(col.bounds & other.bounds) if other is not None else 0
            if other is not None and col.kind in {"category", "integer", "amount", "boolean"}:
                h = distinct(con, f"main.stg_app__{table}", col.alias)
                s = distinct(con, f"main.{scaf_name}", other.alias)
                if s:
                    precision.append(len(h & s) / len(s))
                if h:
                    recall.append(len(h & s) / len(h))
        flags = len(hand.flags & scaf.flags)
        rules = n_types + n_ranges + len(hand.flags)
        found = types + ranges + flags
        total += rules
        found_total += found
        rows_h = con.execute(f"select count(*) from main.stg_app__{table}").fetchall()[0][0]
        rows_s = con.execute(f"select count(*) from main.{scaf_name}").fetchall()[0][0]
        tests = [r for r in results
                 if scaf_name in r["unique_id"] and r["unique_id"].startswith("test.")]
        passed = sum(r["status"] == "pass" for r in tests)
        print(f"| raw_{table} | {rules} | {found} | {types}/{n_types} | {ranges}/{n_ranges} "
              f"| {flags}/{len(hand.flags)} | {mean(precision)} | {mean(recall)} "
              f"| {rows_h:,} / {rows_s:,} | {passed}/{len(tests)} "
              f"| {'yes' if hand.keeps_latest else 'no'} |")
    con.close()
    print(f"\nrules found: {found_total} of {total} ({found_total / total:.0%})")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
