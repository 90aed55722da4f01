"""`pyml serve ?explain=K` and `pyml explain --top-k K` explain a row the same way: the same
class (multiclass: the predicted class), the same K features in the same order, the same
contributions and bias (pyml.modelling.shap.top_contributions for both).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from pyml.serve.app import create_app

from .conftest import Loans

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ROWS = 300


def _records(loans: Loans) -> list[dict[str, Any]]:
    frame = loans.df(f"select * from main.loan_features order by loan_id limit {ROWS}")
    return [{k: (None if v != v else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


@pytest.mark.parametrize("model", ["grade", "default_risk", "loss_amount"])
def test_serve_and_explain_give_the_same_top_k(scored: Loans, model: str) -> None:
    scored.ok("explain", model, "--top-k", "2")
    multiclass = model == "grade"
    table = scored.df(
        f"select loan_id, rank, feature, contribution, bias"
        f"{', class as explained' if multiclass else ''} from ml.{model}_explanations "
        f"where loan_id <= {ROWS} order by loan_id, rank")
    written: dict[int, list[Any]] = {}
    for row in table.itertuples(index=False):
        written.setdefault(int(row.loan_id), []).append(row)
    records = _records(scored)
    with TestClient(create_app(scored.db, poll_seconds=3600)) as client:
        response = client.post(f"/models/{model}/predict?explain=2", json=records)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == len(written) == ROWS
    for p in predictions:
        rows = written[p["loan_id"]]
        served = p["explanation"]
        assert [c["feature"] for c in served["contributions"]] == [r.feature for r in rows]
        assert [c["contribution"] for c in served["contributions"]] == [
            r.contribution for r in rows]
        assert {r.bias for r in rows} == {served["bias"]}
        if multiclass:  # both explain the class that is predicted
            assert {r.explained for r in rows} == {p["prediction"]}
