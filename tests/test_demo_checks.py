"""The checks on the demo: a leaky copy is refused and warned about, a drifted copy makes
`pyml drift` exit 2 naming exactly the shifted feature, and the SHAP explanations of the
churn model add up to its margin. One dbt build and one training run serve the module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest
import xgboost as xgb
from click.testing import CliRunner, Result

import pyml
from pyml.cli import cli
from pyml.data.encode import select_exprs
from pyml.dbt.package import init_project
from pyml.demo_data import LEAK_COLUMN, add_label_leak, shift_feature

REPO = Path(__file__).resolve().parents[1]
PROJECT_ITEMS = ("dbt_project.yml", "profiles.yml", "models", "macros", "seeds")
SHIFTED = "payment_amount_90d"  # cents instead of dollars: a unit change upstream


@pytest.fixture(scope="module")
def demo_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo project in a temp dir after `dbt build` (models only) and `pyml train churn`."""
    root = tmp_path_factory.mktemp("demo_checks")
    for item in PROJECT_ITEMS:
        src, dst = REPO / item, root / item
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    init_project(root)  # pyml's dbt package, as in test_demo
    db = root / "demo.duckdb"
    env = {**os.environ, "PYML_DEMO_DB": str(db)}
    # A child process, so that no dbt-duckdb handle stays open on the file we copy.
    for args in (["deps"], ["build", "--exclude-resource-type", "test", "unit_test"]):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), *args, "--quiet", "--project-dir",
             str(root), "--profiles-dir", str(root)], env=env, capture_output=True, text=True,
            check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    shutil.copy2(db, root / "built.duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYML_DEMO_DB", str(db))
        result = _pyml(root, "train", "churn")
        assert result.exit_code == 0, result.output
    return root


def _pyml(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--project-dir", str(root), "--profiles-dir",
                                    str(root)])


@pytest.fixture
def demo(demo_trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[Path, Path]]:
    """(project dir, a private copy of the trained demo database) for one test."""
    db = tmp_path / "demo.duckdb"
    shutil.copy2(demo_trained / "demo.duckdb", db)
    monkeypatch.setenv("PYML_DEMO_DB", str(db))
    yield demo_trained, db


def test_leaky_demo_is_warned_about_and_refused(demo: tuple[Path, Path]) -> None:
    root, db = demo
    with duckdb.connect(str(db)) as con:
        add_label_leak(con)
    profile = _pyml(root, "profile", "churn")
    assert profile.exit_code == 0, profile.output
    warnings = [line for line in profile.output.splitlines() if line.startswith("  - ")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"  - {LEAK_COLUMN}: alone predicts 'churned_next_90d' almost perfectly")
    train = _pyml(root, "train", "churn")
    assert train.exit_code == 1 and "Traceback" not in train.output
    error = train.output.strip().splitlines()[-1]
    assert f"feature '{LEAK_COLUMN}' alone predicts 'churned_next_90d'" in error
    assert "`allow_leakage: true`" in error
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select max(version) from ml.models where model_name = 'churn'"
                           ).fetchall() == [(1,)]  # nothing new was registered


def test_drifted_demo_exits_2_naming_only_the_shifted_feature(demo: tuple[Path, Path]
                                                                ) -> None:
    root, db = demo
    clean = _pyml(root, "drift", "churn")
    assert clean.exit_code == 0, clean.output
    with duckdb.connect(str(db)) as con:
        shift_feature(con, SHIFTED, factor=100)
    result = _pyml(root, "drift", "churn")
    assert result.exit_code == 2, result.output
    drifted = [line.split()[0] for line in result.output.splitlines()
               if line.endswith("DRIFT")]
    assert drifted == [SHIFTED]
    assert result.output.strip().splitlines()[-1].startswith(
        f"Drift above the threshold in churn: {SHIFTED} (PSI ")
    with duckdb.connect(str(db), read_only=True) as con:
        psi = dict(con.execute("select feature, value from ml.drift where metric = 'psi' "
                               "and checked_at = (select max(checked_at) from ml.drift)"
                               ).fetchall())
    assert psi[SHIFTED] > 1.0
    assert max(v for f, v in psi.items() if f != SHIFTED) < 0.2


def test_monitor_flags_the_shifted_feature_in_its_quarter(demo: tuple[Path, Path]) -> None:
    """`pyml monitor churn` (the spec's quarterly as-of windows): the unit change in the last
    quarter alone makes the shifted feature alert there, and nowhere else; exit code 2."""
    root, db = demo
    with duckdb.connect(str(db)) as con:
        [(last,)] = con.execute("select max(as_of_date) from main.customer_features").fetchall()
        con.execute(f"update main.customer_features set {SHIFTED} = {SHIFTED} * 100 "
                    "where as_of_date = ?", [last])
    result = _pyml(root, "monitor", "churn")
    assert result.exit_code == 2, result.output
    quarter = f"{last.year}-Q{(last.month - 1) // 3 + 1}"
    shifted = [line for line in result.output.splitlines()
               if line.startswith("ALERT") and f" feature {SHIFTED} " in line]
    assert shifted and all(line.split()[3] == quarter for line in shifted), shifted
    with duckdb.connect(str(db), read_only=True) as con:
        psi = dict(con.execute("select window_label, value from ml.monitoring where "
                               "feature = ? and metric = 'psi'", [SHIFTED]).fetchall())
        windows = con.execute("select count(distinct window_label) from ml.monitoring"
                              ).fetchall()[0][0]
    assert windows == len(psi) > 4 and psi[quarter] > 1.0
    assert max(v for w, v in psi.items() if w != quarter) < 0.2


def test_demo_shap_adds_up_to_the_margin(demo: tuple[Path, Path]) -> None:
    root, db = demo
    result = _pyml(root, "explain", "churn", "--top-k", "3")
    assert result.exit_code == 0, result.output
    model = pyml.load_model("churn", project_dir=root, profiles_dir=root)
    with duckdb.connect(str(db), read_only=True) as con:
        sums = con.execute(
            "select customer_id, as_of_date, sum(contribution) + any_value(other_contribution)"
            " + any_value(bias), any_value(margin), count(*) from ml.churn_explanations "
            "group by all order by all").fetchall()
        frame = con.sql("select * from main.customer_features "
                        "order by customer_id, as_of_date").df()
        inputs = con.sql(f"select {', '.join(select_exprs(model.stored.features))} from "
                         "main.customer_features order by customer_id, as_of_date"
                         ).to_arrow_table()
    assert len(sums) == len(frame) and {r[4] for r in sums} == {3}
    total = np.array([r[2] for r in sums])
    margin = np.array([r[3] for r in sums])
    np.testing.assert_allclose(total, margin, atol=1e-9)
    booster = model.stored.booster
    X = model.encoder.matrix(inputs.columns, "churn")
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    np.testing.assert_allclose(margin, booster.predict(dm, output_margin=True), atol=1e-5)
    probability = model.predict(frame)["probability"].to_numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), probability, atol=1e-5)
