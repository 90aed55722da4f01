"""Monitoring statistics in SQL: one feature's values per window against its training
reference, in a few GROUP BYs DuckDB runs in parallel (no rows come to Python).

The reference is the version's training snapshot (pyml.store.drift.Snapshot): decile bins or
category counts over up to 200,000 training rows, and a seeded sample of up to 10,000
training rows' values. Per window:

- over the snapshot's bins (numeric: NULL, the deciles; categorical: NULL, each category,
  unseen): PSI (shares floored at 1e-4, as `pyml drift`), Jensen-Shannon distance (natural
  log, scipy's `jensenshannon`), Hellinger distance (sqrt(sum (sqrt p - sqrt q)^2 / 2));
  categorical also chi^2 of the 2 x bins contingency table of counts (no continuity
  correction; bins empty on both sides dropped) with its p-value, and L-infinity (the largest
  absolute difference of shares over the bins);
- numeric, over the exact values: the two-sample KS statistic and the Wasserstein-1
  distance between the reference sample and the window's values, the latter divided by the
  sample's standard deviation (Evidently's normalisation, floored at 0.001);
- the NULL share now, its absolute change from training, and (categorical) the share of
  values never seen in training.

Values are read as the model reads them: numbers rounded to float32 (NaN is NULL).
tests/test_monitor_stats.py checks every formula against scipy on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from pyml.data.encode import sql_literal
from pyml.engines.duckdb import quote
from pyml.store.drift import Snapshot

PSI_FLOOR = 1e-4  # as pyml.modelling.drift_stats: an empty bin's share, so PSI stays finite
WASSERSTEIN_NORM_FLOOR = 0.001  # Evidently's floor of the reference std
WINDOW = "__pyml_window"  # the window label column of the values table
PREDICTION = "__prediction__"  # feature name of the prediction's own distribution
PREDICTION_BINS = 10


@dataclass(frozen=True)
class Stat:
    """One statistic of one feature in one window."""

    window: str  # window label
    feature: str  # feature column (or __prediction__)
    kind: str  # numeric | categorical | prediction
    metric: str  # psi | ks | wasserstein | jensen_shannon | hellinger | chi2 | ...
    value: float | None  # None where undefined (e.g. KS of a window without values)


def float32_sql(column: str, alias: str = "") -> str:
    """A numeric column as the model reads it: float32, NaN as NULL."""
    x = f"cast(cast({alias}{quote(column)} as double) as float)"
    return f"(case when isnan({x}) then null else {x} end)"


def _bin_sql(x: str, snap: Snapshot) -> str:
    """Bin index of each value: -1 NULL; numeric i for (e[i-1], e[i]] (searchsorted left, as
    the snapshot counted them); categorical the category's code, len(categories) unseen."""
    if snap.kind == "categorical":
        if not snap.categories:
            return f"(case when {x} is null then -1 else 0 end)"
        enum = "ENUM(" + ", ".join(sql_literal(c) for c in snap.categories) + ")"
        code = f"enum_code(try_cast({x} as {enum}))"
        return (f"(case when {x} is null then -1 else coalesce({code}, "
                f"{len(snap.categories)}) end)")
    arms = " ".join(f"when {x} <= {float(e)!r} then {i}" for i, e in enumerate(snap.bin_edges))
    return f"(case when {x} is null then -1 {arms} else {len(snap.bin_edges)} end)"


def _reference_bins(snap: Snapshot) -> list[tuple[int, int]]:
    """(bin, training count) for every bin, NULL (-1) and unseen included."""
    if snap.kind == "categorical":
        counts = list(snap.bin_counts) or [0] * len(snap.categories)
        return [(-1, snap.null_count), *enumerate(counts), (len(snap.categories), 0)]
    counts = list(snap.bin_counts) or [0] * (len(snap.bin_edges) + 1)
    return [(-1, snap.null_count), *enumerate(counts)]


