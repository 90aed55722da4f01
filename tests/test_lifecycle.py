"""Champion / challenger / retired: the promotion policy at train time, `pyml promote`,
`pyml rollback`, what `pyml score` uses, ml.model_events, and registries from before statuses.
"""

from __future__ import annotations

import json

import pytest

from pyml.modelling import policy
from pyml.store import lifecycle

from .conftest import SCHEMA_YML, Loans

WORSE = SCHEMA_YML.replace(
    "            exclude: [loss, grade]\n",
    "            exclude: [loss, grade]\n"
    "            num_boost_round: 1\n"
    "            params: {max_depth: 1}\n", 1)


def statuses(loans: Loans, name: str = "default_risk") -> list[tuple[int, str]]:
    return [(int(v), str(s)) for v, s in loans.sql(
        "select version, status from ml.models where model_name = ? order by version", [name])]


def events(loans: Loans, name: str = "default_risk") -> list[tuple[int, str, str | None, str]]:
    return [(int(v), str(e), f, str(t)) for v, e, f, t in loans.sql(
        "select version, event, from_status, to_status from ml.model_events "
        "where model_name = ? order by event_id", [name])]


def scored_version(loans: Loans, name: str = "default_risk") -> list[tuple[int]]:
    loans.ok("score", name)
    return loans.sql(f"select distinct model_version from ml.{name}_predictions")


def test_first_version_of_each_model_is_champion(scored: Loans) -> None:
    rows = scored.sql("select model_name, version, status, note from ml.models order by 1")
    assert rows == [("default_risk", 1, "champion", None), ("grade", 1, "champion", None),
                    ("loss_amount", 1, "champion", None)]
    ev = scored.sql("select model_name, version, event, from_status, to_status, actor, reason "
                    "from ml.model_events order by model_name")
    assert [e[:5] for e in ev] == [(n, 1, "promoted", "challenger", "champion")
                                   for n in ("default_risk", "grade", "loss_amount")]
    assert {e[5] for e in ev} == {lifecycle.actor()}
    assert {e[6] for e in ev} == {"first version of the model"}


def test_auto_promotes_a_challenger_that_is_not_worse(scored: Loans) -> None:
    scored.describe("default_risk", "Chance of default.")  # the same trees, another model
    out = scored.ok("train", "default_risk").output
    assert "-> champion: auto: holdout auc v2" in out
    assert statuses(scored) == [(1, "retired"), (2, "champion")]
    assert events(scored)[1:] == [(1, "retired", "champion", "retired"),
                                  (2, "promoted", "challenger", "champion")]
    # The champion was re-scored on the challenger's holdout rows: the same rows, so its
    # value there is its own stored holdout AUC.
    (metrics,) = scored.sql("select metrics from ml.model_events where version = 2 "
                            "and event = 'promoted' and model_name = 'default_risk'")[0]
    compared = json.loads(metrics)
    (auc1, n1), = scored.sql("select value, n_rows from ml.metrics where model_name = "
                             "'default_risk' and version = 1 and metric = 'auc' "
                             "and split = 'holdout'")
    assert compared["metric"] == "auc" and compared["n_rows"] == n1
    assert compared["champion"] == {"version": 1, "value": pytest.approx(auc1, abs=1e-12)}
    assert compared["challenger"]["version"] == 2 and compared["gain"] >= 0
    assert compared["ci95"][0] <= compared["gain"] <= compared["ci95"][1]
    assert scored_version(scored) == [(2,)]


def test_auto_keeps_the_champion_when_the_challenger_is_worse(scored: Loans) -> None:
    scored.write_schema(WORSE)
    out = scored.ok("train", "default_risk").output
    assert "-> challenger: auto: holdout auc v2 " in out and "v1 stays champion" in out
    assert statuses(scored) == [(1, "champion"), (2, "challenger")]
    assert events(scored)[-1] == (2, "rejected", None, "challenger")
    assert scored_version(scored) == [(1,)]
    scored.ok("score", "default_risk", "--version", "2")
    assert scored.sql("select distinct model_version from ml.default_risk_predictions") == [(2,)]
    lines = scored.ok("models", "default_risk").output.splitlines()
    assert [line.split()[:3] for line in lines[2:4]] == [["default_risk", "2", "challenger"],
                                                         ["default_risk", "1", "champion"]]
    # Scored by the challenger: `pyml models` says the table is not the champion's.
    assert lines[4:] == ["stale: ml.default_risk_predictions was written by v2; the champion "
                         "is v1: run `pyml score default_risk`"]


