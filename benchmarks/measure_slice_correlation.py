"""Lag-1 autocorrelation of slice embeddings along the slice axis (issue 10 §2): phantom CT vs the synthetic generators.

The statistic: for each scan and each feature f, the Pearson correlation of ``x[j, f]`` and ``x[j + 1, f]`` over
``j = 1 .. S-1`` (so the scan's own mean is removed); the mean over features (constant features skipped) and then
over scans. Pearson on a short series is biased low by about ``-1 / S``, so the numbers of short head-sized scans
are slightly conservative.

Three data sets are measured:

* phantom head CT (``monai_ng.data.phantom.write_rsna_ich``, RSNA ICH layout) -> ``monai-ng ingest`` ->
  ``monai-ng embed`` with a random-init ``vit_tiny_patch16_224`` (CLS token), as the bundle tests use. This is the
  project's own pipeline end to end, but a random-init encoder on phantoms is one data point only; a pretrained ViT
  on real CT is expected to give higher correlation (expected, not measured here).
* the ``ct_like`` generator at its defaults (i.i.d. noise).
* the ``ct_regime`` generator at its head preset (AR(rho) nuisance), as a check of the generator.

Usage::

    python3 benchmarks/measure_slice_correlation.py            # 24 phantom scans of 28-40 slices, 64 x 64
    python3 benchmarks/measure_slice_correlation.py --scans 8  # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def lag1_autocorrelation(bags: Iterable[np.ndarray]) -> tuple[float, float, int]:
    """Mean (over scans) of the mean (over non-constant features) lag-1 Pearson correlation; also its sd and count."""
    per_scan = []
    for x in bags:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < 3:
            continue
        a, b = x[:-1] - x[:-1].mean(axis=0), x[1:] - x[1:].mean(axis=0)
        den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
        ok = den > 1e-12
        if ok.any():
            per_scan.append(float(((a * b).sum(axis=0)[ok] / den[ok]).mean()))
    v = np.asarray(per_scan)
    return float(v.mean()), float(v.std()), int(v.size)


def _phantom_store(work: Path, n_scans: int, size: int, slices: tuple[int, int], seed: int):
    from monai_ng.cli import main as cli_main
    from monai_ng.data.embedding_store import EmbeddingStore
    from monai_ng.data.phantom import write_rsna_ich

    root, manifest, store = work / "ich", work / "manifest.csv", work / "store"
    write_rsna_ich(root, n_scans=n_scans, seed=seed, size=size, slices=slices)
    rc = cli_main(["ingest", "--dataset", "ich", "--root", str(root), "--out", str(manifest), "--no-progress"])
    if rc:
        raise RuntimeError(f"monai-ng ingest failed ({rc})")
    embed = ["embed", "--manifest", str(manifest), "--out", str(store), "--encoder", "vit_tiny_patch16_224"]
    embed += ["--weights", "random-init", "--image-size", str(size), "--device", "cpu", "--workers", "0"]
    embed += ["--seed", str(seed), "--no-progress"]
    rc = cli_main(embed)
    if rc:
        raise RuntimeError(f"monai-ng embed failed ({rc})")
    return EmbeddingStore(store)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=24, help="phantom head scans (default 24)")
    parser.add_argument("--size", type=int, default=64, help="phantom in-plane pixels = encoder input (default 64)")
    parser.add_argument("--slices", type=int, nargs=2, default=(28, 40), help="phantom slices per scan, MIN MAX")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bags", type=int, default=300, help="synthetic bags per generator (default 300)")
    args = parser.parse_args(argv)

    from monai_ng.data.synthetic import generate_synthetic

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slice_corr_") as tmp:
        store = _phantom_store(Path(tmp), args.scans, args.size, tuple(args.slices), args.seed)
        bags = [np.asarray(store.bag(i).embeddings) for i in range(len(store))]
        m, s, n = lag1_autocorrelation(bags)
        lens = [b.shape[0] for b in bags]
        print(
            f"phantom head CT -> random-init vit_tiny ({store.dim}-d CLS): lag-1 autocorrelation {m:.3f} "
            f"(sd over scans {s:.3f}, {n} scans, {min(lens)}-{max(lens)} slices)"
        )
    for kind, kw in (("ct_like", {}), ("ct_regime", {"region": "head"})):
        data = generate_synthetic(kind, args.bags, args.seed, **kw)
        m, s, n = lag1_autocorrelation(data.bag(i)[0] for i in range(len(data)))
        rho = getattr(data.params, "noise_ar", 0.0)
        print(
            f"synthetic {kind} {kw or '(defaults)'} (noise_ar={rho}): lag-1 autocorrelation {m:.3f} (sd {s:.3f}, {n} bags)"
        )
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
