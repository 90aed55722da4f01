"""Label-free performance estimates (pyml.modelling.cbpe): how close, and how fast.

    python -m bench.bench_cbpe [--rows 1000000] [--repeat 3] [--seeds 4]

Accuracy: XGBoost trained on x1 ~ N(0, 1) (6,000 rows, 4,000 holdout rows for the
calibrator), windows of 20,000 rows with x1 shifted by 0 .. 1.5 and the same P(y | x) (the
simulation of tests/test_cbpe.py, over several seeds). For each window, estimated minus
realised ROC AUC and accuracy, for the evaluated booster (what the calibrator was fitted on)
and for a refit on train + holdout with 10/6 times the rounds (what `final_fit: refit`
stores: rounds x n_all / n_train): as pyml estimates it (`refit`: each row's chance from the
calibrated evaluated probability, class and ranking from the refit's) and, for comparison,
with the evaluated fit's calibrator applied to the refit's own probabilities
(`refit, own probabilities`).

Speed: `window_performance` on `--rows` rows, without labels (the estimate) and with every
label known (estimate and realised), beside the baseline measured in the same run:
scikit-learn's roc_auc_score on the same rows (what a realised AUC costs anyway). Best of
`--repeat`; prints seconds and ratios.
"""

from __future__ import annotations

import argparse

import numpy as np
import xgboost as xgb
from sklearn import metrics as skm

from bench.timing import best
from pyml.modelling.cbpe import fit_calibrator, window_performance

SHIFTS = (0.0, 0.5, 1.0, 1.5)
PARAMS = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1}


def shifted(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows with x1 ~ N(shift, 1), x2 ~ N(0, 1) and the same P(y | x) whatever the shift."""
    x1, x2 = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)
    logit = -0.5 + 1.2 * x1 - 0.6 * x1 ** 2 + 0.8 * x2
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return np.column_stack([x1, x2]), y


def accuracy(seeds: int) -> None:
    print("| seed | booster | " + " | ".join(f"shift {s}: AUC / acc error" for s in SHIFTS)
          + " |")
    print("| --- | --- |" + " --- |" * len(SHIFTS))
    worst = {"evaluated": 0.0, "refit": 0.0, "refit, own probabilities": 0.0}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        X, y = shifted(rng, 6000, 0.0)
        X_hold, y_hold = shifted(rng, 4000, 0.0)
        evaluated = xgb.train(PARAMS, xgb.DMatrix(X, y), num_boost_round=100)
        refit = xgb.train(PARAMS, xgb.DMatrix(np.vstack([X, X_hold]), np.r_[y, y_hold]),
                          num_boost_round=round(100 * 10 / 6))
        cal = fit_calibrator(evaluated.inplace_predict(X_hold).astype(np.float64), y_hold)
        windows = [shifted(rng, 20000, s) for s in SHIFTS]
        for name, booster in (("evaluated", evaluated), ("refit", refit),
                              ("refit, own probabilities", refit)):
            cells = []
            for W, y_w in windows:
                bridge = (evaluated.inplace_predict(W).astype(np.float64) if name == "refit"
                          else None)
                r = window_performance(booster.inplace_predict(W).astype(np.float64), y_w,
                                       cal, 0.5, evaluated_prob=bridge)
                auc = r["estimated_roc_auc"] - r["realised_roc_auc"]
                acc = r["estimated_accuracy"] - r["realised_accuracy"]
                worst[name] = max(worst[name], abs(auc))
                cells.append(f"{auc:+.4f} / {acc:+.4f}")
            print(f"| {seed} | {name} | " + " | ".join(cells) + " |")
    print("\nlargest |estimated - realised| ROC AUC: "
          + ", ".join(f"{k} {v:.4f}" for k, v in worst.items()))


def speed(rows: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=rows).astype(np.float32).astype(np.float64)  # as XGBoost gives
    label = (rng.uniform(size=rows) < prob).astype(np.float64)
    cal = fit_calibrator(prob[:100_000], label[:100_000])
    base = best(lambda: skm.roc_auc_score(label, prob), repeat)
    estimate = best(lambda: window_performance(prob, None, cal, 0.5), repeat)
    both = best(lambda: window_performance(prob, label, cal, 0.5), repeat)
    print(f"\n| rows | roc_auc_score s (baseline) | estimate s | ratio | estimate + realised s "
          f"| ratio |\n| --- | --- | --- | --- | --- | --- |\n| {rows:,} | {base:.2f} | "
          f"{estimate:.2f} | {estimate / base:.2f} | {both:.2f} | {both / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    accuracy(args.seeds)
    speed(args.rows, args.repeat)


if __name__ == "__main__":
    main()