def test_min_delta_demands_a_real_gain(scored: Loans) -> None:
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            promote: {metric: log_loss, "
        "min_delta: 0.5}\n            params: {seed: 5}\n", 1))  # the seed: a new version
    out = scored.ok("train", "default_risk").output
    assert "holdout log_loss v2" in out and "needs a gain of at least 0.5" in out
    assert statuses(scored) == [(1, "champion"), (2, "challenger")]


def test_manual_policy_promote_and_rollback_by_hand(scored: Loans) -> None:
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            promote: {policy: manual}\n"
        "            params: {seed: 5}\n", 1))  # promote is read on every run: no new version
    out = scored.ok("train", "default_risk").output
    assert "-> challenger: promote.policy is manual" in out
    assert events(scored)[-1] == (2, "registered", None, "challenger")
    assert scored_version(scored) == [(1,)]

    out = scored.ok("promote", "default_risk", "--reason", "checked by hand").output
    assert out == ("default_risk: v2 is now the champion (was v1)\n"
                   "stale: ml.default_risk_predictions was written by v1; the champion is v2: "
                   "run `pyml score default_risk`\n")
    assert statuses(scored) == [(1, "retired"), (2, "champion")]
    (reason, actor), = scored.sql("select reason, actor from ml.model_events "
                                  "order by event_id desc limit 1")
    assert reason == "promoted by hand: checked by hand" and actor == lifecycle.actor()
    assert scored_version(scored) == [(2,)]

    assert scored.ok("rollback", "default_risk").output == (
        "default_risk: rolled back from v2 to v1\n"
        "stale: ml.default_risk_predictions was written by v2; the champion is v1: "
        "run `pyml score default_risk`\n")
    assert statuses(scored) == [(1, "champion"), (2, "retired")]
    assert events(scored)[-2:] == [(2, "rolled_back", "champion", "retired"),
                                   (1, "restored", "retired", "champion")]
    assert scored_version(scored) == [(1,)]

    result = scored.pyml("rollback", "default_risk")
    assert result.exit_code == 1
    assert result.output == (
        "Error: model 'default_risk' has no earlier champion to roll back to (v1 was its "
        "first champion; v2 was champion after it and has been rolled back); `pyml promote "
        "default_risk --version N` picks a version by hand\n")
    result = scored.pyml("promote", "default_risk", "--version", "1")
    assert result.output == ("Error: model 'default_risk' v1 is already the champion; "
                             "`pyml show default_risk` lists the versions\n")
    result = scored.pyml("promote", "default_risk", "--version", "9")
    assert result.output == ("Error: model 'default_risk' has no version 9: "
                             "`pyml show default_risk` lists the versions\n")
    result = scored.pyml("promote", "nope")
    assert result.output == ("Error: no pyml model named 'nope' in the project or its "
                             "registry; declared models: default_risk, grade, loss_amount\n")


def test_rollback_walks_back_through_earlier_champions(scored: Loans) -> None:
    scored.describe("default_risk", "v2")
    scored.ok("train", "default_risk")
    scored.describe("default_risk", "v3")
    scored.ok("train", "default_risk")
    assert statuses(scored) == [(1, "retired"), (2, "retired"), (3, "champion")]
    scored.ok("rollback", "default_risk")
    assert statuses(scored) == [(1, "retired"), (2, "champion"), (3, "retired")]
    scored.ok("rollback", "default_risk")
    assert statuses(scored) == [(1, "champion"), (2, "retired"), (3, "retired")]
    assert scored.pyml("rollback", "default_risk").exit_code == 1
    scored.ok("promote", "default_risk", "--version", "3")
    scored.ok("rollback", "default_risk")
    assert statuses(scored) == [(1, "champion"), (2, "retired"), (3, "retired")]
    champions = scored.sql("select model_name, count(*) from ml.models "
                           "where status = 'champion' group by 1 order by 1")
    assert champions == [("default_risk", 1), ("grade", 1), ("loss_amount", 1)]


