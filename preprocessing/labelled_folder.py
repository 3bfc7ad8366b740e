"""A site's own CT: a folder of DICOM series and / or NIfTI volumes + a label CSV -> scan manifest.

``monai-ng ingest --dataset folder --root DIR --labels labels.csv [--slice-labels slices.csv] --out manifest.csv``

**Scans.** Every DICOM file below ``--root`` (any depth; files of several series may share a folder) is grouped by its
SeriesInstanceUID, read header-only in parallel and ordered along the slice normal (inferior -> superior), exactly as
:func:`monai_ng.bundle.scan_inputs.find_scan_inputs` finds the scans of an inference folder; every ``*.nii`` /
``*.nii.gz`` below the root is one scan.

**Label CSV** (one row per scan; UTF-8, an Excel BOM is accepted):

==================================  ===================================================================================
column                              meaning
==================================  ===================================================================================
``SeriesInstanceUID``               key: the series
``StudyInstanceUID``                key: the study's only CT series (a study with more CT series is an error)
``nifti_file``                      key: a NIfTI file under the root, by name (``ct_001.nii.gz``), stem (``ct_001``) or
                                    path relative to the root
``label``                           scan label, 0 or 1 (required)
``patient_id``                      split key (required, never empty): a pseudonymous id, or the hospital's id together
                                    with ``--pseudonymize-key-file`` (written as an HMAC pseudonym)
``slice_labels``                    optional: JSON array of 0 / 1 (-1 = unknown) per slice, inferior -> superior, as
                                    long as the series; an empty cell = no slice labels for that scan
==================================  ===================================================================================

At least one key column must be present; every row fills exactly one of them (so one CSV can label DICOM series and
NIfTI volumes together). Per-slice labels may instead come from ``--slice-labels``: a CSV with columns
``SOPInstanceUID, label`` (0 / 1), one row per image, as the RSNA ICH / PE downloads have.

**Outcomes.** Scans without a label row are *skipped* and recorded in ``failures.csv`` as ``unlabeled`` (a manifest
row needs a label). Without slice labels a negative scan's slices are 0 (no slice of a normal scan is abnormal) and a
positive scan's slices -1 (unknown). Slices of a positive scan missing from ``--slice-labels`` get -1 (one failure row
per scan); ``--slice-labels`` rows matching no slice give one failure row. Unreadable files, series that cannot be
ordered and unreadable NIfTI files are recorded and skipped. Everything else about the CSVs is a ``ValueError``
naming the CSV, the line and the reason (``monai-ng ingest`` exits 2): missing columns, no or several keys in a row, a
key matching no scan, a study with other than one CT series, duplicate keys, labels not 0 / 1, malformed slice
labels, a slice-label count that differs from the series' slice count, slice labels contradicting the scan label.
Messages never hold a patient identifier (UIDs and file names only); PatientName / PatientID headers are never read
into a message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from monai_ng.bundle.scan_inputs import NIFTI_SUFFIXES, is_candidate_dicom_file
from monai_ng.data.dataset_adapter import DatasetAdapter
from monai_ng.data.scan_manifest import scan_manifest_row
from monai_ng.io.dicom_header import SliceHeader
from monai_ng.io.header_scan import group_by_series, scan_headers
from preprocessing.rsna_common import order_or_record, report_orphans, require_dir

__all__ = [
    "ADAPTER",
    "DATASET",
    "DEFAULT_LABELS_CSV",
    "KEY_COLUMNS",
    "FolderAdapter",
    "LabelRow",
    "build_folder_manifest",
    "nifti_slice_count",
    "read_label_csv",
    "read_slice_label_csv",
]

#: The manifest's ``dataset`` value and the ``--dataset`` name.
DATASET = "folder"
#: Label CSV looked for in the root when ``--labels`` is not given.
DEFAULT_LABELS_CSV = "labels.csv"
#: Key columns of the label CSV and what they name.
KEY_COLUMNS: dict[str, str] = {
    "SeriesInstanceUID": "series",
    "StudyInstanceUID": "study",
    "nifti_file": "nifti",
}
_SLICE_CSV_COLUMNS = ("SOPInstanceUID", "label")


@dataclass(frozen=True)
class LabelRow:
    """One row of the label CSV.

    Attributes:
        line: line number in the CSV (the header is line 1).
        kind: ``"series"``, ``"study"`` or ``"nifti"`` (which key column is filled).
        key: the key value.
        label: scan label, 0 or 1.
        patient_id: split key (never printed).
        slice_labels: per-slice labels inferior -> superior, or None.
    """

    line: int
    kind: str
    key: str
    label: int
    patient_id: str
    slice_labels: tuple[int, ...] | None


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as exc:  # pandas raises many types on a malformed file
        raise ValueError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda col: col.str.strip())


def _binary(value: str, path: Path, line: int, column: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if number not in (0.0, 1.0):
        raise ValueError(f"{path}: line {line}: {column} must be 0 or 1, got {value!r}")
    return int(number)


def _parse_slice_labels(cell: str, path: Path, line: int) -> tuple[int, ...] | None:
    if not cell:
        return None
    try:
        values = json.loads(cell)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or not values:
        raise ValueError(
            f"{path}: line {line}: slice_labels must be a non-empty JSON array like [0, 0, 1], got {cell!r}"
        )
    bad = [v for v in values if isinstance(v, bool) or v not in (-1, 0, 1)]
    if bad:
        raise ValueError(f"{path}: line {line}: slice_labels must hold 0, 1 or -1 (unknown), got e.g. {bad[:3]}")
    return tuple(int(v) for v in values)


def _check_consistent(label: int, slice_labels: Sequence[int], where: str) -> None:
    if label == 0 and 1 in slice_labels:
        raise ValueError(
            f"{where}: scan label 0 but slice(s) {[i for i, v in enumerate(slice_labels) if v == 1][:5]} are 1"
        )
    if label == 1 and slice_labels and all(v == 0 for v in slice_labels):
        raise ValueError(f"{where}: scan label 1 but every slice label is 0")


def read_label_csv(path: str | os.PathLike) -> list[LabelRow]:
    """Read and check the label CSV (format in the module docstring).

    Raises:
        ValueError: ``"<csv>: line <n>: <reason>"``: missing columns, no / several keys in a row, empty patient id,
            label not 0 / 1, malformed slice labels or slice labels contradicting the label, duplicate keys.
    """
    path = Path(path)
    frame = _read_csv(path, "label CSV")
    keys = [c for c in KEY_COLUMNS if c in frame.columns]
    missing = [c for c in ("label", "patient_id") if c not in frame.columns]
    if not keys or missing:
        need = missing + ([] if keys else [f"one of {list(KEY_COLUMNS)}"])
        raise ValueError(
            f"{path}: lacks column(s) {need}; found {list(frame.columns)} (columns: SeriesInstanceUID | "
            "StudyInstanceUID | nifti_file, label, patient_id[, slice_labels]; see docs/ingest.md)"
        )
    if frame.empty:
        raise ValueError(f"{path}: has no rows")
    has_slices = "slice_labels" in frame.columns
    rows: list[LabelRow] = []
    first_line: dict[tuple[str, str], int] = {}
    for i, record in enumerate(frame.to_dict("records")):
        line = i + 2
        filled = [c for c in keys if record[c]]
        if len(filled) != 1:
            raise ValueError(
                f"{path}: line {line}: fill exactly one key column of {keys}, "
                + (f"found {filled}" if filled else "all are empty")
            )
        kind, key = KEY_COLUMNS[filled[0]], record[filled[0]]
        if (kind, key) in first_line:
            raise ValueError(
                f"{path}: line {line}: {filled[0]} {key!r} already labelled on line {first_line[kind, key]}"
            )
        first_line[kind, key] = line
        if not record["patient_id"]:
            raise ValueError(f"{path}: line {line}: empty patient_id (the split key); every scan needs one")
        label = _binary(record["label"], path, line, "label")
        slice_labels = _parse_slice_labels(record["slice_labels"], path, line) if has_slices else None
        if slice_labels is not None:
            _check_consistent(label, slice_labels, f"{path}: line {line}")
        rows.append(LabelRow(line, kind, key, label, record["patient_id"], slice_labels))
    return rows


def read_slice_label_csv(path: str | os.PathLike) -> dict[str, int]:
    """Per-slice labels keyed by SOPInstanceUID from a CSV with columns ``SOPInstanceUID, label``.

    Raises:
        ValueError: ``"<csv>: line <n>: <reason>"``: missing columns, empty SOPInstanceUID, label not 0 / 1, a
            duplicate SOPInstanceUID.
    """
    path = Path(path)
    frame = _read_csv(path, "slice-label CSV")
    missing = [c for c in _SLICE_CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing}; found {list(frame.columns)}")
    out: dict[str, int] = {}
    lines: dict[str, int] = {}
    for i, (sop, value) in enumerate(zip(frame["SOPInstanceUID"], frame["label"], strict=True)):
        line = i + 2
        if not sop:
            raise ValueError(f"{path}: line {line}: empty SOPInstanceUID")
        if sop in out:
            raise ValueError(f"{path}: line {line}: SOPInstanceUID {sop!r} already labelled on line {lines[sop]}")
        out[sop], lines[sop] = _binary(value, path, line, "label"), line
    return out


def nifti_slice_count(path: str | os.PathLike) -> int:
    """Number of axial slices of a NIfTI volume from its header: the length of the voxel axis closest to the patient's
    superior-inferior axis (the ``Z`` of :class:`~monai_ng.io.CTSeriesReader`'s LPS grid, which runs inferior ->
    superior).

    Raises:
        ValueError: naming the file: unreadable, or not 3D (a 4D volume with one frame counts as 3D).
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        ornt = nib.orientations.io_orientation(img.affine)
    except Exception as exc:  # nibabel raises many types on a corrupt file
        raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"{path}: NIfTI volume has shape {shape}; expected 3D [X, Y, Z]")
    axis = [i for i in range(3) if int(ornt[i, 0]) == 2]
    return shape[axis[0]] if axis else shape[2]