def _value_sql(column: str, snap: Snapshot, float32: bool, alias: str = "") -> str:
    if snap.kind == "categorical":
        return f"cast({alias}{quote(column)} as varchar)"
    return float32_sql(column, alias) if float32 else f"cast({alias}{quote(column)} as double)"


def binned_stats(con: duckdb.DuckDBPyConnection, table: str, column: str, snap: Snapshot,
                 kind: str, *, float32: bool = True) -> list[Stat]:
    """PSI, Jensen-Shannon, Hellinger, null shares (+ categorical: chi^2, L-inf, unseen) of
    one feature per window of `table` (its values in `column`, its window in WINDOW).
    `float32=False` compares numbers as DOUBLE (the prediction column)."""
    x = _value_sql(column, snap, float32)
    ref = ", ".join(f"({b}, {n})" for b, n in _reference_bins(snap))
    unseen = len(snap.categories) if snap.kind == "categorical" else -2
    null_train = snap.null_count / snap.n_rows if snap.n_rows else 0.0
    sql = f"""
        with ref(b, rn) as (values {ref}),
        rtot as (select greatest(sum(rn), 1)::double as total from ref),
        cur as (select {WINDOW} as w, {_bin_sql(x, snap)} as b, count(*) as cn
                from {table} group by all),
        wins as (select w, sum(cn)::double as total from cur group by w),
        j as (
            select wins.w, ref.b, ref.rn, coalesce(cur.cn, 0) as cn,
                   ref.rn / rtot.total as p, coalesce(cur.cn, 0) / wins.total as q,
                   rtot.total as rt, wins.total as wt
            from wins cross join ref cross join rtot
            left join cur on cur.w = wins.w and cur.b = ref.b
        )
        select w, any_value(wt) as rows,
            sum((greatest(q, {PSI_FLOOR}) - greatest(p, {PSI_FLOOR}))
                * ln(greatest(q, {PSI_FLOOR}) / greatest(p, {PSI_FLOOR}))) as psi,
            sqrt(greatest(0.5 * sum(case when p > 0 then p * ln(2 * p / (p + q)) else 0 end)
                 + 0.5 * sum(case when q > 0 then q * ln(2 * q / (p + q)) else 0 end), 0))
                as jensen_shannon,
            sqrt(sum(power(sqrt(p) - sqrt(q), 2)) / 2) as hellinger,
            sum(case when rn + cn > 0 then power(rn - rt * (rn + cn) / (rt + wt), 2)
                     / (rt * (rn + cn) / (rt + wt))
                     + power(cn - wt * (rn + cn) / (rt + wt), 2)
                     / (wt * (rn + cn) / (rt + wt)) else 0 end) as chi2,
            count(*) filter (where rn + cn > 0) - 1 as dof,
            max(abs(p - q)) as linf,
            sum(q) filter (where b = -1) as null_share,
            sum(q) filter (where b = {unseen}) as unseen_share
        from j group by w order by w"""
    out = []
    for w, _, psi, js, hel, chi2, dof, linf, null_now, unseen_now in con.execute(sql).fetchall():
        values: list[tuple[str, float | None]] = [
            ("psi", psi), ("jensen_shannon", js), ("hellinger", hel),
            ("null_share", null_now), ("null_share_change", abs(null_now - null_train))]
        if snap.kind == "categorical":
            values += [("chi2", chi2), ("chi2_p", chi2_pvalue(chi2, int(dof))),
                       ("linf", linf), ("unseen_share", unseen_now)]
        out += [Stat(str(w), snap.feature, kind, m, None if v is None else float(v))
                for m, v in values]
    return out


def chi2_pvalue(statistic: float, dof: int) -> float:
    """P(chi^2_dof >= statistic); 1 where the table has a single non-empty bin."""
    from scipy.special import chdtrc

    return 1.0 if dof < 1 else float(chdtrc(dof, statistic))


