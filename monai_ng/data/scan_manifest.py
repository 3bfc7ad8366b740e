"""The scan manifest: one row per scan, with its ordered slice files and slice labels.

This is the one schema, validator, reader and writer of scan manifests: ``monai-ng ingest`` writes them (through the
dataset adapters), ``monai-ng embed`` and :func:`monai_ng.embedding.extraction.records_from_manifest` read them. (The
per-row table inside an embedding store is a different table, the *store index*; see
:mod:`monai_ng.data.embedding_store`.)

Schema (see ``docs/ingest.md``):

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
``dataset``               ``ich`` / ``pe`` / ``abdominal`` (or the name of another registered dataset adapter)
``split_<seed>``          ``train`` / ``val`` / ``test`` for seeds 1001, 2001, 3001 (``monai_ng.data.splits``)
========================  ==========================================================================================

Encoding needs only ``ENCODING_COLUMNS`` (``scan_id, patient_id, label, slice_files``, optionally ``slice_labels``);
there ``slice_files`` may also be one path (a DICOM folder or a NIfTI volume) and list cells may be JSON strings.

Storage: ``.csv`` stores list columns as JSON arrays (one JSON string per cell); ``.parquet`` stores them as native
list columns (needs ``pyarrow`` or ``fastparquet``). :func:`read_scan_manifest` decodes both back to Python lists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = [
    "ENCODING_COLUMNS",
    "LIST_COLUMNS",
    "MIN_PSEUDONYM_KEY_BYTES",
    "SCAN_MANIFEST_COLUMNS",
    "pseudonymize_patient_ids",
    "read_pseudonym_key",
    "read_scan_manifest",
    "scan_manifest_row",
    "validate_scan_manifest",
    "write_scan_manifest",
]

SCAN_MANIFEST_COLUMNS: tuple[str, ...] = (
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
#: The columns an encoder run needs (``slice_labels`` is optional there).
ENCODING_COLUMNS: tuple[str, ...] = ("scan_id", "patient_id", "label", "slice_files")
LIST_COLUMNS: tuple[str, ...] = ("slice_files", "slice_labels", "slice_sop_uids", "geometry_issues")
# per-slice lists that must have one entry per slice file
_ALIGNED = ("slice_labels", "slice_sop_uids")


class OrderedSlice(Protocol):
    """What :func:`scan_manifest_row` reads from a slice (a DICOM ``SliceHeader`` or a phantom ``SliceRecord``)."""

    path: Any
    sop_instance_uid: str
    series_instance_uid: str


def _as_list(value: Any, column: str, scan: str, source: str) -> list[Any] | None:
    """A list cell as a Python list: lists, arrays, JSON array strings or one plain string; None when empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}: scan {scan!r}: {column} is not a JSON array ({exc})") from exc
        return [text]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple, pd.Series)):
        return list(value)
    raise ValueError(f"{source}: scan {scan!r}: {column} must be a list, got {type(value).__name__}")


