"""Per-bag localization AUROC: the hand-written rank formula against scikit-learn's ``roc_auc_score``, same bags.

:class:`monai_ng.metrics.LocalizationAUROC` scores every positive bag separately; scikit-learn's input validation
dominates the cost of such small calls, so :func:`monai_ng.metrics.binary_auroc` computes the same value (tested to
1e-12) from average ranks. This times :func:`monai_ng.metrics.per_bag_localization` over the same bags with each.

    python3 benchmarks/bench_metrics.py                 # 1,000 positive bags of 35 slices, best of 5
    python3 benchmarks/bench_metrics.py --bags 200 --slices 60
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_ng.metrics import binary_auroc, per_bag_localization  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=1000, help="positive bags")
    parser.add_argument("--slices", type=int, default=35, help="slices per bag")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is reported)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    bags = [(rng.random(args.slices), (rng.random(args.slices) < 0.3).astype(np.int64), 1) for _ in range(args.bags)]
    print(f"{args.bags} bags x {args.slices} slices, best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    times = {}
    for name, score in (("scikit-learn roc_auc_score", roc_auc_score), ("binary_auroc", binary_auroc)):
        times[name] = min(timeit.repeat(lambda s=score: per_bag_localization(bags, s), number=1, repeat=args.repeats))
        print(f"{name:28s} {1e6 * times[name] / args.bags:8.1f} us per bag")
    print(f"speed-up: {times['scikit-learn roc_auc_score'] / times['binary_auroc']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