def sample_stats(con: duckdb.DuckDBPyConnection, table: str, column: str, snap: Snapshot,
                 kind: str, *, numeric: bool = True) -> list[Stat]:
    """KS statistic and normalised Wasserstein-1 per window: the window's non-NULL values
    against the snapshot's sample (as scipy's ks_2samp / wasserstein_distance compute them:
    both step CDFs compared at every value, |F - G| integrated between them)."""
    sample = [v for v in snap.sample if v is not None and v == v]
    if not sample:
        return []
    x = _value_sql(column, snap, numeric, "t.")
    # One pass per window: each reference value weighs +1/n_ref, each window value -1/n_w, so
    # the running sum in value order is F_ref - F_w; RANGE framing (the default) gives tied
    # values, on either side, the gap after all of them, and lead() the width to the next
    # distinct value (0 between ties). The window's values are counted per distinct value
    # first (a hash aggregate), so the sort is of distinct values: few for real columns.
    sql = f"""
        with ref as (select unnest(?::double[]) as x),
        rstat as (select count(*)::double as n, stddev_pop(x) as sd from ref),
        vals as (select t.{WINDOW} as w, {x} as x, count(*) as k from {table} as t
                 where {x} is not null group by all),
        cur as (select w, sum(k)::double as n from vals group by w),
        pts as (
            select cur.w, ref.x, 1 / rstat.n as wt from cur cross join ref cross join rstat
            union all
            select vals.w, vals.x, -vals.k / cur.n from vals join cur on cur.w = vals.w
        ),
        cum as (
            select w, x, sum(wt) over (partition by w order by x) as gap,
                   lead(x) over (partition by w order by x) - x as width
            from pts
        )
        select w, max(abs(gap)) as ks, sum(abs(gap) * coalesce(width, 0))
               / greatest(any_value(rstat.sd), {WASSERSTEIN_NORM_FLOOR})
        from cum cross join rstat group by w order by w"""
    rows = con.execute(sql, [sample]).fetchall()
    return [Stat(str(w), snap.feature, kind, m, float(v))
            for w, ks, wd in rows for m, v in (("ks", ks), ("wasserstein", wd))]


def feature_stats(con: duckdb.DuckDBPyConnection, table: str, column: str, snap: Snapshot
                  ) -> list[Stat]:
    """Every statistic of one feature per window."""
    out = binned_stats(con, table, column, snap, snap.kind)
    if snap.kind != "categorical":
        out += sample_stats(con, table, column, snap, snap.kind)
    return out


def prediction_reference(predictions: np.ndarray, n_rows: int) -> Snapshot:
    """The prediction's reference distribution: the booster's output on the snapshot's
    sample rows, binned at its deciles like a numeric feature (values as float64)."""
    values = np.asarray(predictions, dtype=np.float64)
    if len(values) == 0:
        return Snapshot(PREDICTION, "numeric", 0, 0)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, PREDICTION_BINS + 1)[1:-1],
                                  method="inverted_cdf"))
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return Snapshot(PREDICTION, "numeric", len(values), 0,
                    bin_edges=tuple(float(e) for e in edges),
                    bin_counts=tuple(int(c) for c in counts),
                    sample=tuple(float(v) for v in values))


def prediction_stats(con: duckdb.DuckDBPyConnection, table: str, column: str,
                     ref: Snapshot) -> list[Stat]:
    """The statistics of the prediction column (float64, compared without float32 rounding)."""
    binned = binned_stats(con, table, column, ref, "prediction", float32=False)
    return ([s for s in binned if not s.metric.startswith("null_share")]
            + sample_stats(con, table, column, ref, "prediction", numeric=False))


def reference_matrix(snaps: Sequence[Snapshot]) -> np.ndarray | None:
    """The sample rows as the model's float32 input matrix (features in the given order), or
    None when a snapshot has no sample (a version trained before samples were stored)."""
    lengths = {len(s.sample) for s in snaps}
    if not snaps or len(lengths) != 1 or 0 in lengths:
        return None
    return np.asarray([[np.nan if v is None else v for v in s.sample] for s in snaps],
                      dtype=np.float32).T.copy()
