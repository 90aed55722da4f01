"""A YAML spec edited after training: what differs from the version that scores, in one line.

A version is immutable: it scores with what it was trained with (task, target, key,
features, threshold, positive class, and the parameters and split that made its trees). A
YAML edit takes effect at the next `pyml train`. `pyml score`, `pyml explain` and `pyml sql`
read the YAML too (for the relation and the batch size), so without a word a user who lowered
`threshold` and re-scored would believe the new threshold applied. They print this notice
instead (docs/spec.md, "Editing a spec after training").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyml.dbt.spec import ModelSpec

# Spec keys fixed at training, in the order the notice names them. The others (description,
# score, tune, promote, allow_leakage, drift_threshold, max_memory) and where the feature
# relation lives (schema, relation: another dbt target) are read from the YAML on every run.
TRAINED_KEYS = ("task", "target", "key", "features", "exclude", "positive_class", "threshold",
                "split", "params", "num_boost_round", "early_stopping_rounds")


def _plain(value: Any) -> Any:
    """JSON's view of a value, as the registry stores it (tuples are lists)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def spec_changes(current: ModelSpec, stored: Mapping[str, Any],
                 classes: Sequence[Any] = ()) -> list[tuple[str, Any, Any]]:
    """(key, YAML value, stored value) for each trained key that differs; keys the stored
    spec lacks (an older release) are not compared. `classes`: the version's (a binary
    model's positive class last), so a positive_class written another way that names the
    same class (left out: the larger label; `1` for `true`) is no change."""
    now = _plain(current.to_dict())
    return [(key, now.get(key), stored[key]) for key in TRAINED_KEYS
            if key in stored and _same(key, now.get(key)) != _same(key, _plain(stored[key]))
            and not (key == "positive_class" and _same_positive(now.get(key), classes))]


def _same_positive(given: Any, classes: Sequence[Any]) -> bool:
    """Whether the YAML's positive_class picks the class the version has as its positive."""
    if len(classes) != 2:
        return False
    picked = (max(classes) if given is None
              else next((c for c in classes if c == given), None))
    return picked is not None and picked == classes[-1]


def _same(key: str, value: Any) -> Any:
    """What of a value matters: `exclude` is a set (features keep their order)."""
    return sorted(map(str, value)) if key == "exclude" and isinstance(value, list) else value


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def yaml_notice(current: ModelSpec, version: int, stored: Mapping[str, Any],
                classes: Sequence[Any] = ()) -> str | None:
    """One line saying how the YAML differs from the version that scores, or None.

    e.g. "churn: the YAML's threshold 0.05 differs from v3's 0.5; v3 scores with 0.5 — run
    `pyml train churn` to use the new value"
    """
    changes = spec_changes(current, stored, classes)
    if not changes:
        return None
    name, v = current.name, f"v{version}"
    if len(changes) == 1:
        key, now, then = changes[0]
        return (f"{name}: the YAML's {key} {_show(now)} differs from {v}'s {_show(then)}; "
                f"{v} scores with {_show(then)} — run `pyml train {name}` to use the new "
                "value")
    yaml = _join([f"{key} {_show(now)}" for key, now, _ in changes])
    then = _join([_show(old) for _, _, old in changes])
    return (f"{name}: the YAML's {yaml} differ from {v}'s {then}; {v} scores with what it "
            f"was trained with — run `pyml train {name}` to use the new values")
