"""``monai-ng import-embeddings``: validate a flat embedding folder (the interchange layout) and make it a store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_ng.data.embedding_store import StoreError, import_flat_layout

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``import-embeddings`` options to ``parser``."""
    parser.add_argument("source", type=Path, help="folder with embeddings.npy, manifest.csv [, slice_labels.npy]")
    parser.add_argument(
        "--dest", type=Path, default=None, help="copy into this new folder (default: annotate in place)"
    )
    parser.add_argument("--encoder", default=None, help="encoder name to record in store.json")
    parser.add_argument("--preprocessing", default=None, help="preprocessing preset to record in store.json")
    parser.add_argument("--skip-finite-check", action="store_true", help="do not scan the embeddings for NaN/inf")


def run(args: argparse.Namespace) -> int:
    """Validate (and copy) the folder; prints the store and its metadata. Returns 0, or 1 when invalid."""
    metadata: dict = {}
    if args.encoder:
        metadata["encoder"] = {"name": args.encoder}
    if args.preprocessing:
        metadata["preprocessing"] = {"preset": args.preprocessing}
    try:
        store = import_flat_layout(args.source, args.dest, metadata, check_finite=not args.skip_finite_check)
    except (StoreError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(repr(store))
    print(json.dumps(store.metadata, indent=2, sort_keys=True))
    return 0
