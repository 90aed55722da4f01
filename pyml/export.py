"""One version, described: `pyml show` (text) and `pyml export` (XGBoost JSON + a model card).

The exported folder needs nothing of pyml: `model.json` is the booster in XGBoost's JSON
format, `model_card.json` says how to turn a record into the booster's input row (feature
order, category codes, float32, missing values) and how to read its output, and `predict.py`
does exactly that with numpy and xgboost alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pyml.data.encode import ENCODING, booster_feature_names, input_plan
from pyml.data.records import portable_source
from pyml.errors import OutputError
from pyml.files import replacing
from pyml.modelling.model import check_outputs
from pyml.store.lifecycle import Event
from pyml.store.registry import StoredModel, VersionRow, load_version

if TYPE_CHECKING:
    import xgboost as xgb
    from pyspark.sql import SparkSession

CARD_FORMAT = "pyml-model-card/1"
BOOSTER_FILE = "model.json"
CARD_FILE = "model_card.json"
SCRIPT_FILE = "predict.py"


def version_info(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None
                 ) -> dict[str, Any]:
    """Everything the registry holds about one version (the champion by default)."""
    from pyml.store import evaluation
    from pyml.store.final_fit import final_fit_row
    from pyml.store.lifecycle import events, statuses
    from pyml.store.registry import list_versions

    stored = load_version(con, name, version)
    row = evaluation.model_row(con, name, stored.version)
    row["final_fit"] = final_fit_row(con, name, stored.version)
    return _info(stored, row,
                 evaluation.metrics(con, name, stored.version), statuses(con),
                 list_versions(con, [name]), events(con, name))


def spark_version_info(spark: SparkSession, name: str, version: int | None = None
                       ) -> dict[str, Any]:
    """version_info on a Spark target: the same dict, read from the Spark registry."""
    from pyml.store import spark_info, spark_registry

    stored = spark_registry.load_version(spark, name, version)
    return _info(stored, spark_info.model_row(spark, name, stored.version),
                 spark_info.metrics(spark, name, stored.version),
                 spark_registry.statuses(spark, name),
                 spark_registry.list_versions(spark, [name]), spark_info.events(spark, name))


def _info(stored: StoredModel, row: dict[str, Any], metrics: list[dict[str, Any]],
          all_status: dict[tuple[str, int], str], versions: Sequence[VersionRow],
          events: Sequence[Event]) -> dict[str, Any]:
    name = stored.name
    return {
        "stored": stored, "row": row, "metrics": metrics,
        "status": all_status.get((name, stored.version), "champion"),
        "versions": [{"version": v.version, "status": all_status.get((name, v.version), ""),
                      "created_at": v.created_at, "train_rows": v.train_rows,
                      "holdout_rows": v.test_rows, "trees": v.num_trees, "metric": v.metric,
                      "value": v.value, "note": v.note}
                     for v in versions],
        "events": list(events),
    }


def render_show(info: dict[str, Any]) -> str:
    """The text of `pyml show`."""
    from pyml.report.text import text_table

    stored, row = info["stored"], info["row"]
    split = row.get("split") or {}
    lines = [f"{stored.name}: {row.get('description') or '(no description)'}",
             f"task {stored.task}, target {row['target']} ({row['target_type']}"
             + (f", classes {', '.join(map(str, stored.target.classes))}"
                if stored.target.classes else "") + f"), key {', '.join(stored.key)}", "",
             "versions:",
             text_table(["version", "status", "created_at", "train_rows", "holdout_rows",
                         "trees", "metric", "value"],
                        [[v["version"], v["status"], v["created_at"], v["train_rows"],
                          v["holdout_rows"], v["trees"], v["metric"], v["value"]]
                         for v in info["versions"]]), "",
             f"v{stored.version} ({info['status']}), trained {row['created_at']} with pyml "
             f"{row['pyml_version']} / xgboost {row['xgboost_version']}:",
             f"  data: {row['feature_relation']} (dbt {row['feature_model']}), built by dbt "
             f"invocation {row.get('dbt_invocation_id') or 'unknown (no run_results.json)'}",
             f"  rows: {row['train_rows']:,} train / {row['validation_rows']:,} validation / "
             f"{row['test_rows']:,} holdout; {row['dropped_null_target_rows']:,} with NULL "
             f"target skipped",
             "  split: " + ", ".join(f"{k} {v}" for k, v in sorted(split.items())
                                     if not k.endswith("_rows")),
             f"  trees: {row['num_trees']} (best iteration {row['best_iteration']})",
             "  params: " + json.dumps(row.get("params"), sort_keys=True)]
    if row.get("note"):
        lines.append(f"  note: {row['note']}")
    if row.get("final_fit"):
        final = row["final_fit"]
        lines.append(f"  scores with: {final.get('scores_with')}; metrics: "
                     f"{final.get('metrics_from')}")
    known = ["ci_low", "ci_high"]  # the interval first, then any other column, by name
    rest = {k for m in info["metrics"] for k in m} - {"split", "metric", "value", "baseline",
                                                      "n_rows"}
    extra = [k for k in known if k in rest] + sorted(rest - set(known))
    lines += ["", "metrics:",
              text_table(["split", "metric", "value", "baseline", "n_rows", *extra],
                         [[m["split"], m["metric"], m["value"], m["baseline"], m["n_rows"],
                           *[m.get(k) for k in extra]] for m in info["metrics"]])]
    if info["events"]:
        lines += ["", "events (newest first):"]
        for e in info["events"]:
            lines.append(f"  {e.event_at}  v{e.version} {e.event} "
                         f"({e.from_status or '-'} -> {e.to_status or '-'}) by "
                         f"{e.actor}: {e.reason}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    """What `pyml export` wrote."""

    name: str  # model name
    version: int  # exported version
    files: tuple[Path, ...]  # booster, card, script


def model_card(info: dict[str, Any], booster_sha256: str) -> dict[str, Any]:
    """The JSON model card of a version."""
    stored, row = info["stored"], info["row"]
    names = booster_feature_names(stored.features)
    spec = row.get("spec") or {}
    outputs: dict[str, str] = {}
    if stored.task == "binary":
        outputs = {"raw": "probability of classes[1] (the positive class)",
                   "prediction": "classes[1] if probability >= threshold else classes[0]"}
    elif stored.task == "multiclass":
        outputs = {"raw": "one probability per class, in the order of classes",
                   "prediction": "the class with the highest probability"}
    else:
        outputs = {"raw": "the predicted value", "prediction": "the raw value"}
    return {
        "format": CARD_FORMAT,
        "model": stored.name, "version": stored.version, "status": info["status"],
        "description": row.get("description") or "",
        "created_at": str(row["created_at"]),
        "task": stored.task, "objective": row["objective"],
        "target": {"column": row["target"], "type": row["target_type"],
                   "classes": list(stored.target.classes)},
        "threshold": stored.threshold if stored.task == "binary" else None,
        "key": list(stored.key),
        "features": [{"name": f.name, "booster_name": b, "kind": f.kind, "dtype": f.dtype,
                      "categories": list(f.categories)}
                     for f, b in zip(stored.features, names, strict=True)],
        "plan": [rule.to_dict() for rule in input_plan(stored.features)],
        "encoding": ENCODING, "outputs": outputs,
        "metrics": [{k: v for k, v in m.items()} for m in info["metrics"]],
        "training": {"feature_model": row["feature_model"],
                     "feature_relation": row["feature_relation"],
                     "dbt_invocation_id": row.get("dbt_invocation_id"),
                     "rows": {"train": row["train_rows"], "validation": row["validation_rows"],
                              "holdout": row["test_rows"],
                              "null_target_skipped": row["dropped_null_target_rows"]},
                     "split": row.get("split"), "params": row.get("params"),
                     "num_trees": row["num_trees"], "best_iteration": row["best_iteration"],
                     "note": row.get("note"), "final_fit": row.get("final_fit")},
        "spec": spec,
        "versions": {"pyml": row["pyml_version"], "xgboost": row["xgboost_version"]},
        "booster_file": BOOSTER_FILE, "booster_sha256": booster_sha256,
    }


def _write(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def export(con: duckdb.DuckDBPyConnection, name: str, version: int | None, output: Path
           ) -> ExportResult:
    """Write booster (XGBoost JSON), model card and predict.py into the folder `output`."""
    out = check_folder(output)
    return write_export(version_info(con, name, version), out)


def check_folder(output: Path) -> Path:
    """The resolved output folder, refused before anything is read when it cannot be one."""
    out = output.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out} is a file; give a folder to write the model "
                          "into")
    if not out.parent.is_dir():
        raise OutputError(f"output folder {out}: folder {out.parent} does not exist")
    return out


def booster_json(booster: xgb.Booster) -> bytes:
    """The booster in XGBoost's JSON format, as strict JSON whatever its feature names hold.

    XGBoost writes feature names into its JSON unescaped, so a name with a backslash (`a\\u`)
    makes the file unreadable to any JSON parser but XGBoost's own. The names are written by
    `json.dumps` instead (XGBoost reads the escapes back); every number is XGBoost's own text.
    """
    names = booster.feature_names
    if names is None or any(ch < " " or ch == "\x7f" for n in names for ch in n):
        return bytes(booster.save_raw("json"))  # pyml never names a feature so (encode.py)
    unnamed = booster.copy()
    unnamed.feature_names = None
    text = bytes(unnamed.save_raw("json")).decode()
    empty = '"feature_names":[]'
    assert text.count(empty) == 1, "XGBoost's JSON layout changed: feature_names not found"
    named = '"feature_names":' + json.dumps(list(names), ensure_ascii=False)
    return text.replace(empty, named).encode()


def write_export(info: dict[str, Any], out: Path) -> ExportResult:
    """Write one version (`version_info` of either engine) into the checked folder `out`."""
    check_outputs(info["stored"], ())  # predict.py answers with the keys and predictions
    booster = booster_json(info["stored"].booster)
    card = model_card(info, hashlib.sha256(booster).hexdigest())
    try:
        out.mkdir(exist_ok=True)
        files = (out / BOOSTER_FILE, out / CARD_FILE, out / SCRIPT_FILE)
        _write(files[0], booster)
        _write(files[1], json.dumps(card, indent=2, default=str).encode())
        _write(files[2], predict_script().encode())
    except OSError as e:
        raise OutputError(f"cannot write into {out}: {e.strerror}") from e
    return ExportResult(info["stored"].name, info["stored"].version, files)


def predict_script() -> str:
    """predict.py: pyml's own record encoder (pyml.data.records, copied) and the outputs."""
    return PREDICT_HEAD + portable_source() + PREDICT_TAIL


