"""Ingest benchmark: uncompressed 512 x 512 DICOM series -> windowed 3 x 224 x 224 slice stack, slices/s.

Two chains run on the same phantom series, interleaved (A B A B ...) so that load from other processes on a shared
machine hits both alike; the reported speed-up is the median of the per-round ratios:

* ours:  ``LoadCTSeries`` -> ``CTSliceStack(224)`` -> ``CTWindows("chest", channel_dim=1)`` -> ``[N, 3, 224, 224]``
* stock: MONAI ``LoadImaged(reader="PydicomReader", ensure_channel_first=True)`` -> ``ScaleIntensityRanged``
  (one window, PE 100/700) -> ``Resized((224, 224, -1))`` -> ``[1, 224, 224, N]`` (one channel: less work than ours)

Both run single-threaded in one process (``torch.set_num_threads(1)``), so slices/s is per core; wall and process
CPU time are both reported (on a shared machine the wall time also counts the time other jobs held the core). The
header scan (``scan_headers``, the ICH adapter's first pass) is timed on a phantom RSNA ICH folder, files/s.

Usage::

    python3 benchmarks/bench_ingest.py [--slices 64] [--size 512] [--rounds 7] [--workers 1] [--append-doc]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from monai.transforms import Compose, LoadImaged, Resized, ScaleIntensityRanged  # noqa: E402

from monai_ng.data.phantom import make_phantom_volume, write_dicom_series, write_rsna_ich  # noqa: E402
from monai_ng.io import scan_headers  # noqa: E402
from monai_ng.transforms import CTSliceStack, CTWindows, LoadCTSeries  # noqa: E402


def build_chains(size: int, stages: dict[str, list[float]]):
    """Return (ours, stock) callables taking the series folder and returning the final tensor.

    ``ours`` appends its load time and its stack + window time to ``stages["load"]`` / ``stages["transforms"]``.
    """
    loader = LoadCTSeries(on_geometry_issue="ignore")
    stack = CTSliceStack(spatial_size=size)
    windows = CTWindows("chest", channel_dim=1)

    def ours(folder: str) -> torch.Tensor:
        t0 = time.perf_counter()
        volume = loader(folder)
        t1 = time.perf_counter()
        out = windows(stack(volume))
        t2 = time.perf_counter()
        stages["load"].append(t1 - t0)
        stages["transforms"].append(t2 - t1)
        return out

    stock_chain = Compose(
        [
            LoadImaged("image", reader="PydicomReader", ensure_channel_first=True, image_only=True),
            ScaleIntensityRanged("image", a_min=-250.0, a_max=450.0, b_min=0.0, b_max=1.0, clip=True),
            Resized("image", spatial_size=(size, size, -1), mode="trilinear"),
        ]
    )

    def stock(folder: str) -> torch.Tensor:
        return stock_chain({"image": folder})["image"]

    return ours, stock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="in-plane pixels of the phantom series")
    parser.add_argument("--out-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved A/B rounds (after one warm-up)")
    parser.add_argument("--ich-scans", type=int, default=40, help="phantom ICH scans for the header scan")
    parser.add_argument("--workers", type=int, default=1, help="processes for the header scan")
    parser.add_argument("--append-doc", action="store_true", help="append a '## Ingest' section to docs/performance.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        folder = Path(tmp) / "series"
        vol = make_phantom_volume("chest", args.slices, size=args.size, seed=0)
        write_dicom_series(vol, folder, patient_id="BENCH0001", seed=0)
        stages: dict[str, list[float]] = {"load": [], "transforms": []}
        ours, stock = build_chains(args.out_size, stages)

        a, b = ours(str(folder)), stock(str(folder))  # warm-up (imports, page cache) + shape check
        assert tuple(a.shape) == (args.slices, 3, args.out_size, args.out_size), a.shape
        assert tuple(b.shape) == (1, args.out_size, args.out_size, args.slices), b.shape
        # both chains see the same HU: our PE channel equals the stock output up to interpolation order
        diff = float((a[:, 0] - b[0].permute(2, 1, 0)).abs().max())
        mean_diff = float((a[:, 0] - b[0].permute(2, 1, 0)).abs().mean())

        t_ours, t_stock, ratios, cpu_ours, cpu_stock = [], [], [], [], []
        stages["load"].clear()
        stages["transforms"].clear()
        for _ in range(args.rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            ours(str(folder))
            c1, t1 = time.process_time(), time.perf_counter()
            stock(str(folder))
            c2, t2 = time.process_time(), time.perf_counter()
            t_ours.append(t1 - t0)
            t_stock.append(t2 - t1)
            cpu_ours.append(c1 - c0)
            cpu_stock.append(c2 - c1)
            ratios.append((t2 - t1) / (t1 - t0))

        ich = Path(tmp) / "ich"
        truth = write_rsna_ich(ich, n_scans=args.ich_scans, seed=0, size=256)
        n_files = int(truth["n_slices"].sum())
        scan_headers(ich / "stage_2_train", workers=args.workers, progress=False)  # warm page cache
        scans = [scan_headers(ich / "stage_2_train", workers=args.workers, progress=False) for _ in range(3)]
        files_per_s = statistics.median(s.files_per_second for s in scans)

    n = args.slices
    ours_sps = n / statistics.median(t_ours)
    stock_sps = n / statistics.median(t_stock)
    ratio = statistics.median(ratios)
    command = "python3 " + " ".join(shlex.quote(x) for x in [f"benchmarks/{Path(__file__).name}", *sys.argv[1:]])
    lines = [
        "## Ingest",
        "",
        f"Machine: {cpu_model()}, `nproc` = {os.cpu_count()} (shared with other jobs during the run); "
        f"torch {torch.__version__}, 1 thread. Command: `{command}`.",
        "",
        f"Series: phantom chest CT, {n} slices of {args.size} x {args.size}, uncompressed (explicit VR LE), "
        f"-> [{n}, 3, {args.out_size}, {args.out_size}] float32 (ours) / [1, {args.out_size}, {args.out_size}, {n}] "
        f"(stock, one window). {args.rounds} interleaved rounds after a warm-up; medians.",
        "",
        "| chain | median s / series | slices/s (1 core) | median CPU s / series | slices per CPU s |",
        "|---|---|---|---|---|",
        f"| ours: LoadCTSeries + CTSliceStack + CTWindows (3 windows) | {statistics.median(t_ours):.3f} | "
        f"{ours_sps:.0f} | {statistics.median(cpu_ours):.3f} | {n / statistics.median(cpu_ours):.0f} |",
        f"| stock MONAI: LoadImaged(PydicomReader) + ScaleIntensityRanged + Resized (1 window) | "
        f"{statistics.median(t_stock):.3f} | {stock_sps:.0f} | {statistics.median(cpu_stock):.3f} | "
        f"{n / statistics.median(cpu_stock):.0f} |",
        "",
        "(Wall time is what a single-threaded worker sees on this machine; CPU time (`time.process_time`, the "
        "process's own user + system time) leaves out the time other jobs held the cores.)",
        "",
        f"Speed-up (median of per-round stock/ours ratios): **{ratio:.2f}x** (target >= 1.5x); per-round ratios: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f". Ours: {ours_sps:.0f} slices/s per core end to end (target >= 400); split: loading (`LoadCTSeries`) "
        f"{n / statistics.median(stages['load']):.0f} slices/s, stack + windows "
        f"{n / statistics.median(stages['transforms']):.0f} slices/s.",
        "",
        f"Max |ours PE channel - stock| = {diff:.2f}, mean {mean_diff:.4f}: ours resizes HU then windows (3 channels at "
        f"{args.out_size}^2 instead of at {args.size}^2), the stock chain windows then resizes, so the two differ "
        "only where a bilinear sample mixes values on both sides of a window edge.",
        "",
        f"Header scan (`scan_headers`, {args.workers} worker(s)) of a phantom RSNA ICH folder "
        f"({n_files} files, 256 x 256): **{files_per_s:.0f} files/s** (median of 3, warm page cache).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append_doc:
        doc = REPO / "docs" / "performance.md"
        block = text if doc.exists() else "# Performance\n\n" + text
        with open(doc, "a", encoding="utf-8") as fh:  # one write; other agents may append their own sections
            fh.write(("\n" if doc.exists() and doc.stat().st_size else "") + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
