"""Find the scans of an inference input folder: DICOM series (by SeriesInstanceUID, any depth) and NIfTI volumes.

A bundle's ``inference.json`` points ``dataset_dir`` at a folder as it comes from a PACS export or a research drive:
DICOM files of one or many series at any depth (files of several series mixed in one folder included; every series
is found by its SeriesInstanceUID, never by folder), and/or NIfTI volumes (``*.nii``, ``*.nii.gz``). Each scan
becomes one MONAI dataset item ``{"image": <the series' files | the NIfTI path>, "scan_id": <pseudonymous id>}``.

The scan id is never a patient identifier: ``series-<first 12 hex digits of sha256(SeriesInstanceUID)>`` for DICOM
(stable across runs, no UID or name leaks into file names) and the file stem for NIfTI (the user chose that name).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from monai_ng.io.header_scan import group_by_series, scan_headers
from monai_ng.reporting.scan_result import check_scan_id

__all__ = ["NIFTI_SUFFIXES", "ScanInputError", "dicom_scan_id", "find_scan_inputs"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class ScanInputError(ValueError):
    """The inference input folder cannot be used (missing, empty, or holding no readable scan)."""


def dicom_scan_id(series_instance_uid: str) -> str:
    """``series-<12 hex>``: a pseudonymous, file-name-safe scan id derived from a SeriesInstanceUID."""
    if not isinstance(series_instance_uid, str) or not series_instance_uid:
        raise ValueError(f"series_instance_uid must be a non-empty str, got {series_instance_uid!r}")
    return "series-" + hashlib.sha256(series_instance_uid.encode("utf-8")).hexdigest()[:12]


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_candidate_dicom(path: Path) -> bool:
    if path.name.startswith(".") or path.name == "DICOMDIR" or path.name.endswith(NIFTI_SUFFIXES):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:  # another known extension (.csv, .json, .png, ...): not a DICOM slice
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def find_scan_inputs(dataset_dir: str | os.PathLike, workers: int = 1, progress: bool = False) -> list[dict[str, Any]]:
    """List the scans under ``dataset_dir`` as MONAI dataset items.

    Args:
        dataset_dir: folder holding DICOM series (any depth, mixed folders allowed) and/or NIfTI files.
        workers: processes reading DICOM headers.
        progress: show a progress bar while reading headers.

    Returns:
        One dict per scan, DICOM series first (ordered by scan id) then NIfTI files (ordered by path):
        ``{"image": list[str] | str, "scan_id": str, "source": "dicom" | "nifti", "series_uid": str | None}``. For a
        DICOM series ``image`` lists its files; the reader orders them along the slice normal.

    Raises:
        ScanInputError: naming the folder: it does not exist, is not a folder, holds no file, or holds no readable
            DICOM series and no NIfTI file (then the first unreadable files are listed); two NIfTI files with the same
            stem (their scan ids would collide).
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise ScanInputError(f"dataset_dir {root}: folder does not exist (pass --dataset_dir DICOM_OR_NIFTI_FOLDER)")
    if not root.is_dir():
        raise ScanInputError(f"dataset_dir {root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ScanInputError(f"dataset_dir {root}: folder is empty (no DICOM series or NIfTI file found)")
    nifti = [p for p in files if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")]
    dicom = [str(p) for p in files if _is_candidate_dicom(p)]

    items: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    if dicom:
        scan = scan_headers(dicom, workers=workers, progress=progress)
        failures = scan.failures
        for reason_file, reason in failures[:5]:
            logger.warning("skipping unreadable DICOM file %s: %s", reason_file, reason)
        for uid, headers in group_by_series(scan.headers).items():
            if not uid:
                failures.extend((h.path, "no SeriesInstanceUID") for h in headers)
                continue
            studies = sorted({h.study_instance_uid for h in headers})
            if len(studies) > 1:
                raise ScanInputError(
                    f"dataset_dir {root}: series {dicom_scan_id(uid)} has files from {len(studies)} different studies "
                    f"(e.g. {headers[0].path}); one SeriesInstanceUID must belong to one study"
                )
            items.append(
                {
                    "image": [h.path for h in headers],
                    "scan_id": dicom_scan_id(uid),
                    "source": "dicom",
                    "series_uid": uid,
                }
            )
        items.sort(key=lambda item: item["scan_id"])
    stems: dict[str, Path] = {}
    for path in nifti:
        stem = _nifti_stem(path)
        if stem in stems:
            raise ScanInputError(
                f"dataset_dir {root}: NIfTI files {stems[stem]} and {path} have the same name {stem!r}; scan ids "
                "must be unique"
            )
        stems[stem] = path
        try:
            check_scan_id(stem)
        except ValueError as exc:
            raise ScanInputError(f"{path}: the file name cannot be used as a scan id ({exc})") from exc
        items.append({"image": str(path), "scan_id": stem, "source": "nifti", "series_uid": None})
    if not items:
        detail = "; ".join(f"{f}: {r}" for f, r in failures[:3])
        raise ScanInputError(
            f"dataset_dir {root}: no readable DICOM series and no NIfTI file among {len(files)} file(s)"
            + (f" (unreadable: {detail})" if detail else "")
        )
    n_dicom = sum(item["source"] == "dicom" for item in items)
    logger.info(
        "dataset_dir %s: %d scan(s): %d DICOM series, %d NIfTI file(s); %d unreadable file(s) skipped",
        root,
        len(items),
        n_dicom,
        len(items) - n_dicom,
        len(failures),
    )
    return items