def _nifti_name(path: Path) -> tuple[str, str]:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name, path.name[: -len(suffix)]
    return path.name, path.stem


def _resolve_nifti(key: str, nifti: Sequence[Path], root: Path, csv: Path, line: int) -> Path | None:
    rel = key.replace("\\", "/").removeprefix("./") if "/" in key or "\\" in key else None
    matches = [
        p for p in nifti if (p.relative_to(root).as_posix() == rel if rel is not None else key in _nifti_name(p))
    ]
    if len(matches) > 1:
        raise ValueError(
            f"{csv}: line {line}: nifti_file {key!r} matches {len(matches)} files "
            f"({[str(p.relative_to(root)) for p in matches[:3]]}); give the path relative to {root}"
        )
    return matches[0] if matches else None


def _slice_labels_for(
    row: LabelRow,
    ordered: Sequence[SliceHeader],
    sop_labels: dict[str, int] | None,
    seen: set[str],
    uid: str,
    csv: Path,
    slice_csv: Path | None,
    failures: list[tuple[str, str]],
) -> list[int]:
    n = len(ordered)
    if row.slice_labels is not None:
        if len(row.slice_labels) != n:
            raise ValueError(
                f"{csv}: line {row.line}: slice_labels has {len(row.slice_labels)} entries but series {uid} has {n} "
                "slices (give one label per slice, inferior -> superior)"
            )
        return list(row.slice_labels)
    if sop_labels is None:
        return [0 if row.label == 0 else -1] * n
    out = []
    for h in ordered:
        if h.sop_instance_uid in sop_labels:
            out.append(sop_labels[h.sop_instance_uid])
            seen.add(h.sop_instance_uid)
        else:
            out.append(0 if row.label == 0 else -1)
    unknown = sum(v == -1 for v in out)
    if unknown:
        failures.append((f"scan {uid}", f"{unknown} of {n} slices not in {slice_csv}; their slice labels set to -1"))
    _check_consistent(row.label, out, f"{slice_csv}: series {uid} (labelled on line {row.line} of {csv})")
    return out


