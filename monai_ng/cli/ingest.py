"""``monai-ng ingest``: convert a dataset download into a scan manifest (+ ``failures.csv``).

Example::

    monai-ng ingest --dataset ich --root /data/rsna-ich --out manifests/ich.csv --workers 8

The datasets are the adapters registered under the Python entry-point group ``monai_ng.dataset_adapters``
(:mod:`monai_ng.data.dataset_adapter`): ``ich``, ``pe`` and ``abdominal`` from this repository's ``preprocessing``
package, plus any a site installs (see ``docs/ingest.md``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pandas as pd

from monai_ng.data.dataset_adapter import ADAPTER_ENTRY_POINT_GROUP, DatasetAdapter
from monai_ng.data.scan_manifest import pseudonymize_patient_ids, read_pseudonym_key, write_scan_manifest
from monai_ng.data.splits import PAPER_SEEDS, add_split_columns

__all__ = ["adapter_entry_points", "configure_parser", "ingest", "load_dataset_adapter", "run", "write_failures"]


def adapter_entry_points() -> dict[str, EntryPoint]:
    """The registered dataset adapters' entry points by dataset name (nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=ADAPTER_ENTRY_POINT_GROUP)}


def load_dataset_adapter(name: str) -> DatasetAdapter:
    """Import the adapter registered as ``name``.

    Raises:
        ValueError: naming the entry-point group when ``name`` is not registered, or the entry point and the cause
            when it cannot be imported or is not a :class:`~monai_ng.data.dataset_adapter.DatasetAdapter`.
    """
    registered = adapter_entry_points()
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none"
        raise ValueError(
            f"no dataset adapter {name!r} in the entry-point group {ADAPTER_ENTRY_POINT_GROUP!r} (registered: "
            f"{known}); install the package that provides it (`pip install -e .` registers ich, pe, abdominal and folder)"
        )
    ep = registered[name]
    try:
        adapter = ep.load()
    except Exception as exc:  # any import-time failure of an adapter module
        raise ValueError(
            f"dataset adapter {name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(adapter, type):
        adapter = adapter()
    if not isinstance(adapter, DatasetAdapter):
        raise ValueError(
            f"dataset adapter {name!r} ({ep.value}) is a {type(adapter).__name__}, not a "
            "monai_ng.data.dataset_adapter.DatasetAdapter"
        )
    return adapter


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``ingest`` options (and every loadable adapter's own options) to ``parser``."""
    names = sorted(adapter_entry_points())
    parser.add_argument(
        "--dataset",
        required=True,
        choices=names,
        help=f"which dataset the root holds (registered adapters: {', '.join(names) or 'none'})",
    )
    parser.add_argument("--root", required=True, type=Path, help="download folder (CSV files + images)")
    parser.add_argument("--out", required=True, type=Path, help="manifest path (.csv with JSON lists, or .parquet)")
    parser.add_argument("--workers", type=int, default=1, help="processes for header reading (default 1)")
    for name in names:
        try:
            load_dataset_adapter(name).add_arguments(parser)
        except ValueError:
            continue  # reported when that dataset is chosen
    parser.add_argument(
        "--failures", type=Path, default=None, help="failures CSV (default: failures.csv next to --out)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=list(PAPER_SEEDS), help="split seeds (default 1001 2001 3001)"
    )
    parser.add_argument(
        "--pseudonymize-key-file",
        type=Path,
        default=None,
        metavar="KEYFILE",
        help="replace patient_id by HMAC-SHA256(key, patient_id) with the secret key in KEYFILE (>= 16 bytes; see "
        "docs/reliability.md); splits are drawn on the original ids first, so they do not change",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def write_failures(failures: list[tuple[str, str]], path: str | os.PathLike) -> Path:
    """Write ``failures.csv`` with columns ``item`` (file or scan) and ``reason``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(failures, columns=["item", "reason"]).to_csv(path, index=False)
    return path


def ingest(
    dataset: str | DatasetAdapter,
    root: Path,
    out: Path,
    workers: int = 1,
    failures_path: Path | None = None,
    seeds: Sequence[int] = PAPER_SEEDS,
    progress: bool = True,
    pseudonym_key: bytes | None = None,
    **options: Any,
) -> tuple[Path, Path, int, int]:
    """Build, split and write a scan manifest with a dataset adapter.

    Args:
        dataset: a registered adapter's name (``ich``, ``pe``, ``abdominal``, ...) or an adapter.
        root: the download folder.
        out: manifest path (``.csv`` or ``.parquet``).
        workers: header-reading processes.
        failures_path: failures CSV (default: ``failures.csv`` next to ``out``).
        seeds: split seeds; one ``split_<seed>`` column each (none when empty).
        progress: show a progress bar.
        pseudonym_key: when given, ``patient_id`` is written as a keyed hash
            (:func:`~monai_ng.data.scan_manifest.pseudonymize_patient_ids`), after the splits are drawn.
        options: adapter-specific options (e.g. ``target`` of ``abdominal``).

    Returns:
        ``(manifest path, failures path, n scans, n failures)``.

    Raises:
        ValueError: unknown or broken adapter, ``workers < 1``, or no scan could be ingested.
    """
    adapter = dataset if isinstance(dataset, DatasetAdapter) else load_dataset_adapter(dataset)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    manifest, failures = adapter.build_manifest(root, workers=workers, progress=progress, **options)
    failures_path = failures_path or out.parent / "failures.csv"
    write_failures(failures, failures_path)
    if manifest.empty:
        raise ValueError(f"{root}: no scan could be ingested; see {failures_path}")
    if seeds:
        manifest = add_split_columns(manifest, seeds)
    if pseudonym_key is not None:
        manifest = pseudonymize_patient_ids(manifest, pseudonym_key)
    write_scan_manifest(manifest, out)
    return out, failures_path, len(manifest), len(failures)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns 0 on success (failures are recorded, not fatal), 2 on a fatal input error."""
    try:
        adapter = load_dataset_adapter(args.dataset)
        key = None if args.pseudonymize_key_file is None else read_pseudonym_key(args.pseudonymize_key_file)
        out, failures_path, n_scans, n_failures = ingest(
            adapter,
            args.root,
            args.out,
            workers=args.workers,
            failures_path=args.failures,
            seeds=args.seeds,
            progress=not args.no_progress,
            pseudonym_key=key,
            **adapter.options(args),
        )
    except ValueError as exc:
        print(f"monai-ng ingest: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n_scans} scans to {out}; {n_failures} failure(s) recorded in {failures_path}")
    return 0
