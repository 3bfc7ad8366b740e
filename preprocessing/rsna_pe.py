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

from monai_ng.transforms.dicom_headers import group_by_series, order_series, scan_headers

__all__ = ["PE_CSV", "PE_REQUIRED_COLUMNS", "build_pe_manifest", "read_pe_labels"]

PE_CSV = "train.csv"
PE_REQUIRED_COLUMNS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "pe_present_on_image",
    "negative_exam_for_pe",
)


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
    """Build the scan manifest of an RSNA PE download (see :func:`preprocessing.rsna_ich.build_ich_manifest`).

    Args:
        root: folder holding ``train.csv`` and ``train/``.
        workers: header-reading processes.
        progress: show a progress bar.

    Returns:
        ``(manifest, failures)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    labels = read_pe_labels(root / PE_CSV)
    image_dir = root / "train"
    if not image_dir.is_dir():
        raise ValueError(f"{image_dir}: image folder not found (expected train/<Study>/<Series>/<SOP>.dcm)")
    scan = scan_headers(image_dir, workers=workers, progress=progress)
    failures: list[tuple[str, str]] = list(scan.failures)
    if not scan.headers:
        raise ValueError(f"{root}: no readable DICOM files ({len(scan.failures)} unreadable)")
    pe = labels["pe_present_on_image"].to_dict()
    negative_by_study = labels.groupby("StudyInstanceUID")["negative_exam_for_pe"].max().to_dict()
    indeterminate_by_study = (
        labels.groupby("StudyInstanceUID")["indeterminate"].max().to_dict() if "indeterminate" in labels else {}
    )
    seen: set[str] = set()
    rows = []
    for uid, headers in group_by_series(scan.headers).items():
        if not uid:
            failures.extend((h.path, "no SeriesInstanceUID; cannot group into a scan") for h in headers)
            continue
        try:
            ordered, geometry = order_series(headers)
        except ValueError as exc:
            failures.append((f"scan {uid}", str(exc)))
            continue
        study = ordered[0].study_instance_uid
        slice_labels = []
        for h in ordered:
            sop = h.sop_instance_uid if h.sop_instance_uid in pe else Path(h.path).stem
            if sop in pe:
                slice_labels.append(int(pe[sop]))
                seen.add(sop)
            else:
                slice_labels.append(-1)
                failures.append((h.path, f"SOPInstanceUID {h.sop_instance_uid} not in {PE_CSV}; slice label set to -1"))
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
        rows.append(
            {
                "scan_id": uid,
                "patient_id": study,
                "label": label,
                "series_uid": uid,
                "n_slices": len(ordered),
                "slice_files": [h.path for h in ordered],
                "slice_labels": slice_labels,
                "slice_sop_uids": [h.sop_instance_uid for h in ordered],
                "geometry_issues": list(geometry.issues),
                "dataset": "pe",
            }
        )
    orphans = sorted(set(pe) - seen)
    if orphans:
        failures.append((PE_CSV, f"{len(orphans)} SOPInstanceUID(s) have no readable DICOM file, e.g. {orphans[:3]}"))
    return pd.DataFrame(rows), failures
