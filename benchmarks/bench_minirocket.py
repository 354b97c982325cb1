"""The reference model (MiniRocket + ridge) on prepared data: with and without the appended
per-channel mean/std features, on the study's capped training windows and on all of them.

    timoe prepare --dataset hapt --out data/processed/hapt
    python benchmarks/bench_minirocket.py --data data/processed/hapt --windows 2000 --windows 0 --seeds 0 1 2

Prints one line per (windows, summary features, seed): test and validation accuracy, fit and
predict seconds. The training windows are drawn exactly as the train stage draws them
(training.build.subsample with the seed); --windows 0 means all. numba's first compile in a
fresh environment (~30 s) lands on the first fit; run twice to see the warm figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from timoe.data.io import load_prepared
from timoe.models.reference import fit_minirocket
from timoe.training.build import subsample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--windows", type=int, action="append", help="training windows (0: all); repeatable")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--summary", choices=["both", "on", "off"], default="both")
    a = ap.parse_args()
    data = load_prepared(a.data)
    tr, va, te = data.subset("train"), data.subset("val"), data.subset("test")
    channels = sorted(c for ch in data.meta["modalities"].values() for c in ch)
    n_classes = len(data.meta["classes"])
    summaries = {"both": [False, True], "on": [True], "off": [False]}[a.summary]
    print(f"{a.data.name}: train {len(tr)}, val {len(va)}, test {len(te)}; channels {channels}")
    for windows in a.windows or [0]:
        for with_summary in summaries:
            for seed in a.seeds:
                keep = subsample(len(tr.label), windows or None, seed)
                t0 = time.perf_counter()
                model = fit_minirocket(
                    tr.x[keep],
                    tr.label[keep],
                    channels=channels,
                    n_classes=n_classes,
                    seed=seed,
                    summary_features=with_summary,
                )
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                test_acc = float((model.decision(te.x).argmax(1) == te.label).mean())
                predict_s = time.perf_counter() - t0
                val_acc = float((model.decision(va.x).argmax(1) == va.label).mean())
                print(
                    f"windows {len(keep):5d} summary {with_summary!s:5} seed {seed}:"
                    f" test {100 * test_acc:.2f} %"
                    f" val {100 * val_acc:.2f} % alpha {model.alpha:.3g} fit {fit_s:.1f} s"
                    f" predict(test) {predict_s:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
