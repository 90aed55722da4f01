"""Training from disk (`--max-memory`, `--external-memory`): XGBoost external memory fed from
DuckDB batches, on the lending project (all three tasks, a string categorical, NULLs).

The external path must store the same kind of version as the in-memory one (metrics with
intervals, importance, calibration, drift snapshot), learn about as well, and score like
any other version; the memory figures themselves are measured in bench/ (not here).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import SPECS, Loans


def _metric(project: Loans, model: str, version: int, name: str) -> float:
    rows = project.sql("select value from ml.metrics where model_name = ? and version = ? "
                       "and split = 'holdout' and metric = ?", [model, version, name])
    assert rows, (model, version, name)
    return float(rows[0][0])


def test_external_memory_trains_every_task_like_the_in_memory_path(scored: Loans) -> None:
    out = scored.ok("train", "--external-memory", "--max-memory", "1GB").output
    assert out.count("to train from disk (external memory)") == len(SPECS)
    assert "train part (staged) pass" in out and "holdout pass 1" in out  # progress, rows/s
    for name in SPECS:
        rows = scored.sql("select train_rows, validation_rows, test_rows from ml.models "
                          "where model_name = ? order by version", [name])
        assert rows[0] == rows[1], name  # the same split, whichever path read it
    # About as good as in memory (quantiles come from batches, so not bit-identical).
    assert abs(_metric(scored, "default_risk", 2, "auc")
               - _metric(scored, "default_risk", 1, "auc")) < 0.03
    assert abs(_metric(scored, "grade", 2, "accuracy")
               - _metric(scored, "grade", 1, "accuracy")) < 0.05
    rmse1, rmse2 = (_metric(scored, "loss_amount", v, "rmse") for v in (1, 2))
    assert abs(rmse2 - rmse1) / rmse1 < 0.05
    # Same baselines (computed in SQL on the disk path), intervals and extras.
    for name, metric in (("default_risk", "log_loss"), ("grade", "log_loss"),
                         ("loss_amount", "rmse")):
        base = scored.sql("select version, baseline, ci_low is not null from ml.metrics "
                          "where model_name = ? and metric = ? and split = 'holdout' "
                          "order by version", [name, metric])
        assert base[0][1] == pytest.approx(base[1][1], rel=1e-9), name
        assert base[1][2], name
    for table in ("feature_importance", "calibration", "curves", "training_snapshots"):
        counts = scored.sql(f"select version, count(*) from ml.{table} where model_name = "
                            "'default_risk' group by version order by version")
        assert [v for v, _ in counts] == [1, 2] and counts[1][1] > 0, table
    shap = scored.sql("select count(*) from ml.feature_importance where model_name = "
                      "'default_risk' and version = 2 and importance_type = 'mean_abs_shap'")
    assert shap[0][0] == 4
    scored.ok("score", "--version", "2", "default_risk")
    n = scored.sql("select count(*), min(model_version) from ml.default_risk_predictions")[0]
    assert n == (3000, 2)


def test_a_budget_that_fits_keeps_training_in_memory(scored: Loans) -> None:
    out = scored.ok("train", "default_risk", "--max-memory", "1GB").output
    assert "from disk" not in out


def test_max_memory_in_the_spec_and_its_errors(loans: Loans) -> None:
    schema = (loans.dir / "models" / "schema.yml").read_text()
    line = "            exclude: [loss, grade]\n"
    loans.write_schema(schema.replace(line, line + "            max_memory: lots\n", 1))
    result = loans.pyml("train", "default_risk")
    assert result.exit_code == 1
    assert "max_memory must be a size such as 2GB or 512MB, got 'lots'" in result.output
    result = loans.pyml("train", "default_risk", "--max-memory", "100MB")
    assert result.exit_code == 1
    assert "memory budget 100MB is too small" in result.output
    loans.write_schema(schema.replace(line, line + "            max_memory: 1.5GB\n", 1))
    loans.ok("train", "default_risk")
    stored = loans.sql("select spec from ml.models where model_name = 'default_risk'")
    assert json.loads(stored[0][0])["max_memory"] == 1_500_000_000


def test_what_needs_memory_is_refused_on_disk_with_the_fix(loans: Loans) -> None:
    result = loans.pyml("tune", "default_risk", "--n-trials", "2")
    assert result.exit_code == 0, result.output  # in memory: fine
    schema = (loans.dir / "models" / "schema.yml").read_text()
    loans.write_schema(schema.replace("split: {method: random, test_fraction: 0.25, seed: 3}",
                                      "split: {method: kfold, folds: 3}"))
    result = loans.pyml("train", "loss_amount", "--external-memory")
    assert result.exit_code == 1
    assert "split.method kfold needs the training set in memory" in result.output
    assert "Traceback" not in result.output
    versions = loans.sql("select count(*) from ml.models where model_name = 'loss_amount'")
    assert versions == [(0,)]
