"""The plain-file outputs of inference: one ``<scan_id>.json`` per scan and one CSV for all scans.

Both are written atomically (:func:`monai_ng.reporting.atomic_file.write_atomic`), so an interrupted run leaves no
half file, and both read back to the exact same :class:`~monai_ng.reporting.scan_result.ScanResult` (floats are
written with Python's shortest round-tripping representation).

CSV layout — one row per slice, the scan-level columns repeated on each row, so the file is one tidy table that
``pandas.read_csv`` can group by ``scan_id`` and that needs no join:

===================== =========================================================================
column                meaning
===================== =========================================================================
scan_id               pseudonymous scan id
scan_probability      P(finding) of the scan
threshold             decision threshold; ``finding`` = ``scan_probability >= threshold``
finding               ``1`` or ``0``
study_instance_uid    source StudyInstanceUID (empty for non-DICOM input)
series_instance_uid   source SeriesInstanceUID (empty for non-DICOM input)
slice_index           0-based, inferior→superior
score                 head-averaged attention of the slice
z_mm                  patient z in mm (empty when unknown)
sop_instance_uid      the slice's SOPInstanceUID (empty for non-DICOM input)
sop_class_uid         the slice's SOPClassUID (empty when unknown)
top_k_rank            1..k for the k flagged slices (best first), empty otherwise
===================== =========================================================================

No patient identifier is ever written: the only columns are the ones above.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from monai_ng.reporting.atomic_file import write_atomic
from monai_ng.reporting.scan_result import ScanResult, SliceScore, check_scan_id

__all__ = ["CSV_COLUMNS", "write_scan_json", "read_scan_json", "write_results_csv", "read_results_csv"]

CSV_COLUMNS = (
    "scan_id",
    "scan_probability",
    "threshold",
    "finding",
    "study_instance_uid",
    "series_instance_uid",
    "slice_index",
    "score",
    "z_mm",
    "sop_instance_uid",
    "sop_class_uid",
    "top_k_rank",
)


def _check_result(result: object) -> ScanResult:
    if not isinstance(result, ScanResult):
        raise TypeError(f"result must be a ScanResult, got {type(result).__name__}")
    return result


def _check_folder(out_dir: str | os.PathLike[str]) -> Path:
    folder = Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    return folder


def write_scan_json(result: ScanResult, out_dir: str | os.PathLike[str], top_k: int = 5) -> Path:
    """Write ``<out_dir>/<scan_id>.json`` (see :meth:`ScanResult.to_json_dict`), atomically.

    Args:
        result: the scan's result.
        out_dir: existing output folder.
        top_k: number of flagged slices listed under ``"top_k"``.

    Returns:
        The path written.
    """
    result = _check_result(result)
    folder = _check_folder(out_dir)
    text = json.dumps(result.to_json_dict(top_k=top_k), indent=2, allow_nan=False) + "\n"
    return write_atomic(folder / f"{check_scan_id(result.scan_id)}.json", text.encode("utf-8"))


def read_scan_json(path: str | os.PathLike[str]) -> ScanResult:
    """Read a file written by :func:`write_scan_json`.

    Raises:
        ValueError: the file is not valid JSON or not a valid scan result; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ScanResult.from_json_dict(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid scan result: {exc}") from exc


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def write_results_csv(results: Iterable[ScanResult], path: str | os.PathLike[str], top_k: int = 5) -> Path:
    """Write one CSV for all scans, one row per slice (layout in the module docstring), atomically.

    Args:
        results: the scans' results; scan ids must be unique.
        path: the CSV file to create or replace; its folder must exist.
        top_k: the slices ranked ``1..top_k`` per scan get a ``top_k_rank``.

    Returns:
        The path written.
    """
    results = [_check_result(r) for r in results]
    seen: set[str] = set()
    for r in results:
        if r.scan_id in seen:
            raise ValueError(f"scan_id {r.scan_id!r} appears more than once in the results")
        seen.add(r.scan_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        rank = {s.index: i + 1 for i, s in enumerate(r.top_k(top_k))}
        for s in r.slices:
            writer.writerow(
                (
                    r.scan_id,
                    _num(r.scan_probability),
                    _num(r.threshold),
                    int(r.finding),
                    r.study_instance_uid or "",
                    r.series_instance_uid or "",
                    s.index,
                    _num(s.score),
                    _num(s.z_mm),
                    s.sop_instance_uid or "",
                    s.sop_class_uid or "",
                    rank.get(s.index, ""),
                )
            )
    return write_atomic(Path(path), buffer.getvalue().encode("utf-8"))


def read_results_csv(path: str | os.PathLike[str]) -> list[ScanResult]:
    """Read a CSV written by :func:`write_results_csv` back into results, in file order.

    Raises:
        ValueError: wrong header, or rows of one scan that disagree on a scan-level column, or an invalid result;
            the message names the file and line.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(CSV_COLUMNS)}, got {header}")
        scans: dict[str, tuple[tuple[str, ...], list[SliceScore]]] = {}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(CSV_COLUMNS):
                raise ValueError(f"{path}:{line}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
            rec = dict(zip(CSV_COLUMNS, row, strict=True))
            scan_level = tuple(rec[c] for c in CSV_COLUMNS[:6])
            try:
                sl = SliceScore(
                    index=int(rec["slice_index"]),
                    score=float(rec["score"]),
                    z_mm=float(rec["z_mm"]) if rec["z_mm"] else None,
                    sop_instance_uid=rec["sop_instance_uid"] or None,
                    sop_class_uid=rec["sop_class_uid"] or None,
                )
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{line}: scan {rec['scan_id']!r}: {exc}") from exc
            if rec["scan_id"] not in scans:
                scans[rec["scan_id"]] = (scan_level, [])
            first, slices = scans[rec["scan_id"]]
            if first != scan_level:
                raise ValueError(
                    f"{path}:{line}: scan {rec['scan_id']!r} has scan-level columns that differ between rows"
                )
            slices.append(sl)
    out = []
    for scan_id, (level, slices) in scans.items():
        try:
            result = ScanResult(
                scan_id=scan_id,
                scan_probability=float(level[1]),
                threshold=float(level[2]),
                slices=tuple(slices),
                study_instance_uid=level[4] or None,
                series_instance_uid=level[5] or None,
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if level[3] != str(int(result.finding)):
            raise ValueError(f"{path}: scan {scan_id!r}: finding column {level[3]!r} disagrees with the probability")
        out.append(result)
    return out
