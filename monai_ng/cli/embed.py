"""``monai-ng embed``: encode the scans of a manifest with a frozen ViT into an embedding store.

Single process::

    monai-ng embed --manifest scans.csv --out store --torchvision-weights vit_b_16.pth --preset brain

Several GPUs / nodes (one process per GPU; scans are sharded across ranks, rank 0 merges)::

    torchrun --nproc_per_node 8 -m monai_ng.cli embed --manifest scans.csv --out store ...

Several nodes: the usual ``torchrun --nnodes N --node_rank R --rdzv_endpoint HOST:PORT ...`` on each node, with
``--out`` on a file system shared by all nodes.

Re-running the same command after an interruption resumes (finished chunks are skipped).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from monai_ng.embedding.encoder import AMP_MODES, NORMALIZATIONS, POOLINGS

__all__ = ["RANDOM_INIT_BANNER", "configure_parser", "run"]

RANDOM_INIT_BANNER = "random-init encoder"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` options to ``parser``."""
    parser.add_argument(
        "--manifest", required=True, help="scan manifest (CSV / parquet / JSON lines), one row per scan"
    )
    parser.add_argument("--out", required=True, help="embedding store folder to create (work files go to OUT.parts)")
    parser.add_argument("--encoder", default="vit_base_patch16_224", help="timm model name (default: %(default)s)")
    parser.add_argument(
        "--weights",
        default="timm",
        help="'timm' (timm's pretrained source, needs network), 'random-init', or a .safetensors/.pth file "
        "(timm or torchvision layout) (default: %(default)s)",
    )
    parser.add_argument(
        "--torchvision-weights",
        default=None,
        help="torchvision vit_b_16 state dict (.pth), converted to timm layout (the paper's encoder); overrides --weights",
    )
    parser.add_argument("--pooling", choices=POOLINGS, default="cls", help="CLS token (paper) or mean of patch tokens")
    parser.add_argument(
        "--channels", type=int, choices=(1, 3), default=1, help="1: one window, RGB-summed patch weights; 3: 3 windows"
    )
    parser.add_argument("--preset", default=None, help="window preset (default: the loader's default for --channels)")
    parser.add_argument("--image-size", type=int, default=None, help="slice size fed to the encoder (default: model's)")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="auto", help="input normalisation")
    parser.add_argument("--batch-size", type=int, default=256, help="slices per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader decoding workers (default: %(default)s)")
    parser.add_argument(
        "--scans-per-shard", type=int, default=32, help="scans per resumable shard (default: %(default)s)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:i (torchrun: cuda:LOCAL_RANK)")
    parser.add_argument(
        "--amp", choices=AMP_MODES, default="bf16", help="autocast dtype on CUDA (default: %(default)s)"
    )
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="store dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random-init encoder")
    parser.add_argument("--keep-work-dir", action="store_true", help="keep OUT.parts after the merge")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the extraction described by ``args``; returns the exit status."""
    from monai_ng.data.scan_manifest import read_scan_manifest
    from monai_ng.embedding.encoder import FrozenSliceEncoder
    from monai_ng.embedding.extraction import ConfigMismatchError, ExtractionConfig, extract_embeddings
    from monai_ng.embedding.stack_loading import make_stack_loader

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_kwargs = {"img_size": args.image_size} if args.image_size else None
    try:
        encoder = FrozenSliceEncoder(
            args.encoder,
            weights=args.weights,
            torchvision_weights=args.torchvision_weights,
            pooling=args.pooling,
            in_chans=args.channels,
            normalization=args.normalization,
            amp=args.amp,
            seed=args.seed,
            model_kwargs=model_kwargs,
        )
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"monai-ng embed: {exc}", file=sys.stderr)
        return 2
    if not encoder.pretrained and int(os.environ.get("RANK", "0")) == 0:
        print(f"WARNING: {RANDOM_INIT_BANNER} ({args.encoder}, seed {args.seed}): no pretrained weights are used")
    try:
        loader = make_stack_loader(preset=args.preset, channels=args.channels, image_size=encoder.img_size)
    except ValueError as exc:
        print(f"monai-ng embed: {exc}", file=sys.stderr)
        return 2
    try:
        config = ExtractionConfig(
            batch_size=args.batch_size,
            workers=args.workers,
            scans_per_shard=args.scans_per_shard,
            device=args.device,
            dtype=args.dtype,
            progress=not args.no_progress,
            keep_work_dir=args.keep_work_dir,
        )
        manifest = read_scan_manifest(args.manifest)
        result = extract_embeddings(manifest, args.out, encoder, loader, loader.describe(), config)
    except ConfigMismatchError as exc:
        print(f"monai-ng embed: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as exc:
        print(f"monai-ng embed: {exc}", file=sys.stderr)
        return 2
    tag = f" [{RANDOM_INIT_BANNER}]" if not encoder.pretrained else ""
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for the whole run
    if result.already_complete:
        print(f"{args.out}: already complete ({result.n_scans} scans, {result.n_slices} slices){tag}")
    else:
        print(
            f"{args.out}: {result.n_scans} scans, {result.n_slices} slices encoded, {result.n_failed} failed, "
            f"{result.n_chunks_skipped} chunk(s) resumed, {result.seconds:.1f} s{tag}"
        )
    return 0
