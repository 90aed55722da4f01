"""`pyml export`: XGBoost JSON + model card + predict.py, used by a Python that cannot import
pyml, predicting what `pyml score` wrote.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import FEATURES, Loans

# Runs in a fresh interpreter (-I: no cwd, no PYTHON* variables) where importing pyml fails.
NO_PYML = """\
import importlib.abc, runpy, sys

class NoPyml(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyml" or name.startswith("pyml."):
            raise ImportError("pyml must not be needed")
        return None

sys.meta_path.insert(0, NoPyml())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
assert not any(m == "pyml" or m.startswith("pyml.") for m in sys.modules)
"""


def records(loans: Loans) -> list[dict[str, Any]]:
    frame = loans.df("select * from main.loan_features order by loan_id")
    return [{k: (None if v != v else v) for k, v in row.items()}  # NaN -> null
            for row in frame.astype(object).to_dict("records")]


def run_exported(folder: Path, rows: list[dict[str, Any]], tmp_path: Path
                 ) -> list[dict[str, Any]]:
    data = tmp_path / "records.json"
    data.write_text(json.dumps(rows))
    done = subprocess.run([sys.executable, "-I", "-c", NO_PYML, str(folder / "predict.py"),
                           str(data)], capture_output=True, text=True, check=False,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out: list[dict[str, Any]] = json.loads(done.stdout)
    return out


@pytest.mark.parametrize(("model", "column"), [("default_risk", "probability"),
                                               ("grade", "probability_B"),
                                               ("loss_amount", "prediction")])
def test_export_predicts_without_pyml(scored: Loans, tmp_path: Path, model: str,
                                      column: str) -> None:
    out = scored.ok("export", model, "--output", str(tmp_path / model)).output
    folder = tmp_path / model
    assert out == (f"{model} v1 -> {folder / 'model.json'}, {folder / 'model_card.json'}, "
                   f"{folder / 'predict.py'}\n")
    rows = records(scored)
    predicted = run_exported(folder, rows, tmp_path)
    expected = dict(scored.sql(f"select loan_id, {column} from ml.{model}_predictions"))
    assert len(predicted) == len(rows) == len(expected)
    assert [p["loan_id"] for p in predicted] == [r["loan_id"] for r in rows]
    worst = max(abs(p[column] - expected[p["loan_id"]]) for p in predicted)
    assert worst <= 1e-6
    labels = dict(scored.sql(f"select loan_id, prediction from ml.{model}_predictions"))
    assert all(p["prediction"] == pytest.approx(labels[p["loan_id"]], abs=1e-6)
               for p in predicted)


@pytest.mark.parametrize(("text", "message"), [
    ('{"loan_id": 1}', "records.json must be a JSON list of records (objects), got object"),
    ("[1, 2]", "record 1 must be a JSON object of field: value, got number"),
    ("[{}, ", "records.json is not valid JSON: Expecting value at line 1 column 6"),
])
def test_predict_script_refuses_what_is_not_a_list_of_records(
        scored: Loans, tmp_path: Path, text: str, message: str) -> None:
    """One line naming the problem, exit 1, no traceback (an audit got AttributeError
    tracebacks), as `pyml serve` answers the same bodies."""
    folder = tmp_path / "export"
    scored.ok("export", "default_risk", "--output", str(folder))
    (tmp_path / "records.json").write_text(text)
    done = subprocess.run([sys.executable, "-I", "-c", NO_PYML, str(folder / "predict.py"),
                           "records.json"], capture_output=True, text=True, check=False,
                          cwd=tmp_path)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (1, f"predict.py: {message}",
                                                                   "")


def test_model_card_describes_inputs_and_outputs(scored: Loans, tmp_path: Path) -> None:
    scored.ok("export", "default_risk", "-o", str(tmp_path / "x"))
    card = json.loads((tmp_path / "x" / "model_card.json").read_text())
    booster = (tmp_path / "x" / "model.json").read_bytes()
    assert card["format"] == "pyml-model-card/1"
    assert (card["model"], card["version"], card["status"], card["task"]) == (
        "default_risk", 1, "champion", "binary")
    assert card["target"] == {"column": "defaulted", "type": "BOOLEAN",
                              "classes": [False, True]}
    assert card["threshold"] == 0.5 and card["key"] == ["loan_id"]
    assert [f["name"] for f in card["features"]] == list(FEATURES)
    region = card["features"][0]
    assert region["kind"] == "categorical" and region["categories"] == [
        "east", "north", "south", "west"]
    assert {"row", "numeric", "categorical", "missing"} <= set(card["encoding"])
    holdout = {m["metric"]: m["value"] for m in card["metrics"] if m["split"] == "holdout"}
    (auc,), = scored.sql("select value from ml.metrics where model_name = 'default_risk' and "
                         "metric = 'auc' and split = 'holdout'")
    assert holdout["auc"] == auc
    assert card["booster_sha256"] == hashlib.sha256(booster).hexdigest()
    assert json.loads(booster)["learner"]["objective"]["name"] == "binary:logistic"
    assert card["spec"]["target"] == "defaulted"
    assert card["training"]["rows"]["holdout"] > 0


def test_export_a_given_version(scored: Loans, tmp_path: Path) -> None:
    scored.describe("grade", "Loan grade.")  # the same trees, another model: promoted
    scored.ok("train", "grade")
    scored.ok("export", "grade", "--version", "1", "-o", str(tmp_path / "g"))
    card = json.loads((tmp_path / "g" / "model_card.json").read_text())
    assert (card["version"], card["status"]) == (1, "retired")


def test_export_errors(scored: Loans, tmp_path: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    result = scored.pyml("export", "grade", "-o", str(afile))
    assert result.output == (f"Error: output folder {afile} is a file; give a folder to write the "
                             "model into\n")
    missing = tmp_path / "no" / "such"
    result = scored.pyml("export", "grade", "-o", str(missing))
    assert result.output == (f"Error: output folder {missing}: folder {missing.parent} does not "
                             "exist\n")
    result = scored.pyml("export", "grade", "--version", "4", "-o", str(tmp_path / "g"))
    assert result.output == ("Error: model 'grade' has no version 4: `pyml models` lists the "
                             "versions\n")


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs"),
                                            blacklist_characters="[]<,"),
                               min_size=1, max_size=6), min_size=2, max_size=2, unique=True),
       categorical=st.booleans())
def test_exported_booster_is_strict_json_whatever_the_feature_names(
        names: list[str], categorical: bool) -> None:
    """XGBoost writes feature names into its JSON unescaped (`a\\u` breaks every other JSON
    parser); the exported model.json parses as JSON, names and all, and XGBoost reads it back
    predicting bit for bit what the booster predicts."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from pyml.export import booster_json

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({names[0]: rng.random(60), names[1]: rng.integers(0, 3, 60)})
    if categorical:
        frame[names[1]] = frame[names[1]].astype("category")
    data = xgb.DMatrix(frame, label=frame[names[0]] > 0.5, enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, data, 3)
    text = booster_json(booster)
    doc = json.loads(text)
    assert doc["learner"]["feature_names"] == names
    again = xgb.Booster(model_file=bytearray(text))
    assert again.feature_names == names and again.feature_types == booster.feature_types
    assert (again.predict(data) == booster.predict(data)).all()
