"""Names of the `ml` schema and of the per-model tables pyml writes into it.

Every other module asks the store for a table by these names; only `pyml/store/` splices
them into SQL.
"""

from __future__ import annotations

SCHEMA = "ml"
TEMP_PREFIX = "__pyml_tmp_"  # tables being built; a killed run's leftovers start with this


def predictions_table(model: str) -> str:
    """Name (in the ml schema) of a model's predictions table."""
    return f"{model}_predictions"


def explanations_table(model: str) -> str:
    """Name (in the ml schema) of a model's explanations table."""
    return f"{model}_explanations"


def profile_table(relation: str) -> str:
    """Name (in the ml schema) of a relation's profile table."""
    return f"profile_{relation}"