def test_a_failing_decision_writes_nothing(scored: Loans,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> lifecycle.Decision:
        raise RuntimeError("policy exploded")

    before = (scored.sql("select model_name, version, status from ml.models order by 1, 2"),
              scored.sql("select * from ml.model_events order by event_id"),
              scored.sql("select count(*) from ml.metrics"))
    monkeypatch.setattr(policy.HoldoutPolicy, "__call__", broken)
    result = scored.pyml("train", "default_risk", "--force")
    assert isinstance(result.exception, RuntimeError)
    after = (scored.sql("select model_name, version, status from ml.models order by 1, 2"),
             scored.sql("select * from ml.model_events order by event_id"),
             scored.sql("select count(*) from ml.metrics"))
    assert after == before


def test_registry_from_before_statuses_is_migrated(scored: Loans) -> None:
    scored.describe("grade", "Loan grade.")
    scored.describe("default_risk", "Chance of default.")
    scored.ok("train", "grade")  # grade v2 (champion), v1 retired
    scored.sql("alter table ml.models drop column status")
    scored.sql("alter table ml.models drop column note")
    scored.sql("drop table ml.model_events")
    # Read-only commands see the latest version as the champion, as pyml score used it.
    lines = scored.ok("models", "grade").output.splitlines()
    assert [line.split()[:3] for line in lines[2:4]] == [["grade", "2", "champion"],
                                                         ["grade", "1", "retired"]]
    assert lines[4:] == ["stale: ml.grade_predictions was written by v1; the champion is v2: "
                         "run `pyml score grade`"]
    assert scored_version(scored, "grade") == [(2,)]
    scored.ok("train", "default_risk")  # the first write migrates every model
    assert statuses(scored, "grade") == [(1, "retired"), (2, "champion")]
    assert events(scored, "grade") == [(2, "migrated", None, "champion")]
    assert statuses(scored) == [(1, "retired"), (2, "champion")]


def test_show_prints_versions_data_and_events(scored: Loans) -> None:
    scored.write_schema(WORSE)
    scored.ok("train", "default_risk")
    out = scored.ok("show", "default_risk").output
    assert out.startswith("default_risk: Probability that a loan defaults.\n"
                          "task binary, target defaulted (BOOLEAN, classes False, True), "
                          "key loan_id\n")
    lines = out.splitlines()
    i = lines.index("versions:")
    assert lines[i + 1].split() == ["version", "status", "created_at", "train_rows",
                                    "holdout_rows", "trees", "metric", "value"]
    assert [line.split()[:2] for line in lines[i + 3:i + 5]] == [["2", "challenger"],
                                                                 ["1", "champion"]]
    assert "v1 (champion), trained " in out
    (invocation,), = scored.sql("select dbt_invocation_id from ml.models where version = 1 "
                                "and model_name = 'default_risk'")
    assert f"built by dbt invocation {invocation}" in out
    (train, valid, test), = scored.sql("select train_rows, validation_rows, test_rows from "
                                       "ml.models where version = 1 and model_name = "
                                       "'default_risk'")
    assert f"  rows: {train:,} train / {valid:,} validation / {test:,} holdout" in out
    assert "events (newest first):" in out and "v2 rejected (- -> challenger)" in out
    assert "holdout  auc" in out
    out2 = scored.ok("show", "default_risk", "--version", "2").output
    assert "v2 (challenger), trained " in out2


def test_models_refuses_a_name_it_does_not_know(scored: Loans) -> None:
    """`pyml models Churn` said "No trained models yet" with exit 0, where every other command
    refuses an unknown name (an audit)."""
    result = scored.pyml("models", "nope")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: no pyml model named 'nope' in the project or its registry; declared models: "
        "default_risk, grade, loss_amount")
    assert "default_risk" in scored.ok("models", "default_risk").output