PREDICT_HEAD = '''\
"""Predict with a model exported by `pyml export`, using only numpy and xgboost.

    python predict.py records.json > predictions.json

records.json is a JSON list of objects with the feature fields by name (a missing field or
null is a missing value). Each output object holds the key fields present, `prediction`,
and for classifiers `probability` (and `probability_<class>` for multiclass): the values
`pyml score` writes for the same rows. A record the model cannot read (a string where a
number belongs, a number beyond float32) stops the script with the record and field named.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb


'''

PREDICT_TAIL = '''

def load(folder):
    """(card, booster) from an export folder."""
    folder = Path(folder)
    card = json.loads((folder / "model_card.json").read_text())
    booster = xgb.Booster(model_file=str(folder / card["booster_file"]))
    return card, booster


def encode(card, records):
    """The float32 input matrix: card["plan"] by the rules of card["encoding"]."""
    return encode_rows(prepare(card["plan"]), records)


def predict(card, booster, records):
    """One output object per record, in input order."""
    raw = np.asarray(booster.inplace_predict(encode(card, records)), dtype=np.float64)
    classes = card["target"]["classes"]
    out = []
    for i, record in enumerate(records):
        row = {k: record[k] for k in card["key"] if k in record}
        if card["task"] == "regression":
            row["prediction"] = float(raw[i])
        elif card["task"] == "binary":
            p = float(raw[i])
            row["prediction"] = classes[1] if p >= card["threshold"] else classes[0]
            row["probability"] = p
        else:
            k = int(raw[i].argmax())
            row["prediction"] = classes[k]
            row["probability"] = float(raw[i][k])
            for c, p in zip(classes, raw[i]):
                row[f"probability_{c}"] = float(p)
        out.append(row)
    return out


if __name__ == "__main__":
    card, booster = load(Path(__file__).resolve().parent)
    source = sys.argv[1] if len(sys.argv) > 1 else "standard input"
    try:
        text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else sys.stdin.read()
        records = check_records(json.loads(text), what=source)
        predictions = predict(card, booster, records)
    except json.JSONDecodeError as e:
        sys.exit(f"predict.py: {source} is not valid JSON: {e.msg} at line {e.lineno} "
                 f"column {e.colno}")
    except OSError as e:
        sys.exit(f"predict.py: cannot read {source}: {e.strerror}")
    except RecordError as e:
        sys.exit(f"predict.py: {e}")
    json.dump(predictions, sys.stdout)
'''
