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
from pathlib import Path

import pandas as pd

__all__ = [
    "LIST_COLUMNS",
    "MANIFEST_COLUMNS",
    "read_manifest",
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
