"""Tabular inspector vs scikit-learn IsolationForest on the shared tabular sets.

Protocol (same for both, in the same run): train on 60 % of the normal rows (split seed 0), test on
the other 40 % of normal rows plus every anomaly; ROC-AUC of the anomaly score. Both models are
also trained with several model seeds (the forest's random_state, the VAE's seed) on that same
split: one seed alone can mislead (IsolationForest's ROC-AUC on cardio ranges 0.934-0.966 over
ten random states), so the mean and spread are printed beside the seed-0 figures.
Usage: .venv/bin/python bench/inspect_tabular.py [--data ../shared/data/tabular] [--seeds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.inspect  # noqa: E402,F401  (first: importing core sets how OpenMP threads wait, before torch loads)

from core.device import set_cpu_threads  # noqa: E402
from core.inspect import tabular  # noqa: E402

SETS = ["odds_thyroid.csv", "odds_cardio.csv", "creditcard_fraud_ulb_sample.csv"]


def split(labels, seed=0, share=0.6):
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(labels == 0)
    rng.shuffle(normal)
    n_train = int(round(share * normal.size))
    train = np.sort(normal[:n_train])
    test = np.sort(np.concatenate([normal[n_train:], np.flatnonzero(labels == 1)]))
    return train, test


def bench_one(path: Path, seed: int = 0, seeds: int = 5) -> dict:
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    header, rows = tabular.read_csv(path)
    feats, rows, labels = tabular.split_label(header, rows, "label", required=True)
    tr, te = split(labels, seed)
    train_rows, test_rows = [rows[i] for i in tr], [rows[i] for i in te]
    # IsolationForest on the same numbers (plain floats; these sets are all numeric).
    xtr = np.array([[float(c) for c in r] for r in train_rows])
    xte = np.array([[float(c) for c in r] for r in test_rows])
    vae, forest_aucs, first = [], [], {}
    for model_seed in range(seed, seed + max(1, seeds)):
        t0 = time.monotonic()
        res = tabular.train_rows(feats, train_rows, {"seed": model_seed})
        t_train = time.monotonic() - t0
        insp = tabular.TableInspector(res["config"], res["net"], res["err_scale"])
        t0 = time.monotonic()
        scores, norm, _ = insp.score_rows(feats, test_rows)
        t_inf = time.monotonic() - t0
        ours = tabular.table_metrics(scores, norm, labels[te])
        vae.append(ours["roc_auc"])
        t0 = time.monotonic()
        forest = IsolationForest(random_state=model_seed).fit(xtr)
        t_if = time.monotonic() - t0
        forest_aucs.append(float(roc_auc_score(labels[te], -forest.score_samples(xte))))
        if not first:
            first = {"vae_f1": ours["f1"], "vae_train_s": round(t_train, 2), "iforest_train_s": round(t_if, 2),
                     "vae_infer_rows_per_s": round(len(te) / max(t_inf, 1e-9))}
    return {"set": path.name, "rows_train": len(tr), "rows_test": len(te),
            "vae_roc_auc": vae[0], "iforest_roc_auc": forest_aucs[0], "ratio": vae[0] / forest_aucs[0],
            "seeds": len(vae), "vae_roc_auc_mean": float(np.mean(vae)), "vae_roc_auc_sd": float(np.std(vae)),
            "iforest_roc_auc_mean": float(np.mean(forest_aucs)), "iforest_roc_auc_sd": float(np.std(forest_aucs)),
            "ratio_of_means": float(np.mean(vae) / np.mean(forest_aucs)), **first}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    ap.add_argument("--seeds", type=int, default=5, help="model seeds per set (mean and spread)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    set_cpu_threads()
    data = Path(args.data)
    if not data.is_dir():
        print(f"data folder {data} is absent; nothing to measure", file=sys.stderr)
        return 1
    results = [bench_one(data / name, seeds=args.seeds) for name in SETS if (data / name).is_file()]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'':34s} {'seed 0':^23s} {'mean ± sd over ' + str(args.seeds) + ' seeds':^40s}")
        print(f"{'set':34s} {'VAE AUC':>8s} {'IForest':>8s} {'ratio':>5s}  {'VAE AUC':>15s} {'IForest':>15s} "
              f"{'ratio':>6s} {'VAE F1':>7s} {'train s':>8s}")
        for r in results:
            print(f"{r['set']:34s} {r['vae_roc_auc']:8.4f} {r['iforest_roc_auc']:8.4f} {r['ratio']:5.3f}  "
                  f"{r['vae_roc_auc_mean']:7.4f} ± {r['vae_roc_auc_sd']:.4f} "
                  f"{r['iforest_roc_auc_mean']:7.4f} ± {r['iforest_roc_auc_sd']:.4f} {r['ratio_of_means']:6.3f} "
                  f"{r['vae_f1']:7.3f} {r['vae_train_s']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