def build_folder_manifest(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    slice_labels: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Build the scan manifest of a folder of DICOM series / NIfTI volumes labelled by a CSV.

    Args:
        root: folder holding the scans (any depth).
        labels: the label CSV (default ``<root>/labels.csv``).
        slice_labels: optional per-slice CSV (``SOPInstanceUID, label``); not together with a ``slice_labels`` column.
        workers: header-reading processes.
        progress: show a progress bar.

    Returns:
        ``(manifest, failures)``: one row per labelled scan (schema of :mod:`monai_ng.data.scan_manifest`, without
        split columns; ``scan_id`` = SeriesInstanceUID for DICOM, the file stem for NIfTI; a NIfTI row has one
        ``slice_files`` entry, the volume, and ``n_slices`` / ``slice_labels`` / empty ``slice_sop_uids`` per slice)
        and ``(item, reason)`` rows for unreadable files, unlabeled scans (skipped), series that cannot be ordered,
        slices without a label and unmatched ``slice_labels`` rows.

    Raises:
        ValueError: naming the CSV and line, or the root (see the module docstring).
    """
    root = require_dir(Path(root))
    csv = Path(labels) if labels is not None else root / DEFAULT_LABELS_CSV
    if labels is None and not csv.is_file():
        raise ValueError(f"{root}: no label CSV; pass --labels LABELS.csv (or put {DEFAULT_LABELS_CSV} in the root)")
    rows = read_label_csv(csv)
    slice_csv = Path(slice_labels) if slice_labels is not None else None
    sop_labels = read_slice_label_csv(slice_csv) if slice_csv is not None else None
    if sop_labels is not None and any(r.slice_labels is not None for r in rows):
        raise ValueError(f"{csv}: has slice_labels and --slice-labels {slice_csv} was given; use one of the two")

    files = sorted(p for p in root.rglob("*") if p.is_file())
    nifti = [p for p in files if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")]
    dicom = [str(p) for p in files if is_candidate_dicom_file(p)]
    failures: list[tuple[str, str]] = []
    headers: list[SliceHeader] = []
    if dicom:
        scan = scan_headers(dicom, workers=workers, progress=progress)
        headers, failures = scan.headers, list(scan.failures)
    if not headers and not nifti:
        raise ValueError(
            f"{root}: no readable DICOM series and no NIfTI file among {len(files)} file(s)"
            + (f" ({len(failures)} unreadable, e.g. {failures[0][0]}: {failures[0][1]})" if failures else "")
        )
    series = group_by_series(headers)
    if "" in series:
        failures.extend((h.path, "no SeriesInstanceUID; cannot group into a scan") for h in series.pop(""))
    ct_series_of_study: dict[str, list[str]] = {}
    for uid, group in series.items():
        if group[0].modality in ("CT", ""):
            for study in sorted({h.study_instance_uid for h in group}):
                ct_series_of_study.setdefault(study, []).append(uid)

    # resolve every label row to one scan
    by_scan: dict[tuple[str, Any], LabelRow] = {}
    unmatched: list[str] = []
    for row in rows:
        target: tuple[str, Any] | None = None
        if row.kind == "series":
            target = ("dicom", row.key) if row.key in series else None
        elif row.kind == "study":
            found = ct_series_of_study.get(row.key, [])
            if len(found) > 1:
                raise ValueError(
                    f"{csv}: line {row.line}: study {row.key} holds {len(found)} CT series under {root} "
                    f"({found[:5]}); label this study's series by SeriesInstanceUID instead"
                )
            target = ("dicom", found[0]) if found else None
        else:
            path = _resolve_nifti(row.key, nifti, root, csv, row.line)
            target = ("nifti", path) if path is not None else None
        if target is None:
            unmatched.append(f"line {row.line} ({next(c for c, k in KEY_COLUMNS.items() if k == row.kind)} {row.key})")
        elif target in by_scan:
            raise ValueError(
                f"{csv}: line {row.line}: labels the same scan ({target[1]}) as line {by_scan[target].line}"
            )
        else:
            by_scan[target] = row
    if unmatched:
        hint = f"; {len(failures)} file(s) under the root are unreadable, e.g. {failures[0][0]}" if failures else ""
        raise ValueError(
            f"{csv}: {len(unmatched)} row(s) match no readable DICOM series or NIfTI file under {root}: "
            f"{', '.join(unmatched[:5])}{hint}"
        )

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for uid, group in series.items():
        row = by_scan.get(("dicom", uid))
        if row is None:
            failures.append((f"scan {uid}", f"unlabeled: no row in {csv}; series skipped"))
            continue
        if len({h.study_instance_uid for h in group}) > 1:
            failures.append((f"scan {uid}", "files from several StudyInstanceUIDs; series skipped"))
            continue
        result = order_or_record(group, uid, failures)
        if result is None:
            continue
        ordered, geometry = result
        labels_of = _slice_labels_for(row, ordered, sop_labels, seen, uid, csv, slice_csv, failures)
        out.append(scan_manifest_row(uid, row.patient_id, row.label, ordered, labels_of, DATASET, geometry.issues))
    if sop_labels is not None:
        report_orphans(sop_labels, seen, failures, str(slice_csv), "SOPInstanceUID")

    scan_ids = {r["scan_id"] for r in out}
    for path in nifti:
        row = by_scan.get(("nifti", path))
        if row is None:
            failures.append((str(path), f"unlabeled: no row in {csv}; NIfTI file skipped"))
            continue
        try:
            n = nifti_slice_count(path)
        except ValueError as exc:
            failures.append((str(path), f"{exc}; NIfTI file skipped"))
            continue
        if row.slice_labels is not None and len(row.slice_labels) != n:
            raise ValueError(
                f"{csv}: line {row.line}: slice_labels has {len(row.slice_labels)} entries but {path} has {n} axial "
                "slices (give one label per slice, inferior -> superior)"
            )
        scan_id = _nifti_name(path)[1]
        if scan_id in scan_ids:
            raise ValueError(f"{path}: scan id {scan_id!r} (the file stem) is already used by another scan; rename it")
        scan_ids.add(scan_id)
        out.append(
            {
                "scan_id": scan_id,
                "patient_id": row.patient_id,
                "label": row.label,
                "series_uid": "",
                "n_slices": n,
                "slice_files": [str(path)],
                "slice_labels": list(row.slice_labels) if row.slice_labels else [0 if row.label == 0 else -1] * n,
                "slice_sop_uids": [""] * n,
                "geometry_issues": [],
                "dataset": DATASET,
            }
        )
    return pd.DataFrame(out), failures


class FolderAdapter(DatasetAdapter):
    """``monai-ng ingest --dataset folder``: :func:`build_folder_manifest`."""

    name = DATASET
    description = "a folder of DICOM series / NIfTI volumes + a label CSV (a site's own CT)"

    def add_arguments(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--labels",
            type=Path,
            default=None,
            metavar="LABELS_CSV",
            help="folder only: label CSV, one row per scan (SeriesInstanceUID | StudyInstanceUID | nifti_file, label, "
            f"patient_id[, slice_labels]); default <root>/{DEFAULT_LABELS_CSV}",
        )
        parser.add_argument(
            "--slice-labels",
            type=Path,
            default=None,
            metavar="SLICES_CSV",
            help="folder only: per-slice labels, columns SOPInstanceUID, label (0/1)",
        )

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"labels": args.labels, "slice_labels": args.slice_labels}

    def build_manifest(
        self, root: str | os.PathLike, workers: int = 1, progress: bool = True, **options: Any
    ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        return build_folder_manifest(root, workers=workers, progress=progress, **options)


#: The adapter registered under the ``monai_ng.dataset_adapters`` entry point ``folder``.
ADAPTER = FolderAdapter()
