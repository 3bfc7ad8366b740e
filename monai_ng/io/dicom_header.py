"""Header-only reading of one DICOM slice: the tags needed to group, order and decode CT slices.

Only the tags of :data:`HEADER_TAGS` are parsed (``pydicom.dcmread(specific_tags=...)``, PixelData skipped unread);
plain uncompressed little-endian files are parsed by the one-pass reader of :mod:`monai_ng.io._native_dicom`, which
gives the same :class:`SliceHeader` and hands every file it is unsure about to pydicom. Geometry follows DICOM PS3.3
C.7.6.2.1.1: the slice normal is the cross product of the row and column direction cosines of
ImageOrientationPatient (:func:`slice_normal`).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

__all__ = [
    "HEADER_TAGS",
    "SliceHeader",
    "describe_error",
    "header_from_dataset",
    "lenient_value_reading",
    "read_dataset",
    "read_slice_header",
    "shown_value",
    "slice_normal",
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
        sop_class_uid: SOPClassUID, or the file meta's MediaStorageSOPClassUID when the dataset lacks it ("" if
            both are absent).
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
    sop_class_uid: str = ""

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


_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*"')
_UNPRINTABLE = re.compile(r"[^ -~]+")


def shown_value(value: object) -> str:
    """A value for an error message: quoted when short printable text, else only its length.

    A corrupted length field can make an element's value run over the following elements (PatientName, ...);
    such values hold non-printable bytes and are never quoted.
    """
    text = value.decode("latin-1") if isinstance(value, (bytes, bytearray, memoryview)) else str(value)
    if len(text) <= 32 and not _UNPRINTABLE.search(text):
        return repr(text)
    return f"<{len(text)} characters, not shown>"


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"`` of a reader's exception with quoted values and non-printable bytes left out.

    pydicom's messages can quote raw element bytes or values (``invalid literal for int(): 'JOHN^DOE'``); failure
    reasons keep the exception type, the tag names and the file path only.
    """
    text = _QUOTED.sub("<value>", str(exc))
    text = _UNPRINTABLE.sub(" ", text)
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"


def _lenient_float(value: object) -> float | None:
    """A float of a tag that only informs (windows, tilt): ``None`` when absent or malformed."""
    try:
        value = _first(value)
        if value is None or value == "":
            return None
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _needed_float(ds: pydicom.Dataset, keyword: str, path: str) -> float | None:
    """A float of a tag that HU depend on: absent -> ``None``; malformed -> ``ValueError`` naming file and tag."""
    value = ds.get(keyword)
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        raise ValueError(f"{path}: {keyword} has {len(value)} values, expected 1")
    try:
        if value is None or value == "":
            return None
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path}: {keyword} is not a number ({shown_value(value)})") from exc


def _needed_int(ds: pydicom.Dataset, keyword: str, path: str, default: int | None = None) -> int | None:
    """An int of a tag that geometry or decoding depend on (``default`` when absent or empty)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, (str, bytes)) or not float(value).is_integer():  # type: ignore[arg-type]
            raise TypeError
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path}: {keyword} is not an integer ({shown_value(value)})") from exc


def _lenient_int(value: object) -> int | None:
    try:
        return None if value in (None, "") else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None


def _floats(ds: pydicom.Dataset, keyword: str, n: int, path: str) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path}: {keyword} is not numeric ({shown_value(value)})") from exc
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
    from monai_ng.io import _native_dicom  # the one-pass reader builds SliceHeaders with this module

    path = str(path)
    header = _native_dicom.read_native_header(
        path
    )  # plain uncompressed little-endian files: a few KB parsed without pydicom
    if header is not None:
        return header
    with lenient_value_reading():
        try:
            # the whole file is walked (PixelData skipped unread), so that an element repeated after PixelData
            # gives the header a full read gives (a later element replaces an earlier one in pydicom)
            ds = pydicom.dcmread(path, specific_tags=list(HEADER_TAGS))
        except InvalidDicomError as exc:
            raise ValueError(f"{path}: not a DICOM file ({exc})") from exc
        except FileNotFoundError as exc:
            raise ValueError(f"{path}: file not found") from exc
        except (OSError, EOFError, struct.error) as exc:
            raise ValueError(f"{path}: unreadable DICOM header ({describe_error(exc)})") from exc
        except Exception as exc:  # pydicom raises many types on corrupt files (NotImplementedError for unknown VRs)
            raise ValueError(f"{path}: unreadable DICOM header ({describe_error(exc)})") from exc
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
        raise ValueError(f"{path}: malformed DICOM header ({describe_error(exc)})") from exc


def _build_header(ds: pydicom.Dataset, path: str) -> SliceHeader:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
        name = str(getattr(sop_class, "name", sop_class)) if sop_class else "unknown SOP class"
        if "Image Storage" in name and not _UNPRINTABLE.search(name):
            raise ValueError(f"{path}: {name} header without Rows/Columns: file truncated or header incomplete")
        raise ValueError(f"{path}: not an image (no Rows/Columns; SOP class {shown_value(name)})")
    rows, cols = _needed_int(ds, "Rows", path), _needed_int(ds, "Columns", path)
    frames = _needed_int(ds, "NumberOfFrames", path) or 1
    if frames != 1:
        raise ValueError(f"{path}: multi-frame image with {frames} frames; only single-slice files are supported")
    samples = _needed_int(ds, "SamplesPerPixel", path) or 1
    if samples != 1:
        raise ValueError(f"{path}: {samples} samples per pixel; CT slices must be single-channel")
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    spacing = _floats(ds, "PixelSpacing", 2, path)
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    slope = _needed_float(ds, "RescaleSlope", path)
    intercept = _needed_float(ds, "RescaleIntercept", path)
    if slope is not None and (not np.isfinite(slope) or slope == 0):
        raise ValueError(f"{path}: RescaleSlope {slope} would make every HU value the same; refusing the file")
    if intercept is not None and not np.isfinite(intercept):
        raise ValueError(f"{path}: RescaleIntercept {intercept} is not finite; refusing the file")
    bits_allocated = _needed_int(ds, "BitsAllocated", path) or 16
    tilt = _lenient_float(ds.get("GantryDetectorTilt"))
    return SliceHeader(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        image_position=ipp,  # type: ignore[arg-type]
        image_orientation=iop,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        rows=rows,  # type: ignore[arg-type]
        columns=cols,  # type: ignore[arg-type]
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=0.0 if intercept is None else intercept,
        bits_allocated=bits_allocated,
        bits_stored=_needed_int(ds, "BitsStored", path) or bits_allocated,
        pixel_representation=_needed_int(ds, "PixelRepresentation", path) or 0,
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        instance_number=_lenient_int(ds.get("InstanceNumber")),
        transfer_syntax=tsyntax,
        window_center=_lenient_float(ds.get("WindowCenter")),
        window_width=_lenient_float(ds.get("WindowWidth")),
        number_of_frames=frames,
        gantry_tilt=0.0 if tilt is None else tilt,
        modality=str(ds.get("Modality", "")),
        sop_class_uid=str(
            ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else "")
        ),
    )


def read_dataset(path: str) -> pydicom.Dataset:
    """The full dataset of one DICOM file, pixel data included (raises ``ValueError`` naming the file)."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ValueError(f"{path}: not a DICOM file ({exc})") from exc
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: file not found") from exc
    except Exception as exc:
        raise ValueError(f"{path}: unreadable DICOM file ({describe_error(exc)})") from exc
