"""RSNA STR Pulmonary Embolism Detection 2020 -> scan manifest.

Download layout: ``train/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` and ``train.csv`` (one row
per image: ``StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, pe_present_on_image, negative_exam_for_pe, ...``).
A scan is a series; slices are ordered along the slice normal (the paper's code used InstanceNumber, position is
safer); the slice label is ``pe_present_on_image``; the scan label is ``1 - negative_exam_for_pe``, which equals "any
slice positive" except for indeterminate exams (``indeterminate = 1``: no PE image, not negative), which are dropped
and recorded. The split key is the study (Colak et al., Radiology: AI 2021, doi:10.1148/ryai.2021200254).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from monai_ng.data.rsna_schema import PE_CSV, PE_REQUIRED_COLUMNS
from monai_ng.data.scan_manifest import scan_manifest_row
from preprocessing.rsna_common import (
    RsnaAdapter,
    lookup_slice_labels,
    ordered_series,
    read_dicom_headers,
    report_orphans,
    require_dir,
)

__all__ = ["ADAPTER", "PE_CSV", "PE_REQUIRED_COLUMNS", "PeAdapter", "build_pe_manifest", "read_pe_labels"]


def read_pe_labels(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read ``train.csv`` indexed by SOPInstanceUID.

    Raises:
        ValueError: naming the CSV: missing columns, duplicated SOPInstanceUIDs, labels not 0/1.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: label CSV not found")
    df = pd.read_csv(csv_path, dtype={c: str for c in PE_REQUIRED_COLUMNS[:3]})
    missing = [c for c in PE_REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing} (found {list(df.columns)})")
    dup = df["SOPInstanceUID"][df["SOPInstanceUID"].duplicated()].head(3).tolist()
    if dup:
        raise ValueError(f"{csv_path}: duplicated SOPInstanceUID {dup}")
    for c in ("pe_present_on_image", "negative_exam_for_pe") + (("indeterminate",) if "indeterminate" in df else ()):
        if not df[c].isin([0, 1]).all():
            raise ValueError(
                f"{csv_path}: column {c} must be 0 or 1, got e.g. {df[c][~df[c].isin([0, 1])].head(3).tolist()}"
            )
    return df.set_index("SOPInstanceUID")


def build_pe_manifest(
    root: str | os.PathLike, workers: int = 1, progress: bool = True
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Build the scan manifest of an RSNA PE download: ``root`` holds ``train.csv`` and ``train/``; ``workers``,
    ``progress`` and the returned ``(manifest, failures)`` as for :func:`preprocessing.rsna_ich.build_ich_manifest`."""
    root = require_dir(Path(root))
    labels = read_pe_labels(root / PE_CSV)
    image_dir = require_dir(root / "train", "train/<Study>/<Series>/<SOP>.dcm")
    headers, failures = read_dicom_headers(image_dir, root, workers, progress)
    pe = labels["pe_present_on_image"].to_dict()
    negative_by_study = labels.groupby("StudyInstanceUID")["negative_exam_for_pe"].max().to_dict()
    indeterminate_by_study = (
        labels.groupby("StudyInstanceUID")["indeterminate"].max().to_dict() if "indeterminate" in labels else {}
    )
    seen: set[str] = set()
    rows = []
    for uid, ordered, geometry in ordered_series(headers, failures):
        study = ordered[0].study_instance_uid
        slice_labels = lookup_slice_labels(ordered, pe, seen, failures, PE_CSV, "SOPInstanceUID")
        if study not in negative_by_study:
            failures.append((f"scan {uid}", f"study {study} not in {PE_CSV}; scan dropped"))
            continue
        if indeterminate_by_study.get(study, 0) == 1:
            failures.append((f"scan {uid}", "indeterminate exam (indeterminate = 1): neither PE nor negative; dropped"))
            continue
        label = 1 - int(negative_by_study[study])
        if label == 0 and 1 in slice_labels:
            failures.append((f"scan {uid}", "negative_exam_for_pe = 1 but some pe_present_on_image = 1; scan dropped"))
            continue
        if label == 1 and 1 not in slice_labels:
            failures.append((f"scan {uid}", "positive exam but no slice has pe_present_on_image = 1 (kept)"))
        rows.append(scan_manifest_row(uid, study, label, ordered, slice_labels, "pe", geometry.issues))
    report_orphans(pe, seen, failures, PE_CSV, "SOPInstanceUID")
    return pd.DataFrame(rows), failures


class PeAdapter(RsnaAdapter):
    """``monai-ng ingest --dataset pe``: :func:`build_pe_manifest`."""

    name = "pe"
    description = "RSNA STR Pulmonary Embolism Detection 2020"
    build = staticmethod(build_pe_manifest)


#: The adapter registered under the ``monai_ng.dataset_adapters`` entry point ``pe``.
ADAPTER = PeAdapter()
