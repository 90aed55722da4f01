"""The task vocabulary: the kinds of model pyml trains and what each is judged by."""

from __future__ import annotations

# The one metric that sums up a version of each task (listings, promotion by hand, reports).
HEADLINE_METRIC = {"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}
