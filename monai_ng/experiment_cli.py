"""``monai-ng experiment`` and ``monai-ng demo``: run the method comparison on an embedding store.

``demo`` writes a small synthetic CT-like store (so it needs no data) and runs a reduced grid on it; ``experiment`` runs
on any store (``--data``), e.g. one written by ``monai-ng embed`` or ``monai-ng synthetic``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from monai_ng.data.embedding_store import StoreError
from monai_ng.experiment import ExperimentConfig, default_methods, run_experiment

__all__ = ["configure_parser_for", "run_for"]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def configure_parser_for(command: str, parser: argparse.ArgumentParser) -> None:
    """Arguments of ``monai-ng experiment`` / ``monai-ng demo``."""
    demo = command == "demo"
    if demo:
        parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
        parser.add_argument("--n-bags", type=int, default=400, help="synthetic scans to generate")
        parser.add_argument("--kind", default="ct_like", choices=["ct_like", "multi_lesion", "shifted_mean"])
        parser.add_argument("--dim", type=int, default=64, help="synthetic embedding width")
    else:
        parser.add_argument("--data", type=Path, required=True, help="embedding store folder")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--methods", default=None, help="comma-separated method names (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the method names and exit")
    parser.add_argument("--lrs", type=_floats, default=[1e-2, 1e-1] if not demo else [1e-1])
    parser.add_argument("--ng-weights", type=_floats, default=[1.0] if demo else [0.1, 1.0, 10.0])
    parser.add_argument("--l1-weights", type=_floats, default=[0.0] if demo else [0.0, 1e-4])
    parser.add_argument("--epochs", type=int, default=40 if demo else 60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--seeds",
        type=_ints,
        default=[1001, 2001, 3001],
        help="split seeds (paper: 1001,2001,3001)",
    )
    parser.add_argument("--transmil-dim", type=int, default=128, help="TransMIL token width")
    parser.add_argument(
        "--train-above-val", action="store_true", help="select only epochs whose train AUROC exceeds val AUROC"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (1 is fastest on a busy 2-core machine)"
    )


def run_for(command: str, args: argparse.Namespace) -> int:
    """Run the demo or the experiment; prints the results table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("ignite", "monai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.threads is not None:
        if args.threads < 1:
            print("--threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    methods = default_methods(transmil_dim=args.transmil_dim)
    if args.list:
        print("\n".join(m.name for m in methods))
        return 0
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        known = {m.name: m for m in methods}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            print(f"unknown method(s) {unknown}; known: {list(known)}", file=sys.stderr)
            return 2
        methods = [known[w] for w in wanted]
    if args.epochs < 1 or args.batch_size < 1:
        print("--epochs and --batch-size must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    if command == "demo":
        from monai_ng.data.synthetic import write_synthetic_store

        data = out / "data"
        if not (data / "store.json").is_file():
            print(f"writing a synthetic {args.kind} store with {args.n_bags} scans to {data}")
            write_synthetic_store(args.kind, data, n_bags=args.n_bags, seed=0, dim=args.dim, overwrite=True)
    else:
        data = args.data
    cfg = ExperimentConfig(
        lrs=args.lrs,
        ng_weights=args.ng_weights,
        l1_weights=args.l1_weights,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        seeds=args.seeds,
        require_train_above_val=args.train_above_val,
        device=args.device,
        num_workers=args.workers,
    )
    t0 = time.perf_counter()
    try:
        results = run_experiment(data, out, methods, cfg)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((out / "results.md").read_text())
    print(f"{len(results)} method x split results in {time.perf_counter() - t0:.0f} s; written to {out}")
    return 0
