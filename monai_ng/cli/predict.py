"""``monai-ng predict``: per-scan probabilities and per-slice attention from a saved MIL checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torch.utils.data import DataLoader

from monai_ng.data.bag_dataset import BagDataset, collate_bags
from monai_ng.data.embedding_store import EmbeddingStore, StoreError
from monai_ng.engines.evaluation import evaluate_mil
from monai_ng.networks.checkpoint import load_mil_checkpoint

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options to ``parser``."""
    parser.add_argument("--data", type=Path, required=True, help="embedding store folder")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="MIL checkpoint: .safetensors (monai-ng experiment) or .pt with its .json (training's best_model.pt)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    """Score every scan of ``--data``; writes ``scan_scores.csv``, ``slice_scores.csv`` and ``metrics.json``."""
    try:
        store = EmbeddingStore(args.data)
        network, meta = load_mil_checkpoint(args.checkpoint)
    except (StoreError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if store.dim != int(meta["in_features"]):
        print(
            f"error: {args.checkpoint} expects {meta['in_features']}-d embeddings but {args.data} holds {store.dim}-d",
            file=sys.stderr,
        )
        return 1
    loader = DataLoader(BagDataset(store), batch_size=args.batch_size, collate_fn=collate_bags)
    metrics, scans, slices = evaluate_mil(network, loader, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    scans.to_csv(args.out / "scan_scores.csv", index=False)
    slices.to_csv(args.out / "slice_scores.csv", index=False)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"{len(scans)} scans, {len(slices)} slices scored; written to {args.out}")
    return 0
