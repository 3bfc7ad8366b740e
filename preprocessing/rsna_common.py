"""Helpers shared by the RSNA dataset adapters: the adapter class, header reading, series ordering, per-image label
lookup."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from monai_ng.data.dataset_adapter import DatasetAdapter
from monai_ng.io.dicom_header import SliceHeader
from monai_ng.io.header_scan import group_by_series, scan_headers
from monai_ng.io.series_geometry import SeriesGeometry, order_series

__all__ = [
    "RsnaAdapter",
    "lookup_slice_labels",
    "order_or_record",
    "ordered_series",
    "read_dicom_headers",
    "report_orphans",
    "require_dir",
]


class RsnaAdapter(DatasetAdapter):
    """A dataset adapter whose manifest is built by one function of its module.

    Subclasses set ``name``, ``description`` and ``build`` (``staticmethod(build_<dataset>_manifest)``), which
    :meth:`build_manifest` calls as ``build(root, workers=workers, progress=progress, **options)``.
    """

    build: Callable[..., tuple[pd.DataFrame, list[tuple[str, str]]]]

    def build_manifest(
        self, root: str | os.PathLike, workers: int = 1, progress: bool = True, **options: Any
    ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        return self.build(root, workers=workers, progress=progress, **options)


def require_dir(path: Path, expected: str = "") -> Path:
    """Return ``path`` when it is a directory.

    Raises:
        ValueError: ``"<path>: not a directory"`` (the download root, ``expected`` empty) or ``"<path>: image folder
            not found (expected <expected>)"``.
    """
    if not path.is_dir():
        raise ValueError(
            f"{path}: image folder not found (expected {expected})" if expected else f"{path}: not a directory"
        )
    return path


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
        result = order_or_record(group, uid, failures)
        if result is not None:
            yield uid, *result


def order_or_record(
    group: Sequence[SliceHeader], scan: str, failures: list[tuple[str, str]]
) -> tuple[list[SliceHeader], SeriesGeometry] | None:
    """:func:`~monai_ng.io.series_geometry.order_series` of one scan's headers, or ``None`` after appending
    ``("scan <scan>", reason)`` to ``failures`` when the series cannot be ordered."""
    try:
        return order_series(group)
    except ValueError as exc:
        failures.append((f"scan {scan}", str(exc)))
        return None


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
