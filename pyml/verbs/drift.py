"""`pyml drift`: is what we score still like what the model learned on?

At train time each feature's distribution over the training rows is stored in
`ml.training_snapshots` (bin edges and counts, category counts, null share; never the rows).
`pyml drift` streams the relation to be scored through the same float32 encoding the model
sees and compares, per feature: PSI, the KS statistic (numeric), the share of categories never
seen in training (categorical) and the null share then and now (pyml.modelling.drift_stats),
and appends the result to ml.drift (pyml.store.drift).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from pyml.data.encode import check_schema, out_of_range, select_exprs
from pyml.dbt.spec import DEFAULT_BATCH_ROWS, ModelSpec
from pyml.engines.duckdb import qualified, relation_columns, stream_arrow
from pyml.errors import DataError, DriftDetected, ModelNotFound
from pyml.modelling.drift_stats import Counter, FeatureDrift, Snapshot, psi, snapshot
from pyml.session import Session
from pyml.store.drift import load_snapshots, write_drift
from pyml.store.registry import StoredModel, load_version

__all__ = ["DriftResult", "FeatureDrift", "Snapshot", "drift", "drift_found",
           "drift_relation", "psi", "snapshot"]

Log = Callable[[str], None]
DEFAULT_THRESHOLD = 0.2  # PSI above 0.2 is the usual "significant shift" rule of thumb


@dataclass(frozen=True)
class DriftResult:
    """What one `pyml drift` run compared and found."""

    name: str  # model name
    version: int  # model version whose snapshot was the reference
    relation: str  # schema.table compared
    rows: int  # rows read now
    threshold: float  # PSI above which a feature counts as drifted
    features: tuple[FeatureDrift, ...]  # per feature, in model order
    checked_at: datetime  # when (written to ml.drift)

    @property
    def drifted(self) -> list[FeatureDrift]:
        """Features whose PSI exceeds the threshold, worst first."""
        return sorted((f for f in self.features if f.psi > self.threshold),
                      key=lambda f: -f.psi)



def snapshotted_version(con: duckdb.DuckDBPyConnection, name: str, version: int | None,
                        command: str) -> tuple[StoredModel, dict[str, Snapshot]]:
    """A version and its training snapshots by feature (the reference `pyml drift` and
    `pyml monitor` compare with); ModelNotFound, naming `command`, when it has none."""
    stored = load_version(con, name, version)
    snaps = {s.feature: s for s in load_snapshots(con, name, stored.version)}
    if not snaps:
        raise ModelNotFound(
            f"model '{name}' v{stored.version} has no training snapshot (it was trained before "
            f"pyml stored them): retrain it with `pyml train {name}`, then rerun `{command}`")
    return stored, snaps

def drift_relation(con: duckdb.DuckDBPyConnection, name: str, version: int | None,
                   relation: tuple[str, str], threshold: float, *,
                   batch_size: int = DEFAULT_BATCH_ROWS, log: Log | None = None,
                   write: bool = True) -> DriftResult:
    """Compare `relation` with a version's training snapshot; append the result to ml.drift
    (`write=False`: only compute it, e.g. on a read-only connection)."""
    stored, snaps = snapshotted_version(con, name, version, "pyml drift")
    schema, table = relation
    label = f"{schema}.{table}"
    where = f"model '{name}' v{stored.version}"
    check_schema(where, stored.features, relation_columns(con, schema, table), label)
    features = [f for f in stored.features if f.name in snaps]
    counters = [Counter(snaps[f.name]) for f in features]
    started = time.perf_counter()
    cur = con.cursor()
    try:
        reader = stream_arrow(cur, f"select {', '.join(select_exprs(features))} from "
                                   f"{qualified(schema, table)}", batch_size)
        for batch in reader:
            for j, counter in enumerate(counters):
                counter.add(batch.column(j))
    finally:
        cur.close()
    rows = counters[0].rows if counters else 0
    beyond = next((c for c in counters if c.out_of_range), None)
    if beyond is not None:  # XGBoost cannot read them: pyml score refuses the relation too
        raise out_of_range(where, beyond.snap.feature, beyond.out_of_range)
    if counters and rows == 0:
        # Every PSI against an empty relation is the floor's artefact, not drift; score and
        # explain refuse an empty relation the same way. Nothing has been written yet.
        raise DataError(f"{where}: {label} is empty; nothing to compare (did `dbt build` run?)")
    if log:
        log(f"[{name}] compared {rows:,} rows of {label} with the v{stored.version} training "
            f"snapshot in {time.perf_counter() - started:.1f}s")
    result = DriftResult(name, stored.version, label, rows, threshold,
                         tuple(c.result() for c in counters),
                         datetime.now().replace(microsecond=0))
    if write:
        write_drift(con, name, stored.version, label, result.checked_at,
                    [row for f in result.features for row in f.rows()])
    return result


def drift(session: Session, specs: Sequence[ModelSpec], *, version: int | None = None
          ) -> list[DriftResult]:
    """Check each spec's score relation against its model's training snapshot, with the
    spec's drift_threshold."""
    with session.database() as con:
        return [drift_relation(con, spec.name, version, session.scored_relation(spec),
                               spec.drift_threshold, batch_size=spec.score.batch_size,
                               log=session.log)
                for spec in specs]


def drift_found(results: Sequence[DriftResult]) -> DriftDetected | None:
    """The finding to raise when a feature of any result drifted past its threshold."""
    drifted = [f"{r.name}: {', '.join(f'{f.feature} (PSI {f.psi:.3f})' for f in r.drifted)}"
               for r in results if r.drifted]
    if not drifted:
        return None
    return DriftDetected(f"Drift above the threshold in {'; '.join(drifted)}", results)
