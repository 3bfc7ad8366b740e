"""``monai-ng ingest``: convert an RSNA challenge download into a scan manifest (+ ``failures.csv``).

Example::

    monai-ng ingest --dataset ich --root /data/rsna-ich --out manifests/ich.csv --workers 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_ng.data.splits import PAPER_SEEDS, add_split_columns
from preprocessing.manifest import write_failures, write_manifest

__all__ = ["configure_parser", "ingest", "run"]

DATASETS = ("ich", "pe", "abdominal")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``ingest`` options to ``parser``."""
    from preprocessing.rsna_abdominal import ABDOMINAL_TARGETS

    parser.add_argument("--dataset", required=True, choices=DATASETS, help="which RSNA challenge the root holds")
    parser.add_argument("--root", required=True, type=Path, help="download folder (CSV files + images)")
    parser.add_argument("--out", required=True, type=Path, help="manifest path (.csv with JSON lists, or .parquet)")
    parser.add_argument("--workers", type=int, default=1, help="processes for header reading (default 1)")
    parser.add_argument(
        "--target",
        default="bowel_or_extravasation",
        choices=ABDOMINAL_TARGETS,
        help="abdominal only: label to build (only bowel / extravasation have slice-level truth)",
    )
    parser.add_argument(
        "--failures", type=Path, default=None, help="failures CSV (default: failures.csv next to --out)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=list(PAPER_SEEDS), help="split seeds (default 1001 2001 3001)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def ingest(
    dataset: str,
    root: Path,
    out: Path,
    workers: int = 1,
    target: str = "bowel_or_extravasation",
    failures_path: Path | None = None,
    seeds: list[int] | tuple[int, ...] = PAPER_SEEDS,
    progress: bool = True,
) -> tuple[Path, Path, int, int]:
    """Build, split and write a manifest; returns ``(manifest path, failures path, n scans, n failures)``."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if dataset == "ich":
        from preprocessing.rsna_ich import build_ich_manifest

        manifest, failures = build_ich_manifest(root, workers=workers, progress=progress)
    elif dataset == "pe":
        from preprocessing.rsna_pe import build_pe_manifest

        manifest, failures = build_pe_manifest(root, workers=workers, progress=progress)
    else:
        from preprocessing.rsna_abdominal import build_abdominal_manifest

        manifest, failures = build_abdominal_manifest(root, workers=workers, progress=progress, target=target)
    failures_path = failures_path or out.parent / "failures.csv"
    write_failures(failures, failures_path)
    if manifest.empty:
        raise ValueError(f"{root}: no scan could be ingested; see {failures_path}")
    if seeds:
        manifest = add_split_columns(manifest, seeds)
    write_manifest(manifest, out)
    return out, failures_path, len(manifest), len(failures)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns 0 on success (failures are recorded, not fatal), 2 on a fatal input error."""
    try:
        out, failures_path, n_scans, n_failures = ingest(
            args.dataset,
            args.root,
            args.out,
            workers=args.workers,
            target=args.target,
            failures_path=args.failures,
            seeds=args.seeds,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"monai-ng ingest: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n_scans} scans to {out}; {n_failures} failure(s) recorded in {failures_path}")
    return 0
