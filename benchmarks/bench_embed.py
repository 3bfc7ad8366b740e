"""End-to-end embedding extraction slices/s against the bare encoder forward on the same batch shapes, in one run.

End to end = :func:`monai_ng.embedding.extract_embeddings` on phantom DICOM series written to disk
(``monai_ng.data.phantom``): DataLoader workers decode DICOM, window and resize, the main process encodes, shards
are written and merged into the store. Bare = the same encoder called on in-memory random tensors with exactly the
batch shapes the end-to-end run used. Target (issue 4): end-to-end >= 0.9 x bare on CPU with a small ViT.

    python3 benchmarks/bench_embed.py                        # vit_tiny_patch16_224, random init, CPU
    python3 benchmarks/bench_embed.py --encoder vit_base_patch16_224 --device cuda --amp bf16 --batch-size 512 \\
        --scans 64 --slices 64 --size 512 --workers 8        # the GPU target (>= 5,000 slices/s on one H100)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine_info import cpu_model  # noqa: E402

from monai_ng.data.phantom import make_phantom_volume, write_dicom_series  # noqa: E402
from monai_ng.data.scan_manifest import read_scan_manifest, scan_manifest_row, write_scan_manifest  # noqa: E402
from monai_ng.embedding.encoder import FrozenSliceEncoder  # noqa: E402
from monai_ng.embedding.extraction import ExtractionConfig, extract_embeddings  # noqa: E402
from monai_ng.embedding.stack_loading import CTSliceStackLoader  # noqa: E402


def write_phantom_manifest(root: Path, scans: int, slices: int, size: int) -> Path:
    rows = []
    for i in range(scans):
        vol = make_phantom_volume("head", n_slices=slices, size=size, lesion=bool(i % 2), seed=i)
        recs = write_dicom_series(vol, root / f"s{i}", patient_id=f"P{i}", seed=i)
        rows.append(
            scan_manifest_row(f"scan{i}", f"P{i}", vol.label, recs, vol.lesion_slices.astype(int).tolist(), "ich")
        )
    return write_scan_manifest(pd.DataFrame(rows), root / "manifest.csv")


class ShapeRecorder:
    """Records the input shapes the encoder sees (a forward pre-hook)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, module, args) -> None:
        self.shapes.append(tuple(args[0].shape))


def bare_forward(encoder: FrozenSliceEncoder, shapes: list[tuple[int, ...]], device: torch.device) -> float:
    """Seconds to run the encoder on fresh tensors of ``shapes`` (inputs made beforehand, not timed)."""
    inputs = [torch.rand(s) for s in shapes]
    if device.type == "cuda":
        inputs = [x.to(device) for x in inputs]
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x in inputs:
        out = encoder(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    del out
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_tiny_patch16_224")
    parser.add_argument("--scans", type=int, default=32)
    parser.add_argument("--slices", type=int, default=32, help="slices per scan")
    parser.add_argument("--size", type=int, default=256, help="phantom in-plane size (resized to 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scans-per-shard", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    root = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        t0 = time.perf_counter()
        manifest = read_scan_manifest(write_phantom_manifest(root, args.scans, args.slices, args.size))
        print(
            f"wrote {args.scans} x {args.slices} phantom DICOM slices ({args.size}^2) in {time.perf_counter() - t0:.1f} s"
        )
        encoder = FrozenSliceEncoder(args.encoder, weights="random-init", in_chans=1, amp=args.amp).to(device)
        if device.type == "cuda":
            encoder.to_channels_last()
        loader = CTSliceStackLoader("brain", channels=1, image_size=encoder.img_size)
        cfg = ExtractionConfig(
            batch_size=args.batch_size,
            workers=args.workers,
            scans_per_shard=args.scans_per_shard,
            device=args.device,
            progress=False,
        )
        bare_forward(encoder, [(min(args.batch_size, 8), 1, *encoder.img_size)], device)  # warm-up
        n_slices = args.scans * args.slices
        e2e_times: list[float] = []
        bare_times: list[float] = []
        recorder = ShapeRecorder()

        def end_to_end(rep: int) -> None:
            recorder.shapes = []
            handle = encoder.register_forward_pre_hook(recorder)
            out = root / f"store{rep}"
            start = time.perf_counter()
            result = extract_embeddings(manifest, out, encoder, loader, loader.describe(), cfg)
            e2e_times.append(time.perf_counter() - start)
            handle.remove()
            assert result.n_slices == n_slices and result.n_failed == 0, result
            shutil.rmtree(out)

        end_to_end(-1)  # also records the batch shapes for the first bare run
        e2e_times.clear()
        for rep in range(args.repeats):
            # alternate the order so that a drift in machine load does not favour one side
            if rep % 2 == 0:
                end_to_end(rep)
                bare_times.append(bare_forward(encoder, recorder.shapes, device))
            else:
                bare_times.append(bare_forward(encoder, recorder.shapes, device))
                end_to_end(rep)
            print(
                f"repeat {rep}: end-to-end {n_slices / e2e_times[-1]:.1f} slices/s, "
                f"bare forward {n_slices / bare_times[-1]:.1f} slices/s, ratio {bare_times[-1] / e2e_times[-1]:.3f}"
            )
        e2e, bare = statistics.median(e2e_times), statistics.median(bare_times)
        shapes = recorder.shapes
        batch_sizes = sorted({s[0] for s in shapes})
        ratios = [b / e for b, e in zip(bare_times, e2e_times, strict=True)]
        print(
            f"\nmachine: {os.cpu_count()} CPU(s), {cpu_model()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads, device {device}"
        )
        print(
            f"encoder {args.encoder} (random-init encoder), batch {args.batch_size}, workers {args.workers}, "
            f"{len(shapes)} forwards per run (batch sizes {batch_sizes})"
        )
        print(f"median end-to-end: {n_slices / e2e:.1f} slices/s")
        print(f"median bare forward: {n_slices / bare:.1f} slices/s")
        print(
            f"end-to-end / bare: {bare / e2e:.3f} of medians, median of per-repeat ratios "
            f"{statistics.median(ratios):.3f} (target >= 0.9)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
