"""Find the scans of an inference input: DICOM series (by SeriesInstanceUID, any depth), NIfTI volumes, a manifest.

A bundle's ``inference.json`` points ``dataset_dir`` at a folder as it comes from a PACS export or a research drive:
DICOM files of one or many series at any depth (files of several series mixed in one folder included; every series
is found by its SeriesInstanceUID, never by folder), and/or NIfTI volumes (``*.nii``, ``*.nii.gz``). Each scan
becomes one MONAI dataset item ``{"image": <the series' files | the NIfTI path>, "scan_id": <pseudonymous id>}``.

``dataset_dir`` may also be one NIfTI file, a scan manifest (``.csv`` / ``.parquet`` as ``monai-ng ingest`` writes
it: ``scan_id`` and ``slice_files`` are used, ``slice_files`` a JSON array of ordered files or one folder / volume), or
a list of any of these (:func:`find_scan_inputs`).

The scan id is never a patient identifier: ``series-<first 12 hex digits of sha256(SeriesInstanceUID)>`` for DICOM
(stable across runs, no UID or name leaks into file names), the file stem for NIfTI (the user chose that name) and
the manifest's own ``scan_id`` for a manifest (the user chose those too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from monai_ng.io.header_scan import group_by_series, scan_headers
from monai_ng.reporting.scan_result import check_scan_id

__all__ = [
    "MANIFEST_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ScanInputError",
    "dicom_scan_id",
    "find_scan_inputs",
    "is_candidate_dicom_file",
    "read_manifest_scans",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MANIFEST_SUFFIXES = (".csv", ".parquet")


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


def is_candidate_dicom_file(path: Path) -> bool:
    """Whether ``path`` may hold a DICOM slice: ``.dcm`` / ``.dicom`` / ``.ima``, or no or a numeric extension with
    the ``DICM`` preamble (PACS exports name files by bare UID, e.g. ``1.2.840.10008.1``, whose "extension" is
    ``.1``). Hidden files, ``DICOMDIR``, NIfTI and other extensions (``.csv``, ``.json``, ``.png``, ...) are not.
    """
    if path.name.startswith(".") or path.name == "DICOMDIR" or path.name.endswith(NIFTI_SUFFIXES):
        return False
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom", ".ima"):
        return True
    if suffix and not suffix[1:].isdigit():  # another known extension: not a DICOM slice
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _manifest_files(cell: Any, scan: str, path: Path) -> list[str]:
    if isinstance(cell, str):
        text = cell.strip()
        if text.startswith("["):
            try:
                cell = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ScanInputError(f"{path}: scan {scan!r}: slice_files is not a JSON array ({exc})") from exc
        else:
            cell = [text] if text else []
    files = [str(f) for f in (cell.tolist() if hasattr(cell, "tolist") else list(cell or []))]
    if not files:
        raise ScanInputError(f"{path}: scan {scan!r}: slice_files is empty")
    return files


def read_manifest_scans(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The scans of a scan manifest (``.csv`` / ``.parquet``) as MONAI dataset items, in file order.

    Only ``scan_id`` and ``slice_files`` are read (labels are not needed to predict); ``series_uid`` when present.
    Relative slice paths are taken relative to the manifest's folder.

    Raises:
        ScanInputError: naming the file (and the scan): unreadable, no ``scan_id`` / ``slice_files`` column, no rows,
            a duplicate or unsafe scan id, an empty ``slice_files``.
    """
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types on a malformed file
        raise ScanInputError(f"{path}: cannot read as a scan manifest ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("scan_id", "slice_files") if c not in frame.columns]
    if missing:
        raise ScanInputError(f"{path}: not a scan manifest: lacks column(s) {missing} (make it with `monai-ng ingest`)")
    if len(frame) == 0:
        raise ScanInputError(f"{path}: the manifest has no scans")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row, record in enumerate(frame.to_dict("records")):
        scan = str(record["scan_id"])
        try:
            check_scan_id(scan)
        except (TypeError, ValueError) as exc:
            raise ScanInputError(f"{path}: row {row}: scan_id cannot be used as a file name ({exc})") from exc
        if scan in seen:
            raise ScanInputError(f"{path}: scan {scan!r} appears more than once")
        seen.add(scan)
        files = [
            f if Path(f).is_absolute() else str(path.parent / f)
            for f in _manifest_files(record["slice_files"], scan, path)
        ]
        series = record.get("series_uid")
        items.append(
            {
                "image": files,
                "scan_id": scan,
                "source": "manifest",
                "series_uid": str(series) if series not in (None, "") else None,
            }
        )
    logger.info("manifest %s: %d scan(s)", path, len(items))
    return items


def find_scan_inputs(
    dataset_dir: str | os.PathLike | Sequence[str | os.PathLike], workers: int = 1, progress: bool = False
) -> list[dict[str, Any]]:
    """List the scans of ``dataset_dir`` as MONAI dataset items.

    Args:
        dataset_dir: folder holding DICOM series (any depth, mixed folders allowed) and/or NIfTI files; or one NIfTI
            file; or a scan manifest (``.csv`` / ``.parquet``, see :func:`read_manifest_scans`); or a list of these
            (their scans are concatenated; scan ids must be unique across them).
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
    if isinstance(dataset_dir, Sequence) and not isinstance(dataset_dir, (str, bytes)):
        if not dataset_dir:
            raise ScanInputError("dataset_dir: an empty list of inputs")
        if len(dataset_dir) > 1:
            items = [i for d in dataset_dir for i in find_scan_inputs(d, workers=workers, progress=progress)]
            ids = [i["scan_id"] for i in items]
            dupes = sorted({s for s in ids if ids.count(s) > 1})
            if dupes:
                raise ScanInputError(f"inputs {[str(d) for d in dataset_dir]}: scan ids {dupes[:5]} occur twice")
            return items
        dataset_dir = dataset_dir[0]
    root = Path(dataset_dir)
    if root.is_file() and root.name.endswith(NIFTI_SUFFIXES):
        stem = _nifti_stem(root)
        try:
            check_scan_id(stem)
        except ValueError as exc:
            raise ScanInputError(f"{root}: the file name cannot be used as a scan id ({exc})") from exc
        return [{"image": str(root), "scan_id": stem, "source": "nifti", "series_uid": None}]
    if root.is_file() and root.suffix in MANIFEST_SUFFIXES:
        return read_manifest_scans(root)
    if not root.exists():
        raise ScanInputError(f"dataset_dir {root}: folder does not exist (pass --dataset_dir DICOM_OR_NIFTI_FOLDER)")
    if not root.is_dir():
        raise ScanInputError(
            f"dataset_dir {root}: not a folder, NIfTI file ({', '.join(NIFTI_SUFFIXES)}) or scan manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ScanInputError(f"dataset_dir {root}: folder is empty (no DICOM series or NIfTI file found)")
    nifti = [p for p in files if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")]
    dicom = [str(p) for p in files if is_candidate_dicom_file(p)]

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
