"""The `monitor:` key of a model spec: the windows `pyml monitor` cuts the scored relation
into, and the per-metric alert thresholds (the one gate a scheduler reads).

Kept out of `spec.py` like `tune:`; the statistics themselves are
pyml.modelling.monitor_stats'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyml.errors import SpecError

MONITOR_KEYS = ("time_column", "window", "thresholds", "min_rows")
WINDOWS = ("day", "week", "month", "quarter", "year")

# Alert when a statistic is above its threshold. One drift rule by default, PSI 0.2 (the usual
# "significant shift", the same as `pyml drift`), so a feature that moved alerts once per
# window, not once per statistic (on the demo, every statistic alerting gave 73 alerts where
# PSI gives 12 on the same two features); unseen categories and a change of null share have
# their own. Evidently's 0.1 for normalised Wasserstein and Jensen-Shannon are a spec line
# away (docs/spec.md); the other statistics are recorded without a rule unless the spec sets one.
# chi2_p is not a threshold key: with a training reference of 200,000 rows any shift is
# "significant", which is why the gate uses effect sizes.
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "psi": 0.2,
    "unseen_share": 0.1,
    "null_share_change": 0.1,
    "wasserstein": None,
    "jensen_shannon": None,
    "ks": None,
    "hellinger": None,
    "linf": None,
    "chi2": None,
}
# A window with fewer rows gets its statistics, but no alert: on 10 bins, PSI's sampling noise
# alone is about 10/n (0.05 at 200 rows, against the 0.2 rule), and one row alerted on every
# feature (found by an audit: 22 alerts from a single row).
DEFAULT_MIN_ROWS = 200


@dataclass(frozen=True)
class MonitorSpec:
    """How `pyml monitor` windows the scored relation and when it alerts."""

    time_column: str | None = None  # DATE/TIMESTAMP column windows come from; None: one window
    window: str = "month"  # day | week | month | quarter | year (with time_column)
    # metric -> threshold (value > threshold alerts; None: no rule), defaults overridden
    thresholds: tuple[tuple[str, float | None], ...] = tuple(DEFAULT_THRESHOLDS.items())
    min_rows: int = DEFAULT_MIN_ROWS  # windows with fewer rows are recorded, never alerted

    def threshold(self, metric: str) -> float | None:
        """The alert threshold of a metric, or None when no rule applies to it."""
        return dict(self.thresholds).get(metric)


def parse_monitor(raw: Any, where: str) -> MonitorSpec:
    """Validate the `monitor:` mapping (absent: the whole relation, default thresholds)."""
    if raw is None:
        return MonitorSpec()
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: 'monitor' must be a mapping with keys "
                        f"{', '.join(MONITOR_KEYS)}")
    unknown = [k for k in raw if k not in MONITOR_KEYS]
    if unknown:
        raise SpecError(f"{where}: unknown key 'monitor.{unknown[0]}'; allowed: "
                        f"{', '.join(MONITOR_KEYS)}")
    column = raw.get("time_column")
    if column is not None and (not isinstance(column, str) or not column.strip()):
        raise SpecError(f"{where}: monitor.time_column must be a column name, got {column!r}")
    window = raw.get("window")
    if window is not None and column is None:
        raise SpecError(f"{where}: monitor.window needs monitor.time_column (the DATE or "
                        "TIMESTAMP column the windows come from)")
    if window is not None and window not in WINDOWS:
        raise SpecError(f"{where}: monitor.window must be one of {', '.join(WINDOWS)}, "
                        f"got {window!r}")
    min_rows = raw.get("min_rows", DEFAULT_MIN_ROWS)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise SpecError(f"{where}: monitor.min_rows must be an integer of at least 1 (the "
                        f"fewest rows a window alerts on), got {min_rows!r}")
    return MonitorSpec(column, window or "month", _thresholds(raw.get("thresholds"), where),
                       min_rows)


def _thresholds(raw: Any, where: str) -> tuple[tuple[str, float | None], ...]:
    out = dict(DEFAULT_THRESHOLDS)
    if raw is None:
        return tuple(out.items())
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: monitor.thresholds must be a mapping of metric to a number "
                        f"(e.g. psi: 0.25); metrics: {', '.join(DEFAULT_THRESHOLDS)}")
    for metric, value in raw.items():
        if metric not in DEFAULT_THRESHOLDS:
            raise SpecError(f"{where}: unknown metric 'monitor.thresholds.{metric}'; allowed: "
                            f"{', '.join(DEFAULT_THRESHOLDS)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value < 0):
            raise SpecError(f"{where}: monitor.thresholds.{metric} must be a number >= 0 "
                            f"(or null for no alert), got {value!r}")
        out[metric] = None if value is None else float(value)
    return tuple(out.items())