def validate_scan_manifest(
    df: pd.DataFrame, source: str = "scan manifest", required: Sequence[str] = SCAN_MANIFEST_COLUMNS
) -> pd.DataFrame:
    """Check a scan manifest; returns a copy whose list cells are Python lists (None where an optional one is empty).

    Every column of ``required`` must be present; the optional columns of the schema are checked when present.
    ``slice_labels`` and ``slice_sop_uids`` must have one entry per file (and ``n_slices`` equal the number of
    files) when ``slice_files`` lists more than one file; a single entry may be a DICOM folder or a volume file.

    Args:
        df: one row per scan.
        source: what to name in error messages (e.g. the file path).
        required: columns that must be present: ``SCAN_MANIFEST_COLUMNS`` (what ingest writes, the default) or
            ``ENCODING_COLUMNS`` (what an encoder run needs).

    Raises:
        TypeError: ``df`` is not a DataFrame.
        ValueError: naming ``source`` and the offending scan: missing columns, no rows, empty or duplicate scan ids,
            empty patient ids,
            labels not in {0, 1}, slice labels not in {-1, 0, 1}, a scan without slice files, misaligned slice lists,
            an ``n_slices`` mismatch.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: a scan manifest must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: lacks column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise ValueError(f"{source}: has no scans")
    out = df.copy()
    list_columns = [c for c in LIST_COLUMNS if c in out.columns]
    cells: dict[str, list[Any]] = {c: [] for c in list_columns}
    seen: set[str] = set()
    for i, row in enumerate(out.itertuples(index=False)):
        scan = str(row.scan_id)
        if not scan.strip():
            raise ValueError(f"{source}: row {i}: empty scan_id")
        if scan in seen:
            raise ValueError(f"{source}: row {i}: scan {scan!r} appears more than once")
        if "patient_id" in out.columns and (
            row.patient_id is None
            or (isinstance(row.patient_id, float) and math.isnan(row.patient_id))
            or not str(row.patient_id).strip()
        ):
            raise ValueError(f"{source}: scan {scan!r}: empty patient_id (the split key); every scan needs one")
        seen.add(scan)
        try:
            label = float(row.label)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: scan {scan!r}: label {row.label!r} is not an integer") from exc
        if label not in (0.0, 1.0):
            raise ValueError(f"{source}: scan {scan!r}: label {row.label} is not 0 or 1")
        lists = {c: _as_list(getattr(row, c), c, scan, source) for c in list_columns}
        for c, v in lists.items():
            if v is None and c in required and c != "geometry_issues":
                raise ValueError(f"{source}: scan {scan!r}: {c} is empty")
        files = lists["slice_files"]
        if not files:
            raise ValueError(f"{source}: scan {scan!r}: no slice files")
        n = len(files)
        if n > 1:
            for c in _ALIGNED:
                if lists.get(c) is not None and len(lists[c]) != n:
                    raise ValueError(f"{source}: scan {scan!r}: {c} has {len(lists[c])} entries, slice_files has {n}")
            if "n_slices" in out.columns and int(row.n_slices) != n:
                raise ValueError(f"{source}: scan {scan!r}: n_slices {row.n_slices} != {n} slice files")
        if lists.get("slice_labels") is not None:
            bad = [v for v in lists["slice_labels"] if v not in (-1, 0, 1)]
            if bad:
                raise ValueError(f"{source}: scan {scan!r}: slice labels must be -1, 0 or 1, got {bad[:5]}")
        for c in list_columns:
            cells[c].append(lists[c])
    for c in list_columns:
        out[c] = pd.Series(cells[c], index=out.index, dtype=object)
    return out


def write_scan_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write ``df`` to ``.csv`` (JSON list cells) or ``.parquet`` (native lists); returns ``path``."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: a scan manifest must end in .csv or .parquet")
    frame = validate_scan_manifest(df, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        for c in LIST_COLUMNS:
            frame[c] = [json.dumps(list(v)) for v in frame[c]]
        frame.to_csv(path, index=False)
    else:
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise ValueError(f"{path}: writing parquet needs pyarrow or fastparquet ({exc}); use a .csv path") from exc
    return path


def read_scan_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scan manifest written by :func:`write_scan_manifest`; list columns come back as Python lists.

    Raises:
        ValueError: naming ``path``: not found, not ``.csv`` / ``.parquet``, or not a valid scan manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: scan manifest not found")
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
        raise ValueError(f"{path}: a scan manifest must end in .csv or .parquet")
    for c in ("label", "n_slices"):
        if c in df.columns:
            df[c] = df[c].astype(int)
    if "slice_labels" in df.columns:
        df["slice_labels"] = [[int(x) for x in v] for v in df["slice_labels"]]
    return validate_scan_manifest(df, str(path))


def scan_manifest_row(
    scan_id: str,
    patient_id: str,
    label: int,
    slices: Sequence[OrderedSlice],
    slice_labels: list[int],
    dataset: str,
    geometry_issues: Sequence[str] = (),
) -> dict[str, Any]:
    """One scan-manifest row (columns ``SCAN_MANIFEST_COLUMNS``) for a series whose slices are in output order.

    Args:
        scan_id: unique scan id.
        patient_id: split key.
        label: scan label, 0 or 1.
        slices: the ordered slices (DICOM headers or phantom ``SliceRecord`` s); their paths, SOPInstanceUIDs and the
            first one's SeriesInstanceUID fill the row.
        slice_labels: aligned with ``slices``: 1 / 0, or -1 where unknown.
        dataset: the dataset adapter's name (``ich`` / ``pe`` / ``abdominal`` / ...).
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


#: Shortest key accepted by :func:`pseudonymize_patient_ids` (HMAC-SHA256 keys should have 32 random bytes).
MIN_PSEUDONYM_KEY_BYTES = 16


def read_pseudonym_key(path: str | os.PathLike) -> bytes:
    """The secret key of :func:`pseudonymize_patient_ids`: the bytes of ``path`` without surrounding whitespace.

    Make one with ``python -c "import secrets; print(secrets.token_hex(32))" > pseudonym.key`` and keep it with
    the raw data, not with the manifest or the stores.

    Raises:
        ValueError: naming ``path``: not readable, or shorter than :data:`MIN_PSEUDONYM_KEY_BYTES` bytes.
    """
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"{path}: pseudonym key file cannot be read ({exc.strerror})") from exc
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise ValueError(
            f"{path}: pseudonym key has {len(key)} bytes; give at least {MIN_PSEUDONYM_KEY_BYTES} random bytes "
            '(python -c "import secrets; print(secrets.token_hex(32))")'
        )
    return key


def pseudonymize_patient_ids(df: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """A copy of ``df`` whose ``patient_id`` values are replaced by keyed hashes (HMAC-SHA256, RFC 2104).

    ``patient_id`` becomes ``"p" + the first 32 hex digits of HMAC-SHA256(key, UTF-8 id)``: one patient keeps one
    pseudonym under one key (so patient-level splits still hold), the original id cannot be recovered, and without
    the key it cannot be confirmed by hashing candidate ids. Other columns are left as they are.

    Args:
        df: a table with a ``patient_id`` column (a scan manifest).
        key: the secret key (at least :data:`MIN_PSEUDONYM_KEY_BYTES` bytes; see :func:`read_pseudonym_key`).

    Raises:
        ValueError: no ``patient_id`` column, a key that is too short, or an empty patient id.
    """
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise ValueError(f"the pseudonym key must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes")
    if "patient_id" not in df.columns:
        raise ValueError("no patient_id column to pseudonymize")
    out = df.copy()
    pseudonyms = []
    for i, value in enumerate(out["patient_id"]):
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
        if not text:
            raise ValueError(f"row {i}: empty patient_id; cannot pseudonymize it")
        pseudonyms.append("p" + hmac.new(bytes(key), text.encode("utf-8"), hashlib.sha256).hexdigest()[:32])
    out["patient_id"] = pseudonyms
    return out
