"""Header-only DICOM reading, series grouping and slice geometry checks for CT series.

Only the tags needed to group and order slices are parsed (``pydicom.dcmread(stop_before_pixels=True,
specific_tags=...)``), so a folder of hundreds of thousands of single-slice files (RSNA ICH 2019) can be indexed
quickly and in parallel. Plain uncompressed little-endian files (the usual CT slice) are read by a one-pass reader
(``read_native_slice`` / ``read_native_header``) that decodes just those tags from the file's bytes and keeps
PixelData as a view; it gives the same headers as pydicom and hands every file it is unsure about to pydicom. Ordering follows the DICOM geometry (PS3.3 C.7.6.2.1.1): the slice normal is the cross
product of the row and column direction cosines of ImageOrientationPatient (IOP), and a slice's position along
the series is the projection of its ImagePositionPatient (IPP) on that normal. InstanceNumber and file names are
never used for ordering (MONAI's ``PydicomReader`` sorts by InstanceNumber and averages gaps away).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import struct
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

__all__ = [
    "HEADER_TAGS",
    "HeaderScan",
    "SeriesGeometry",
    "SliceHeader",
    "analyze_series_geometry",
    "group_by_series",
    "header_from_dataset",
    "lenient_value_reading",
    "NativeSlice",
    "list_dicom_files",
    "order_series",
    "read_native_header",
    "read_native_slice",
    "read_slice_header",
    "scan_headers",
]

#: Tags parsed by :func:`read_slice_header` (PixelData is never read here).
HEADER_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "Modality",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "WindowCenter",
    "WindowWidth",
    "GantryDetectorTilt",
)


@dataclass(frozen=True)
class SliceHeader:
    """Geometry and pixel-format header of one single-frame DICOM slice.

    ``patient_id`` is the dataset's own pseudonymous PatientID; it is used only to build patient-level splits.
    Names, birth dates and other identifiers are never read.

    Attributes:
        path: file path as given.
        sop_instance_uid / series_instance_uid / study_instance_uid: the DICOM UIDs (empty string if absent).
        patient_id: pseudonymous PatientID (empty string if absent).
        image_position: ImagePositionPatient ``(x, y, z)`` in mm, LPS; ``None`` if absent.
        image_orientation: ImageOrientationPatient ``(rx, ry, rz, cx, cy, cz)``; ``None`` if absent.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm; ``None`` if absent.
        rows / columns: image size (``Rows`` = number of rows = height).
        rescale_slope / rescale_intercept: modality LUT, defaults 1 and 0.
        bits_allocated / bits_stored / pixel_representation: pixel format (0 unsigned, 1 two's complement).
        photometric: PhotometricInterpretation.
        instance_number: InstanceNumber or ``None``.
        transfer_syntax: TransferSyntaxUID of the file meta ("" if absent).
        window_center / window_width: first value of the (possibly multi-valued) window tags, or ``None``.
        number_of_frames: NumberOfFrames (1 when absent).
        gantry_tilt: GantryDetectorTilt in degrees (0 when absent).
        modality: Modality ("" if absent).
    """

    path: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    photometric: str = "MONOCHROME2"
    instance_number: int | None = None
    transfer_syntax: str = ""
    window_center: float | None = None
    window_width: float | None = None
    number_of_frames: int = 1
    gantry_tilt: float = 0.0
    modality: str = ""

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row x col`` (LPS), shape ``[3]``; raises if IOP is missing."""
        if self.image_orientation is None:
            raise ValueError(f"{self.path}: no ImageOrientationPatient, cannot compute the slice normal")
        return slice_normal(self.image_orientation, self.path)

    def to_dict(self) -> dict:
        """Plain-dict view (for DataFrames / JSON)."""
        return asdict(self)


def _first(value: object) -> object:
    """First item of a multi-valued element (RSNA ICH stores WindowCenter/Width as ``[40, 40]`` sometimes)."""
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return value[0] if len(value) else None
    return value


def _float_or_none(value: object) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    return float(value)


def _floats(ds: pydicom.Dataset, keyword: str, n: int, path: str) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {keyword} is not numeric ({value!r})") from exc
    if len(out) != n:
        raise ValueError(f"{path}: {keyword} has {len(out)} values, expected {n}")
    if not all(np.isfinite(out)):
        raise ValueError(f"{path}: {keyword} has non-finite values {out}")
    return out


def slice_normal(orientation: Sequence[float], path: str = "") -> np.ndarray:
    """Unit normal ``row x col`` of an ImageOrientationPatient (DICOM PS3.3 C.7.6.2.1.1).

    Args:
        orientation: the six direction cosines ``(rx, ry, rz, cx, cy, cz)``.
        path: file named in error messages.

    Returns:
        The normal, shape ``[3]``, in LPS patient coordinates.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    if norm < 1e-3 or abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2:
        raise ValueError(f"{path}: ImageOrientationPatient {tuple(iop)} is not two orthonormal direction cosines")
    return n / norm


def read_slice_header(path: str | os.PathLike) -> SliceHeader:
    """Read the header of one DICOM file without its pixel data.

    Args:
        path: a DICOM Part 10 file (with the ``DICM`` preamble).

    Returns:
        The :class:`SliceHeader`.

    Raises:
        ValueError: naming the file and the reason (not DICOM, truncated header, not an image, multi-frame,
            malformed geometry tags).
    """
    path = str(path)
    header = read_native_header(path)  # plain uncompressed little-endian files: a few KB parsed without pydicom
    if header is not None:
        return header
    with lenient_value_reading():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except InvalidDicomError as exc:
            raise ValueError(f"{path}: not a DICOM file ({exc})") from exc
        except FileNotFoundError as exc:
            raise ValueError(f"{path}: file not found") from exc
        except (OSError, EOFError, struct.error) as exc:
            raise ValueError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
        return header_from_dataset(ds, path)


@contextlib.contextmanager
def lenient_value_reading() -> Iterator[None]:
    """Silence pydicom's value validation while reading (restored on exit).

    RSNA ICH 2019 ships ``ID_<hex>`` strings as UIDs, which are not valid UI values; pydicom would warn and log once
    per element and file (millions of lines for the full dataset). The values are still used as ids.
    """
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR")
            yield
    finally:
        settings.reading_validation_mode = previous


def header_from_dataset(ds: pydicom.Dataset, path: str) -> SliceHeader:
    """Build a :class:`SliceHeader` from an already read dataset (raises ``ValueError`` naming ``path``)."""
    try:
        return _build_header(ds, path)
    except ValueError:
        raise
    except Exception as exc:  # malformed element values surface lazily while converting
        raise ValueError(f"{path}: malformed DICOM header ({type(exc).__name__}: {exc})") from exc


def _build_header(ds: pydicom.Dataset, path: str) -> SliceHeader:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
        name = str(getattr(sop_class, "name", sop_class)) if sop_class else "unknown SOP class"
        if "Image Storage" in name:
            raise ValueError(f"{path}: {name} header without Rows/Columns: file truncated or header incomplete")
        raise ValueError(f"{path}: not an image (no Rows/Columns; SOP class {name})")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise ValueError(f"{path}: multi-frame image with {frames} frames; only single-slice files are supported")
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1:
        raise ValueError(f"{path}: {samples} samples per pixel; CT slices must be single-channel")
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    spacing = _floats(ds, "PixelSpacing", 2, path)
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    slope = _float_or_none(ds.get("RescaleSlope"))
    intercept = _float_or_none(ds.get("RescaleIntercept"))
    inst = ds.get("InstanceNumber")
    tilt = _float_or_none(ds.get("GantryDetectorTilt"))
    return SliceHeader(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        image_position=ipp,  # type: ignore[arg-type]
        image_orientation=iop,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        rows=int(rows),
        columns=int(cols),
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=0.0 if intercept is None else intercept,
        bits_allocated=int(ds.get("BitsAllocated") or 16),
        bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16),
        pixel_representation=int(ds.get("PixelRepresentation") or 0),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        instance_number=None if inst in (None, "") else int(inst),
        transfer_syntax=tsyntax,
        window_center=_float_or_none(ds.get("WindowCenter")),
        window_width=_float_or_none(ds.get("WindowWidth")),
        number_of_frames=frames,
        gantry_tilt=0.0 if tilt is None else tilt,
        modality=str(ds.get("Modality", "")),
    )


def list_dicom_files(folder: str | os.PathLike, pattern: str = "*.dcm") -> list[str]:
    """All files under ``folder`` (recursive) matching ``pattern``, sorted for reproducibility.

    Raises:
        ValueError: if ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    return sorted(str(p) for p in root.rglob(pattern) if p.is_file())


def _read_chunk(paths: Sequence[str]) -> list[tuple[str, SliceHeader | None, str]]:
    out: list[tuple[str, SliceHeader | None, str]] = []
    for p in paths:
        try:
            out.append((p, read_slice_header(p), ""))
        except ValueError as exc:
            out.append((p, None, str(exc)))
    return out


@dataclass
class HeaderScan:
    """Result of :func:`scan_headers`.

    Attributes:
        headers: one :class:`SliceHeader` per readable file, in input order.
        failures: ``(file, reason)`` per unreadable file; the scan goes on past them.
        seconds: wall time of the scan.
    """

    headers: list[SliceHeader]
    failures: list[tuple[str, str]]
    seconds: float

    @property
    def files_per_second(self) -> float:
        """Throughput over all files (readable or not)."""
        n = len(self.headers) + len(self.failures)
        return n / self.seconds if self.seconds > 0 else float("inf")


def scan_headers(
    folder_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    workers: int = 1,
    pattern: str = "*.dcm",
    progress: bool = True,
    chunk_size: int = 64,
) -> HeaderScan:
    """Read the headers of many DICOM files in parallel, recording failures per file and going on.

    Args:
        folder_or_files: a folder (searched recursively for ``pattern``) or an iterable of file paths.
        workers: processes to use (header parsing is CPU-bound Python, so processes beat threads); ``<= 1`` reads
            serially in this process.
        pattern: glob used when a folder is given.
        progress: show a tqdm bar (files/s).
        chunk_size: files per task sent to a worker.

    Returns:
        A :class:`HeaderScan` (headers in input order, failures, wall time; ``files_per_second``).
    """
    if not isinstance(workers, int) or isinstance(workers, bool):
        raise TypeError(f"workers must be an int, got {type(workers).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(folder_or_files, (str, os.PathLike)):
        files = list_dicom_files(folder_or_files, pattern)
    else:
        files = [str(f) for f in folder_or_files]
    from tqdm.auto import tqdm

    start = time.perf_counter()
    chunks = [files[i : i + chunk_size] for i in range(0, len(files), chunk_size)]
    results: list[tuple[str, SliceHeader | None, str]] = []
    bar = tqdm(total=len(files), unit="file", desc="DICOM headers", disable=not progress or not files)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.extend(_read_chunk(chunk))
            bar.update(len(chunk))
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_read_chunk, chunks):  # map keeps input order
                results.extend(res)
                bar.update(len(res))
    bar.close()
    headers = [h for _, h, _ in results if h is not None]
    failures = [(p, r) for p, h, r in results if h is None]
    return HeaderScan(headers=headers, failures=failures, seconds=time.perf_counter() - start)


def group_by_series(headers: Iterable[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Group headers by SeriesInstanceUID (insertion order kept); a missing UID groups under ``""``."""
    groups: dict[str, list[SliceHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_instance_uid, []).append(h)
    return groups


@dataclass
class SeriesGeometry:
    """Structured geometry report of one series, slices ordered inferior -> superior.

    Attributes:
        order: indices into the input header list, in output slice order.
        positions: projection of each ordered slice's IPP on the slice normal (mm), shape ``[Z]``.
        normal: unit slice normal (LPS), ``(nx, ny, nz)``.
        slice_spacing: median distance between consecutive distinct positions (mm); 0 for one slice.
        step: mean IPP step vector between consecutive ordered slices (LPS mm); the affine's third column.
        pixel_spacing: ``(row spacing, column spacing)`` in mm.
        shape: ``(rows, columns)``.
        dropped: indices of inputs removed as exact duplicates (same SOPInstanceUID and position) or, when
            duplicate positions are not raised, later files at an already occupied position.
        duplicate_positions: groups of input indices sharing one position with different SOPInstanceUIDs.
        gaps: ``(k, distance)`` where the distance between ordered slices ``k`` and ``k + 1`` exceeds
            ``gap_factor`` times the median spacing (missing slices).
        inconsistent_spacing: ``True`` if some spacing deviates from the median by more than
            ``spacing_tolerance`` (relative) without being a gap.
        tilt_degrees: angle between the slice-to-slice step and the normal (gantry tilt), or the
            GantryDetectorTilt tag when larger.
        non_axial: slice normal more than ``axial_tolerance_degrees`` away from the patient z axis.
        issues: human-readable list of every problem found (empty = clean series); these are what
            ``on_geometry_issue`` acts on.
        notes: harmless events (exact duplicates dropped), never raised.
    """

    order: list[int]
    positions: list[float]
    normal: tuple[float, float, float]
    slice_spacing: float
    step: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    dropped: list[int] = field(default_factory=list)
    duplicate_positions: list[list[int]] = field(default_factory=list)
    gaps: list[tuple[int, float]] = field(default_factory=list)
    inconsistent_spacing: bool = False
    tilt_degrees: float = 0.0
    non_axial: bool = False
    issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain-dict view (JSON-serialisable)."""
        return asdict(self)


def analyze_series_geometry(
    headers: Sequence[SliceHeader],
    gap_factor: float = 1.5,
    spacing_tolerance: float = 0.1,
    tilt_tolerance_degrees: float = 0.5,
    axial_tolerance_degrees: float = 30.0,
    position_tolerance: float = 1e-3,
) -> SeriesGeometry:
    """Order the slices of one series along the slice normal and report its geometry problems.

    The normal ``n = row x col`` comes from the first slice's IOP; every slice's position is ``IPP . n``. Slices
    are sorted by that projection, and the order is reversed when ``n`` points inferior (negative LPS z), so the
    output always runs inferior -> superior for axial-ish series (for sagittal/coronal series the order runs
    along ``n``).

    Args:
        headers: the slices of one series (any order).
        gap_factor: a spacing larger than ``gap_factor * median`` is a gap (missing slice).
        spacing_tolerance: relative deviation from the median spacing tolerated before reporting inconsistency.
        tilt_tolerance_degrees: angle between step and normal tolerated before reporting gantry tilt.
        axial_tolerance_degrees: angle between normal and patient z tolerated before reporting non-axial.
        position_tolerance: two positions closer than this (mm) are the same position.

    Returns:
        The :class:`SeriesGeometry`.

    Raises:
        ValueError: naming the file and reason for: no slices, mixed series, missing IPP/IOP/PixelSpacing,
            inconsistent IOP or image shape or pixel spacing (these cannot be stacked into one volume), and
            conflicting duplicates (one SOPInstanceUID at two different positions).
    """
    if len(headers) == 0:
        raise ValueError("no slices given")
    uids = {h.series_instance_uid for h in headers}
    if len(uids) > 1:
        raise ValueError(f"{headers[0].path}: slices belong to {len(uids)} series {sorted(uids)[:5]}; give one")
    for h in headers:
        for name, value in (
            ("ImagePositionPatient", h.image_position),
            ("ImageOrientationPatient", h.image_orientation),
            ("PixelSpacing", h.pixel_spacing),
        ):
            if value is None:
                raise ValueError(f"{h.path}: missing {name}; cannot place the slice in the series")
    first = headers[0]
    iop0 = np.asarray(first.image_orientation)
    n = slice_normal(iop0, first.path)
    for h in headers[1:]:
        if np.max(np.abs(np.asarray(h.image_orientation) - iop0)) > 1e-3:
            raise ValueError(
                f"{h.path}: ImageOrientationPatient {h.image_orientation} differs from {first.path} "
                f"{first.image_orientation} within series {first.series_instance_uid}"
            )
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise ValueError(
                f"{h.path}: image shape {(h.rows, h.columns)} differs from {(first.rows, first.columns)} of "
                f"{first.path} within series {first.series_instance_uid}"
            )
        if np.max(np.abs(np.asarray(h.pixel_spacing) - np.asarray(first.pixel_spacing))) > 1e-3:
            raise ValueError(
                f"{h.path}: PixelSpacing {h.pixel_spacing} differs from {first.pixel_spacing} of {first.path} "
                f"within series {first.series_instance_uid}"
            )
    issues: list[str] = []
    notes: list[str] = []
    ipp = np.asarray([h.image_position for h in headers], dtype=np.float64)
    proj = ipp @ n
    # exact duplicates (same SOP) are dropped; same SOP at another position is a conflict
    dropped: list[int] = []
    seen_sop: dict[str, int] = {}
    keep: list[int] = []
    for i, h in enumerate(headers):
        sop = h.sop_instance_uid
        if sop and sop in seen_sop:
            j = seen_sop[sop]
            if np.linalg.norm(ipp[i] - ipp[j]) > position_tolerance:
                raise ValueError(
                    f"{h.path}: SOPInstanceUID {sop} also in {headers[j].path} at a different position "
                    f"({tuple(ipp[j])} vs {tuple(ipp[i])}); conflicting duplicate"
                )
            dropped.append(i)
            notes.append(f"exact duplicate of {headers[j].path} dropped: {h.path}")
            continue
        seen_sop[sop] = i
        keep.append(i)
    # sort by projection, ties by InstanceNumber then path (deterministic)
    keep.sort(key=lambda i: (proj[i], headers[i].instance_number or 0, headers[i].path))
    if n[2] < 0:
        keep.reverse()
    duplicates: list[list[int]] = []
    order: list[int] = []
    for i in keep:
        if order and abs(proj[i] - proj[order[-1]]) <= position_tolerance:
            if duplicates and duplicates[-1][0] == order[-1]:
                duplicates[-1].append(i)
            else:
                duplicates.append([order[-1], i])
            dropped.append(i)
            continue
        order.append(i)
    for group in duplicates:
        issues.append(
            f"duplicate position {proj[group[0]]:.3f} mm shared by different SOPs: "
            + ", ".join(headers[g].path for g in group)
        )
    pos = proj[order]
    diffs = np.abs(np.diff(pos))
    spacing = float(np.median(diffs)) if len(diffs) else 0.0
    gaps: list[tuple[int, float]] = []
    inconsistent = False
    if len(diffs):
        for k, d in enumerate(diffs):
            if d > gap_factor * spacing:
                gaps.append((k, float(d)))
                issues.append(
                    f"gap of {d:.3f} mm (median spacing {spacing:.3f} mm) between {headers[order[k]].path} and "
                    f"{headers[order[k + 1]].path}: missing slice(s)"
                )
            elif abs(d - spacing) > spacing_tolerance * spacing:
                inconsistent = True
        if inconsistent:
            issues.append(
                f"inconsistent slice spacing: {float(diffs.min()):.3f}..{float(diffs.max()):.3f} mm "
                f"(median {spacing:.3f}) in series {first.series_instance_uid}"
            )
    if len(order) > 1:
        step = (ipp[order[-1]] - ipp[order[0]]) / (len(order) - 1)
        if gaps:  # mean step is stretched by gaps: use the median spacing along the step's direction
            step = step / np.linalg.norm(step) * spacing
        cosang = abs(float(step @ n)) / max(float(np.linalg.norm(step)), 1e-12)
        tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
    else:
        step = n * 1.0
        tilt = 0.0
    tilt = max(tilt, abs(first.gantry_tilt))
    if tilt > tilt_tolerance_degrees:
        issues.append(f"gantry tilt of {tilt:.2f} degrees in series {first.series_instance_uid}")
    axial_angle = float(np.degrees(np.arccos(min(1.0, abs(float(n[2]))))))
    non_axial = axial_angle > axial_tolerance_degrees
    if non_axial:
        issues.append(
            f"non-axial acquisition: slice normal {tuple(np.round(n, 3))} is {axial_angle:.1f} degrees from the "
            f"patient z axis in series {first.series_instance_uid}"
        )
    return SeriesGeometry(
        order=[int(i) for i in order],
        positions=[float(p) for p in pos],
        normal=tuple(float(v) for v in n),  # type: ignore[arg-type]
        slice_spacing=spacing,
        step=tuple(float(v) for v in step),  # type: ignore[arg-type]
        pixel_spacing=tuple(float(v) for v in first.pixel_spacing),  # type: ignore[arg-type,union-attr]
        shape=(first.rows, first.columns),
        dropped=sorted(int(i) for i in dropped),
        duplicate_positions=[[int(g) for g in group] for group in duplicates],
        gaps=gaps,
        inconsistent_spacing=inconsistent,
        tilt_degrees=tilt,
        non_axial=non_axial,
        issues=issues,
        notes=notes,
    )


def order_series(headers: Sequence[SliceHeader], **geometry_kwargs: float) -> tuple[list[SliceHeader], SeriesGeometry]:
    """Headers of one series in output order (inferior -> superior), with the geometry report.

    Args:
        headers: the slices of one series.
        **geometry_kwargs: thresholds for :func:`analyze_series_geometry`.

    Returns:
        ``(ordered headers, geometry)``; exact duplicates and later files at an occupied position are left out.
    """
    geometry = analyze_series_geometry(headers, **geometry_kwargs)
    return [headers[i] for i in geometry.order], geometry


# ---------------------------------------------------------------------------------------------------------------
# One-pass reader for plain uncompressed little-endian slices
# ---------------------------------------------------------------------------------------------------------------

#: Implicit and Explicit VR Little Endian: the dataset and PixelData are stored as is.
NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS"}
    | {b"ST", b"TM", b"UI", b"UL", b"US"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
_NUMBER = re.compile(rb"[ 0-9+\-.eE]+")
_TEXT = re.compile(rb"[ -\[\]-~]*")  # printable ASCII without backslash (no multi-values, no escapes)

#: The header tags read by the one-pass reader: ``tag -> (keyword, VR)`` (an explicit VR must match).
_NATIVE_TAGS: dict[int, tuple[str, bytes]] = {
    0x00080016: ("SOPClassUID", b"UI"),
    0x00080018: ("SOPInstanceUID", b"UI"),
    0x00080060: ("Modality", b"CS"),
    0x00100020: ("PatientID", b"LO"),
    0x00181120: ("GantryDetectorTilt", b"DS"),
    0x0020000D: ("StudyInstanceUID", b"UI"),
    0x0020000E: ("SeriesInstanceUID", b"UI"),
    0x00200013: ("InstanceNumber", b"IS"),
    0x00200032: ("ImagePositionPatient", b"DS"),
    0x00200037: ("ImageOrientationPatient", b"DS"),
    0x00280002: ("SamplesPerPixel", b"US"),
    0x00280004: ("PhotometricInterpretation", b"CS"),
    0x00280008: ("NumberOfFrames", b"IS"),
    0x00280010: ("Rows", b"US"),
    0x00280011: ("Columns", b"US"),
    0x00280030: ("PixelSpacing", b"DS"),
    0x00280100: ("BitsAllocated", b"US"),
    0x00280101: ("BitsStored", b"US"),
    0x00280102: ("HighBit", b"US"),
    0x00280103: ("PixelRepresentation", b"US"),
    0x00281050: ("WindowCenter", b"DS"),
    0x00281051: ("WindowWidth", b"DS"),
    0x00281052: ("RescaleIntercept", b"DS"),
    0x00281053: ("RescaleSlope", b"DS"),
}
_TEXT_VRS = (b"UI", b"CS", b"LO")


class _Unsupported(Exception):
    """The file needs pydicom (anything the one-pass reader does not handle exactly)."""


class _Truncated(_Unsupported):
    """The bytes read end before the header does (read more of the file, or defer to pydicom)."""


class _Values(dict):
    """The few decoded header values, looked up like a pydicom ``Dataset`` by :func:`header_from_dataset`."""

    file_meta: dict


@dataclass(frozen=True)
class NativeSlice:
    """A slice read by :func:`read_native_slice`: its header and its raw PixelData bytes.

    Attributes:
        header: the :class:`SliceHeader` (identical to ``header_from_dataset(pydicom.dcmread(path), path)``).
        pixel_data: the PixelData value, a zero-copy view into the file's bytes.
        bits_allocated / bits_stored / pixel_representation / photometric: the pixel-module values as stored
            in the file (``None`` when absent), which pydicom's decoder would use.
    """

    header: SliceHeader
    pixel_data: memoryview
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    photometric: str | None

    @property
    def path(self) -> str:
        """The file read."""
        return self.header.path


def _decode_value(raw: bytes, kind: bytes) -> object:
    if kind == b"US":
        if len(raw) != 2:
            raise _Unsupported
        return int.from_bytes(raw, "little")
    if not raw.strip(b" \x00") or not _TEXT.fullmatch(raw.rstrip(b"\x00")):
        raise _Unsupported  # empty, non-ASCII, escape sequences or multi-valued text: pydicom decides
    if kind in _TEXT_VRS:
        return raw.decode("ascii").rstrip(" \x00")
    raise _Unsupported


def _decode_number(raw: bytes, kind: bytes) -> object:
    text = raw.rstrip(b"\x00")
    if not _NUMBER.fullmatch(text.replace(b"\\", b" ")) or not text.strip():
        raise _Unsupported
    items = text.decode("ascii").strip().split("\\")
    if any(not item.strip() for item in items):
        raise _Unsupported
    try:
        values = [float(item) for item in items] if kind == b"DS" else [int(item) for item in items]
    except ValueError as exc:
        raise _Unsupported from exc
    return values[0] if len(values) == 1 else values


def _skip_undefined(buf: memoryview, pos: int, implicit: bool) -> int:
    """Position after an undefined-length sequence value starting at ``pos`` (items parsed, contents skipped)."""
    end = len(buf)
    while pos + 8 <= end:
        tag = (int.from_bytes(buf[pos : pos + 2], "little") << 16) | int.from_bytes(buf[pos + 2 : pos + 4], "little")
        length = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Unsupported
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _walk(buf, pos, implicit, None)  # undefined-length item: elements up to the item delimiter
    raise _Truncated


def _explicit_element(buf: memoryview, pos: int, end: int) -> tuple[bytes, int, int]:
    """``(VR, value length, value start)`` of the explicit-VR little-endian element whose tag starts at ``pos``.

    Long VRs (OB, SQ, UN, ...) have 2 reserved bytes and a 4-byte length, the others a 2-byte length (PS3.5 7.1.2).
    """
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        if pos + 12 > end:
            raise _Truncated
        return vr, int.from_bytes(buf[pos + 8 : pos + 12], "little"), pos + 12
    if vr in _SHORT_VRS:
        return vr, int.from_bytes(buf[pos + 6 : pos + 8], "little"), pos + 8
    raise _Unsupported


def _walk(buf: memoryview, pos: int, implicit: bool, wanted: dict | None, need_pixels: bool = True) -> int:
    """Walk data elements from ``pos``; with ``wanted`` (top level) collect the header tags and stop at PixelData.

    Returns the position after an item delimiter (nested), or the start of the PixelData value (top level, with
    ``wanted["_pixel"] = (offset, length)``; with ``need_pixels=False`` the value may lie beyond the bytes read).
    """
    end = len(buf)
    previous = -1
    while pos + 8 <= end:
        tag = (int.from_bytes(buf[pos : pos + 2], "little") << 16) | int.from_bytes(buf[pos + 2 : pos + 4], "little")
        if tag == _ITEM_END:
            return pos + 8
        if implicit or tag >> 16 == 0xFFFE:
            vr = b""
            length = int.from_bytes(buf[pos + 4 : pos + 8], "little")
            pos += 8
        else:
            vr, length, pos = _explicit_element(buf, pos, end)
        if wanted is not None:
            if tag <= previous:
                raise _Unsupported  # out of order or repeated: pydicom's rules apply
            previous = tag
            if tag == _PIXEL_DATA:
                if length == _UNDEFINED:
                    raise _Unsupported
                if need_pixels and pos + length > end:
                    raise _Truncated
                wanted["_pixel"] = (pos, length)
                return pos
            if tag in _FLOAT_PIXEL_DATA:
                raise _Unsupported
        if length == _UNDEFINED:
            if not (implicit or vr in (b"SQ", b"UN")):
                raise _Unsupported
            pos = _skip_undefined(buf, pos, implicit)
            continue
        if pos + length > end:
            raise _Truncated
        if wanted is not None and tag in _NATIVE_TAGS:
            keyword, kind = _NATIVE_TAGS[tag]
            if vr and vr != kind:
                raise _Unsupported  # an unexpected explicit VR: pydicom's conversion for it applies
            raw = bytes(buf[pos : pos + length])
            wanted[keyword] = _decode_number(raw, kind) if kind in (b"DS", b"IS") else _decode_value(raw, kind)
        pos += length
    raise _Truncated  # no PixelData (top level) or no item delimiter (nested) in the bytes read


def _parse_native(data: bytes, path: str, need_pixels: bool = True) -> NativeSlice:
    buf = memoryview(data)
    if len(buf) < 132 + 12:
        raise _Truncated
    if bytes(buf[128:132]) != b"DICM":
        raise _Unsupported
    pos = 132
    transfer_syntax = None
    while True:
        if pos + 12 > len(buf):
            raise _Truncated
        if int.from_bytes(buf[pos : pos + 2], "little") != 0x0002:
            break
        element = int.from_bytes(buf[pos + 2 : pos + 4], "little")
        _, length, pos = _explicit_element(buf, pos, len(buf))
        if length == _UNDEFINED:
            raise _Unsupported
        if pos + length > len(buf):
            raise _Truncated
        if element == 0x0010:
            transfer_syntax = bytes(buf[pos : pos + length]).decode("ascii", "replace").rstrip("\0 ")
        pos += length
    if transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        raise _Unsupported
    values = _Values()
    _walk(buf, pos, transfer_syntax == _IMPLICIT_LE, values, need_pixels)
    offset, length = values.pop("_pixel")
    values.file_meta = {"TransferSyntaxUID": transfer_syntax}
    try:
        header = _build_header(values, path)  # type: ignore[arg-type]
    except Exception as exc:
        raise _Unsupported from exc  # let pydicom produce the canonical error
    photometric = values.get("PhotometricInterpretation")
    return NativeSlice(
        header=header,
        pixel_data=buf[offset : offset + length] if need_pixels else buf[0:0],
        bits_allocated=values.get("BitsAllocated"),  # type: ignore[arg-type]
        bits_stored=values.get("BitsStored"),  # type: ignore[arg-type]
        pixel_representation=values.get("PixelRepresentation"),  # type: ignore[arg-type]
        photometric=None if photometric is None else str(photometric),
    )


def read_native_slice(path: str | os.PathLike) -> NativeSlice | None:
    """Read one uncompressed little-endian single-slice DICOM file in a single pass, without pydicom.

    The file is read once; the header tags of :data:`HEADER_TAGS` are decoded from their bytes and PixelData is
    kept as a view into the same buffer. Only plain files are taken: Part 10 preamble, Implicit or Explicit VR
    Little Endian, elements in ascending order, ASCII single-valued text, well-formed numbers, a defined-length
    PixelData. For anything else (compressed or big-endian syntaxes, multi-valued or non-ASCII text, empty or
    malformed values, header errors) it returns ``None`` and the caller reads the file with pydicom, which also
    produces the canonical error messages.

    Args:
        path: a DICOM file.

    Returns:
        A :class:`NativeSlice` whose header equals ``header_from_dataset(pydicom.dcmread(path), path)``, or ``None``.
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return _parse_native(data, path)
    except (_Unsupported, KeyError, IndexError, ValueError, UnicodeDecodeError):
        return None


def read_native_header(path: str | os.PathLike, prefix_bytes: int = 16384) -> SliceHeader | None:
    """Header of an uncompressed little-endian slice from the first bytes of the file (no pixel data read).

    Same rules as :func:`read_native_slice`; the first ``prefix_bytes`` are read, and the whole file only when the
    header runs past them.

    Args:
        path: a DICOM file.
        prefix_bytes: bytes read first.

    Returns:
        The header (equal to :func:`read_slice_header`'s pydicom reading), or ``None`` to read it with pydicom.
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(prefix_bytes)
            try:
                return _parse_native(data, path, need_pixels=False).header
            except _Truncated:
                if len(data) < prefix_bytes:
                    return None  # the whole file was read: truly truncated
                data += fh.read()
            return _parse_native(data, path, need_pixels=False).header
    except (OSError, _Unsupported, KeyError, IndexError, ValueError, UnicodeDecodeError):
        return None
