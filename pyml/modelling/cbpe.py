"""Label-free performance estimates of a binary model: confidence-based performance
estimation (CBPE, as NannyML defines it), beside the realised metrics where labels exist.

Training fits an isotonic regression from the evaluated model's predicted probability to the
observed rate on its holdout (`fit_calibrator`, stored in ml.calibrators). On a window of new
rows, each row's calibrated probability c_i is the chance its label is positive; with the
predicted class fixed by the version's threshold (positive when p_i >= threshold), the
expected confusion matrix is

    TP = sum c_i over predicted positives     FP = sum (1 - c_i) over predicted positives
    FN = sum c_i over predicted negatives     TN = sum (1 - c_i) over predicted negatives

and accuracy, precision, recall and F1 follow from those counts. The expected ROC curve puts,
at each distinct score, the expected TP and FP of the rows at or above it over the expected
positives (sum c_i) and negatives (sum 1 - c_i); its trapezoid area is

    sum_{i,j} c_i (1 - c_j) [s_i > s_j] + 1/2 c_i (1 - c_j) [s_i == s_j]
    --------------------------------------------------------------------
                        (sum_i c_i) (sum_j (1 - c_j))

(i = j included, as the half-weight tie term): NannyML's `estimate_roc_auc`, which walks
the rows by descending model score (rows tied on the score share one calibrated value, so
their steps lie on one line), without its rounding of the cumulative counts to 5 decimals.

Where the booster that scores is a refit on every labelled row (`final_fit: refit`), the
refit has no unseen rows to be calibrated on; each row's chance c_i is then the calibrated
probability of the evaluated fit (kept in ml.final_fit), and the refit's own probability
decides the predicted class and the ranking (`window_performance(evaluated_prob=...)`).
Applying the evaluated fit's map to the refit's sharper probabilities instead made the
estimate optimistic (bench/bench_cbpe.py).

Assumptions (what makes the estimate right): no concept shift, i.e. P(label | features) is
the same in the window as in the holdout, so the holdout's calibration still holds; only the
mix of features (covariate shift) moves. Where the relation between features and label
changes, the estimate is wrong and only the realised metrics show it.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from pyml.store.calibrators import Calibrator

__all__ = ["Calibrator", "expected_roc_auc", "fit_calibrator", "window_performance"]


def fit_calibrator(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> Calibrator:
    """The isotonic calibration map of holdout probabilities `prob` to their 0/1 `label`.

    Kept as IsotonicRegression's breakpoints (X_thresholds_, y_thresholds_), which
    `Calibrator.apply` interpolates exactly as IsotonicRegression.predict does. `threshold`
    is the version's decision threshold, stored beside it. Raises ValueError when `label`
    lacks one of the classes or the inputs are not finite probabilities: nothing can be
    calibrated from one class.
    """
    p = _probabilities(prob)
    y = np.asarray(label, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"prob has {p.shape[0]} rows but label has {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) < 2:
        raise ValueError("calibration needs 0/1 labels of both classes")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(p, y)
    return Calibrator(tuple(float(v) for v in iso.X_thresholds_),
                      tuple(float(v) for v in iso.y_thresholds_), float(threshold), len(p))


def expected_roc_auc(calibrated: np.ndarray, score: np.ndarray | None = None) -> float:
    """Area under the expected ROC curve of rows ranked by `score` (default: `calibrated`)
    whose chances of being positive are `calibrated`, from (0, 0) to (1, 1); NaN when the
    expected positives or negatives are 0 (every c_i is 0, or every c_i is 1)."""
    c = np.asarray(calibrated, dtype=np.float64)
    s = c if score is None else np.asarray(score, dtype=np.float64)
    if len(c) == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    c, s = c[order], s[order]
    # One curve point per distinct score: the last row of each run of ties.
    last = np.append(np.flatnonzero(np.diff(s)), len(s) - 1)
    tp = np.cumsum(c)[last]
    fp = np.cumsum(1.0 - c)[last]
    if tp[-1] <= 0.0 or fp[-1] <= 0.0:
        return float("nan")
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    return float(np.trapezoid(tpr, fpr))


def window_performance(prob: np.ndarray, label: np.ndarray | None,
                       calibrator: Calibrator | None, threshold: float, *,
                       evaluated_prob: np.ndarray | None = None) -> dict[str, float]:
    """Estimated (label-free) and realised performance of one window of a binary model.

    prob: the positive class's predicted probability of each row (float64, no NaN);
    label: per row 1 (the positive class, classes[1]), 0, or NaN where not known yet; or
    None; calibrator: the scoring version's (ml.calibrators), or None; threshold: the
    version's decision threshold (positive when prob >= threshold); evaluated_prob: where
    the booster that scores is not the one the calibrator was fitted on (a refit on every
    labelled row, ml.final_fit), the evaluated fit's probabilities of the same rows: the
    calibrator maps those to each row's chance of being positive (the refit has no unseen
    rows to calibrate on), while `prob` decides the predicted class and the ranking.

    Returns:
    - estimated_roc_auc, estimated_accuracy, estimated_precision, estimated_recall,
      estimated_f1 and expected_tp, expected_fp, expected_tn, expected_fn, from the
      calibrated probabilities of every row, labelled or not; only with a calibrator (a
      version without one gets no estimate: uncalibrated probabilities would be a silently
      wrong one) and at least one row;
    - realised_roc_auc, realised_accuracy, realised_precision, realised_recall,
      realised_f1, from the labelled rows only (AUC by scikit-learn), when there are at least two
      of them and both classes occur among them;
    - labelled_rows: how many rows have a label (0 when `label` is None).

    A metric whose denominator is 0 (precision with no predicted positive, AUC with one
    expected class) is left out, never reported as 0.
    """
    p = _probabilities(prob)
    predicted = p >= threshold
    out: dict[str, float] = {}
    if calibrator is not None and len(p):
        c = calibrator.apply(p if evaluated_prob is None else _probabilities(evaluated_prob))
        if c.shape != p.shape:
            raise ValueError(f"prob has {p.shape[0]} rows but evaluated_prob has {c.shape}")
        tp = float(c[predicted].sum())
        fp = float((1.0 - c[predicted]).sum())
        fn = float(c[~predicted].sum())
        tn = float((1.0 - c[~predicted]).sum())
        out.update(expected_tp=tp, expected_fp=fp, expected_tn=tn, expected_fn=fn,
                   estimated_accuracy=(tp + tn) / len(p))
        _ratio(out, "estimated_precision", tp, tp + fp)
        _ratio(out, "estimated_recall", tp, tp + fn)
        _ratio(out, "estimated_f1", 2.0 * tp, 2.0 * tp + fp + fn)
        auc = expected_roc_auc(c, p)
        if np.isfinite(auc):
            out["estimated_roc_auc"] = auc
    known = 0
    if label is not None:
        y = np.asarray(label, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError(f"prob has {p.shape[0]} rows but label has {y.shape}")
        mask = ~np.isnan(y)
        if not np.isin(y[mask], (0.0, 1.0)).all():
            raise ValueError("labels must be 0, 1 or NaN (unknown)")
        known = int(mask.sum())
        y_known, p_known, hit = y[mask].astype(np.int64), p[mask], predicted[mask]
        if known >= 2 and len(np.unique(y_known)) == 2:
            out["realised_roc_auc"] = float(skm.roc_auc_score(y_known, p_known))
            # The confusion counts by one bincount: scikit-learn's accuracy/precision/recall/
            # F1 validate and count again each (seconds on a million rows); the tests check
            # these equal theirs.
            tn_, fp_, fn_, tp_ = (float(v) for v in np.bincount(
                2 * y_known + hit.astype(np.int64), minlength=4))
            out["realised_accuracy"] = (tp_ + tn_) / known
            _ratio(out, "realised_precision", tp_, tp_ + fp_)
            _ratio(out, "realised_recall", tp_, tp_ + fn_)
            _ratio(out, "realised_f1", 2.0 * tp_, 2.0 * tp_ + fp_ + fn_)
    out["labelled_rows"] = float(known)
    return out


def _ratio(out: dict[str, float], key: str, num: float, den: float) -> None:
    if den > 0.0:
        out[key] = num / den


def _probabilities(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"prob must be one probability per row, got shape {p.shape}")
    if not (np.isfinite(p).all() and ((p >= 0.0) & (p <= 1.0)).all()):
        raise ValueError("prob must hold probabilities in [0, 1], without NaN")
    return p
