"""How many rounds the final refit on all labelled rows should run (`final_fit: refit`).

    python -m bench.refit_scale [--seeds 3] [--rows 15000]

For each seed: a synthetic binary problem (scikit-learn's make_classification, 20 features,
8 informative, 10% flipped labels) with `--rows` labelled rows split as pyml's default split
does (64% train, 16% validation, 20% holdout) and 45,000 further rows that nothing trains on.
The evaluated fit is pyml's default (eta 0.1, depth 6, hist) with early stopping (30 rounds)
on the validation part; the refits fit every labelled row for early stopping's rounds times
1.0, sqrt(n_all / n_train) and n_all / n_train (what pyml uses). Prints the AUC of each on the
untouched rows, per seed and on average.
"""

from __future__ import annotations

import argparse

import numpy as np
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

PARAMS = {"objective": "binary:logistic", "eta": 0.1, "max_depth": 6, "tree_method": "hist",
          "eval_metric": "logloss", "seed": 0}


def run(seeds: int, rows: int) -> dict[str, list[float]]:
    """AUC on unseen rows of the evaluated fit and of each refit scale, per seed."""
    out: dict[str, list[float]] = {}
    for seed in range(seeds):
        X, y = make_classification(n_samples=rows + 45_000, n_features=20, n_informative=8,
                                   flip_y=0.1, class_sep=0.6, random_state=seed)
        Xl, yl, Xt, yt = X[:rows], y[:rows], X[rows:], y[rows:]
        n_train, n_fit = int(rows * 0.64), int(rows * 0.8)
        evaluated = xgb.train(PARAMS, xgb.DMatrix(Xl[:n_train], yl[:n_train]), 500,
                              evals=[(xgb.DMatrix(Xl[n_train:n_fit], yl[n_train:n_fit]), "v")],
                              early_stopping_rounds=30, verbose_eval=False)
        best = evaluated.best_iteration + 1
        dtest = xgb.DMatrix(Xt)
        out.setdefault("evaluated fit", []).append(
            float(roc_auc_score(yt, evaluated[:best].predict(dtest))))
        everything = xgb.DMatrix(Xl, yl)
        for name, scale in (("refit x 1.0", 1.0), ("refit x sqrt(ratio)", np.sqrt(rows / n_train)),
                            ("refit x ratio (pyml)", rows / n_train)):
            refit = xgb.train(PARAMS, everything, max(1, round(best * scale)))
            out.setdefault(name, []).append(float(roc_auc_score(yt, refit.predict(dtest))))
        print(f"seed {seed}: early stopping {best} rounds; "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15_000)
    args = parser.parse_args()
    out = run(args.seeds, args.rows)
    base = np.mean(out["evaluated fit"])
    print("\n| model | mean AUC on unseen rows | vs evaluated fit |\n| --- | --- | --- |")
    for name, values in out.items():
        print(f"| {name} | {np.mean(values):.4f} | {np.mean(values) - base:+.4f} |")


if __name__ == "__main__":
    main()
