"""The scan manifest: one row per scan, with its ordered slice files and slice labels.

Schema (every adapter in ``preprocessing`` writes it; see ``docs/ingest.md``):

========================  ==========================================================================================
column                    meaning
========================  ==========================================================================================
``scan_id``               unique scan id (SeriesInstanceUID for ICH and PE, ``series_id`` for abdominal trauma)
``patient_id``            split key: pseudonymous PatientID (ICH), StudyInstanceUID (PE), ``patient_id`` (abdominal)
``label``                 scan label, 0 or 1
``series_uid``            SeriesInstanceUID from the headers
``n_slices``              number of slices
``slice_files``           list[str], slice files ordered inferior -> superior (position along the slice normal)
``slice_labels``          list[int], aligned with ``slice_files``: 1 / 0, or -1 where the slice label is unknown
``slice_sop_uids``        list[str], aligned SOPInstanceUIDs
``geometry_issues``       list[str], geometry problems found (gaps, duplicates, tilt, ...); empty when clean
``dataset``               ``ich`` / ``pe`` / ``abdominal``
``split_<seed>``          ``train`` / ``val`` / ``test`` for seeds 1001, 2001, 3001 (``monai_ng.data.splits``)
========================  ==========================================================================================

Storage: ``.csv`` stores list columns as JSON arrays (one JSON string per cell); ``.parquet`` stores them as native
list columns (needs ``pyarrow`` or ``fastparquet``). :func:`read_manifest` decodes both back to Python lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from monai_ng.transforms.dicom_headers import (
    SeriesGeometry,
    SliceHeader,
    group_by_series,
    order_series,
    scan_headers,
)

if TYPE_CHECKING:
    from monai_ng.data.phantom import SliceRecord

__all__ = [
    "LIST_COLUMNS",
    "MANIFEST_COLUMNS",
    "lookup_slice_labels",
    "manifest_row",
    "ordered_series",
    "read_dicom_headers",
    "read_manifest",
    "report_orphans",
    "validate_manifest",
    "write_failures",
    "write_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "scan_id",
    "patient_id",
    "label",
    "series_uid",
    "n_slices",
    "slice_files",
    "slice_labels",
    "slice_sop_uids",
    "geometry_issues",
    "dataset",
)
LIST_COLUMNS: tuple[str, ...] = ("slice_files", "slice_labels", "slice_sop_uids", "geometry_issues")
_ALIGNED = ("slice_files", "slice_labels", "slice_sop_uids")


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check the schema; returns ``df`` unchanged.

    Raises:
        ValueError: naming ``source`` and the offending ``scan_id``: missing columns, duplicate scan ids, labels not
            in {0, 1}, slice labels not in {-1, 0, 1}, misaligned or empty slice lists, ``n_slices`` mismatch.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing} (has {list(df.columns)})")
    dup = df["scan_id"][df["scan_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{source}: duplicate scan_id {dup[:5]}")
    for row in df.itertuples(index=False):
        scan = row.scan_id
        if row.label not in (0, 1):
            raise ValueError(f"{source}: scan {scan}: label {row.label!r} is not 0 or 1")
        lists = {c: getattr(row, c) for c in LIST_COLUMNS}
        for c, v in lists.items():
            if not isinstance(v, list):
                raise ValueError(f"{source}: scan {scan}: {c} is {type(v).__name__}, expected a list")
        n = len(lists["slice_files"])
        if n == 0:
            raise ValueError(f"{source}: scan {scan}: no slices")
        for c in _ALIGNED:
            if len(lists[c]) != n:
                raise ValueError(f"{source}: scan {scan}: {c} has {len(lists[c])} entries, slice_files has {n}")
        if int(row.n_slices) != n:
            raise ValueError(f"{source}: scan {scan}: n_slices {row.n_slices} != {n} slice files")
        bad = [v for v in lists["slice_labels"] if v not in (-1, 0, 1)]
        if bad:
            raise ValueError(f"{source}: scan {scan}: slice labels must be -1, 0 or 1, got {bad[:5]}")
    return df


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write ``df`` to ``.csv`` (JSON list cells) or ``.parquet`` (native lists)."""
    path = Path(path)
    validate_manifest(df, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        out = df.copy()
        for c in LIST_COLUMNS:
            out[c] = [json.dumps(list(v)) for v in out[c]]
        out.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        try:
            df.to_parquet(path, index=False)
        except ImportError as exc:
            raise ValueError(f"{path}: writing parquet needs pyarrow or fastparquet ({exc}); use a .csv path") from exc
    else:
        raise ValueError(f"{path}: manifest must end in .csv or .parquet")
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`; list columns come back as Python lists."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: manifest not found")
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype={"scan_id": str, "patient_id": str, "series_uid": str}, keep_default_na=False)
        for c in LIST_COLUMNS:
            if c in df.columns:
                try:
                    df[c] = [json.loads(v) for v in df[c]]
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: column {c} holds a cell that is not a JSON array ({exc})") from exc
    elif path.suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise ValueError(f"{path}: reading parquet needs pyarrow or fastparquet ({exc})") from exc
        for c in LIST_COLUMNS:
            if c in df.columns:
                df[c] = [list(v) for v in df[c]]
    else:
        raise ValueError(f"{path}: manifest must end in .csv or .parquet")
    for c in ("label", "n_slices"):
        if c in df.columns:
            df[c] = df[c].astype(int)
    df["slice_labels"] = [[int(x) for x in v] for v in df["slice_labels"]]
    return validate_manifest(df, str(path))


def write_failures(failures: list[tuple[str, str]], path: str | os.PathLike) -> Path:
    """Write ``failures.csv`` with columns ``item`` (file or scan) and ``reason``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(failures, columns=["item", "reason"]).to_csv(path, index=False)
    return path


# --- helpers shared by the RSNA adapters -----------------------------------------------------------------------------


def read_dicom_headers(
    image_dir: Path, root: Path, workers: int, progress: bool
) -> tuple[list[SliceHeader], list[tuple[str, str]]]:
    """Header-only read of every DICOM below ``image_dir``.

    Returns:
        ``(headers, failures)``; ``failures`` starts with the ``(file, reason)`` rows of unreadable files and is the
        list the adapter keeps appending to.

    Raises:
        ValueError: naming ``root`` when no file is readable.
    """
    scan = scan_headers(image_dir, workers=workers, progress=progress)
    failures: list[tuple[str, str]] = list(scan.failures)
    if not scan.headers:
        raise ValueError(f"{root}: no readable DICOM files ({len(scan.failures)} unreadable)")
    return scan.headers, failures


def ordered_series(
    headers: Sequence[SliceHeader], failures: list[tuple[str, str]]
) -> Iterator[tuple[str, list[SliceHeader], SeriesGeometry]]:
    """Group ``headers`` by SeriesInstanceUID and order each series along its slice normal.

    Yields:
        ``(series uid, ordered headers, geometry)``. Files without a SeriesInstanceUID and series that cannot be
        ordered are skipped and recorded in ``failures``.
    """
    for uid, group in group_by_series(headers).items():
        if not uid:
            failures.extend((h.path, "no SeriesInstanceUID; cannot group into a scan") for h in group)
            continue
        try:
            ordered, geometry = order_series(group)
        except ValueError as exc:
            failures.append((f"scan {uid}", str(exc)))
            continue
        yield uid, ordered, geometry


def lookup_slice_labels(
    ordered: Sequence[SliceHeader],
    label_map: Mapping[str, int],
    seen: set[str],
    failures: list[tuple[str, str]],
    csv_name: str,
    id_name: str,
) -> list[int]:
    """Slice labels of one ordered series from a per-image label table.

    A slice is looked up by its SOPInstanceUID, else by its file stem (the RSNA downloads name files after the image
    id). Found keys are added to ``seen`` (for :func:`report_orphans`); a slice missing from the table gets -1 and a
    ``(file, reason)`` row in ``failures`` naming ``id_name`` (e.g. ``"image id"``) and ``csv_name``.

    Returns:
        ``list[int]`` aligned with ``ordered``: the table's 0 / 1, or -1 where unknown.
    """
    slice_labels = []
    for h in ordered:
        key = h.sop_instance_uid if h.sop_instance_uid in label_map else Path(h.path).stem
        if key in label_map:
            slice_labels.append(int(label_map[key]))
            seen.add(key)
        else:
            slice_labels.append(-1)
            failures.append((h.path, f"{id_name} {h.sop_instance_uid} not in {csv_name}; slice label set to -1"))
    return slice_labels


def report_orphans(
    label_map: Mapping[str, int], seen: set[str], failures: list[tuple[str, str]], csv_name: str, id_name: str
) -> None:
    """Append one ``(csv_name, reason)`` row to ``failures`` when table keys were never matched to a readable file."""
    orphans = sorted(set(label_map) - seen)
    if orphans:
        failures.append((csv_name, f"{len(orphans)} {id_name}(s) have no readable DICOM file, e.g. {orphans[:3]}"))


def manifest_row(
    scan_id: str,
    patient_id: str,
    label: int,
    slices: Sequence[SliceHeader | SliceRecord],
    slice_labels: list[int],
    dataset: str,
    geometry_issues: Sequence[str] = (),
) -> dict:
    """One manifest row (columns ``MANIFEST_COLUMNS``) for a series whose slices are already in output order.

    Args:
        scan_id: unique scan id.
        patient_id: split key.
        label: scan label, 0 or 1.
        slices: the ordered slices' headers (or phantom :class:`~monai_ng.data.phantom.SliceRecord`); their paths,
            SOPInstanceUIDs and the first one's SeriesInstanceUID fill the row.
        slice_labels: aligned with ``slices``: 1 / 0, or -1 where unknown.
        dataset: ``ich`` / ``pe`` / ``abdominal``.
        geometry_issues: problems found when ordering the series (``SeriesGeometry.issues``).
    """
    return {
        "scan_id": scan_id,
        "patient_id": patient_id,
        "label": label,
        "series_uid": slices[0].series_instance_uid,
        "n_slices": len(slices),
        "slice_files": [str(h.path) for h in slices],
        "slice_labels": slice_labels,
        "slice_sop_uids": [h.sop_instance_uid for h in slices],
        "geometry_issues": list(geometry_issues),
        "dataset": dataset,
    }
