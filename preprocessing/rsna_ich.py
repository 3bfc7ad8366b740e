"""RSNA Intracranial Hemorrhage Detection 2019 -> scan manifest.

Download layout: a flat folder of single-slice DICOMs (``stage_2_train/ID_<hex>.dcm``) and ``stage_2_train.csv``
with columns ``ID, Label`` and one row per image and subtype (``ID_<hex>_<subtype>``, subtypes ``epidural``,
``intraparenchymal``, ``intraventricular``, ``subarachnoid``, ``subdural``, ``any``). Slices are grouped into
scans by SeriesInstanceUID read from the headers (parallel header-only reads), ordered along the slice normal; the
slice label is the ``any`` subtype, the scan label is 1 when any slice is positive and the split key is the
pseudonymous PatientID header (Flanders et al., Radiology: AI 2020, doi:10.1148/ryai.2020190211).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from monai_ng.data.rsna_schema import ICH_COLUMNS, ICH_CSV, ICH_SUBTYPES
from monai_ng.data.scan_manifest import scan_manifest_row
from preprocessing.rsna_common import (
    RsnaAdapter,
    lookup_slice_labels,
    ordered_series,
    read_dicom_headers,
    report_orphans,
    require_dir,
)

__all__ = ["ADAPTER", "ICH_CSV", "ICH_SUBTYPES", "IchAdapter", "build_ich_manifest", "read_ich_labels"]


def read_ich_labels(csv_path: str | os.PathLike) -> pd.Series:
    """Slice labels (``any`` subtype) from ``stage_2_train.csv``, indexed by image id ``ID_<hex>``.

    Raises:
        ValueError: naming the CSV: wrong columns, malformed ids, unknown subtypes, labels not 0/1, no ``any`` rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: label CSV not found")
    df = pd.read_csv(csv_path, dtype={"ID": str})
    if list(df.columns) != list(ICH_COLUMNS):
        raise ValueError(f"{csv_path}: expected columns {list(ICH_COLUMNS)}, found {list(df.columns)}")
    parts = df["ID"].str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any():
        bad = df["ID"][parts[1].isna()].head(3).tolist() if parts.shape[1] == 2 else df["ID"].head(3).tolist()
        raise ValueError(f"{csv_path}: IDs must look like ID_<image>_<subtype>, got e.g. {bad}")
    unknown = sorted(set(parts[1]) - set(ICH_SUBTYPES))
    if unknown:
        raise ValueError(f"{csv_path}: unknown subtypes {unknown[:5]} (expected {list(ICH_SUBTYPES)})")
    labels = pd.to_numeric(df["Label"], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise ValueError(
            f"{csv_path}: Label must be 0 or 1, got e.g. {df['Label'][~labels.isin([0, 1])].head(3).tolist()}"
        )
    any_rows = parts[1] == "any"
    if not any_rows.any():
        raise ValueError(f"{csv_path}: no '<image>_any' rows; cannot build slice labels")
    # the real file repeats some rows; a slice is positive when any of its rows is
    return labels[any_rows].astype(int).groupby(parts[0][any_rows].to_numpy()).max()


def _image_dir(root: Path) -> Path:
    for name in ("stage_2_train", "stage_2_train_images"):
        if (root / name).is_dir():
            return root / name
    return root


def build_ich_manifest(
    root: str | os.PathLike, workers: int = 1, progress: bool = True
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Build the scan manifest of an RSNA ICH download.

    Args:
        root: folder holding ``stage_2_train.csv`` and the DICOMs (``stage_2_train/`` or anywhere below ``root``).
        workers: header-reading processes.
        progress: show a progress bar.

    Returns:
        ``(manifest, failures)``: one row per scan (schema in :mod:`monai_ng.data.scan_manifest`, without split
        columns) and ``(file or scan, reason)`` rows for unreadable files, slices missing from the CSV (kept with
        label -1), CSV images without a file, and scans that could not be ordered (dropped).
    """
    root = require_dir(Path(root))
    labels = read_ich_labels(root / ICH_CSV)
    headers, failures = read_dicom_headers(_image_dir(root), root, workers, progress)
    label_map = labels.to_dict()
    seen: set[str] = set()
    rows = []
    for uid, ordered, geometry in ordered_series(headers, failures):
        patients = {h.patient_id for h in ordered}
        if len(patients) != 1 or "" in patients:
            failures.append((f"scan {uid}", f"PatientID must be one non-empty value per series, got {len(patients)}"))
            continue
        slice_labels = lookup_slice_labels(ordered, label_map, seen, failures, ICH_CSV, "image id")
        known = [v for v in slice_labels if v >= 0]
        if not known:
            failures.append((f"scan {uid}", f"no slice of the scan is in {ICH_CSV}; scan dropped"))
            continue
        rows.append(
            scan_manifest_row(uid, patients.pop(), int(max(known)), ordered, slice_labels, "ich", geometry.issues)
        )
    report_orphans(label_map, seen, failures, ICH_CSV, "image id")
    return pd.DataFrame(rows), failures


class IchAdapter(RsnaAdapter):
    """``monai-ng ingest --dataset ich``: :func:`build_ich_manifest`."""

    name = "ich"
    description = "RSNA Intracranial Hemorrhage Detection 2019"
    build = staticmethod(build_ich_manifest)


#: The adapter registered under the ``monai_ng.dataset_adapters`` entry point ``ich``.
ADAPTER = IchAdapter()
