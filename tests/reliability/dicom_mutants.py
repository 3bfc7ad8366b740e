"""Mutated DICOM files and the check that the project reads them as pydicom does (or refuses them, naming the file).

Used by the property-based test ``tests/io/test_native_reader_fuzz.py`` (mutations drawn by hypothesis) and by
``tests/reliability/reliability_figures.py`` (a fixed number of seeded random mutants, for ``docs/reliability.md``).

A mutation is a tuple of small integers (:func:`draw_mutation`), applied to one of the valid seed files of
:func:`seed_files` by :func:`mutate`: byte flips, truncation, corrupted length and VR fields, elements repeated after
PixelData or before it, trailing bytes, malformed numbers, UIDs with leading / trailing spaces.

:func:`compare_with_pydicom` reads a file the ways the project does (the one-pass reader or pydicom, the header scan's
:func:`~monai_ng.io.dicom_header.read_slice_header`, HU decoding) and pydicom's own way (``dcmread`` +
``pixel_array`` + RescaleSlope / RescaleIntercept) and classifies the result.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_ng.io._native_dicom import read_native_slice
from monai_ng.io.dicom_header import header_from_dataset, lenient_value_reading, read_dataset, read_slice_header
from monai_ng.io.pixel_decoding import decode_slice_hu, truncated_pixel_data

__all__ = [
    "IDENTIFYING_MARKERS",
    "OUTCOMES",
    "Element",
    "compare_with_pydicom",
    "draw_mutation",
    "elements",
    "encode_element",
    "mutate",
    "seed_files",
]

#: Marker strings put in the identifying tags of every seed; none may appear in an error message.
IDENTIFYING_MARKERS: dict[str, str] = {
    "PatientName": "MRKNAME^ZQX",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "MRKACCZQX",
    "InstitutionName": "MRKINSTZQX",
    "ReferringPhysicianName": "MRKREFZQX",
    "StudyID": "MRKSTUDYZQX",
}
#: How a mutant can come out (see :func:`compare_with_pydicom`).
OUTCOMES = (
    "agree",
    "refused",
    "silent_difference",
    "unnamed_error",
    "leaks_identifier",
    "accepts_what_pydicom_refuses",
)

_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = [b"US", b"UI", b"DS", b"IS", b"CS", b"LO", b"OB", b"UN", b"SQ", b"FD", b"SS", b"AT", b"ZZ", b"\x00\x00"]
_BAD_NUMBERS = [
    b"abc",
    b"1A",
    b"1,5",
    b"1e400",
    b"-1e400",
    b"nan",
    b"inf",
    b"",
    b" ",
    b" 1 ",
    b"+1.5",
    b"1\\2",
    b"0",
    b"-0",
    b"1.0",
    b"0x10",
    b"1e-400",
    b"\x001",
    b"12345678901234567890",
]
# (tag, VR, value) elements appended after PixelData or repeated before it
_EXTRA_ELEMENTS: list[tuple[int, bytes, bytes]] = [
    (0x00281052, b"DS", b"0 "),
    (0x00281052, b"DS", b"100 "),
    (0x00281053, b"DS", b"2 "),
    (0x00200032, b"DS", b"5\\5\\50 "),
    (0x00200037, b"DS", b"0\\1\\0\\0\\0\\1 "),
    (0x0020000E, b"UI", b"9.9.9\x00"),
    (0x00100020, b"LO", b"OTHER "),
    (0x00280010, b"US", b"\x04\x00"),
    (0x00281050, b"DS", b"abc "),
    (0xFFFCFFFC, b"OB", b"\x00\x00\x00\x00"),
    (0x7FE00010, b"OW", b"\x01\x00" * 4),
    (0x00091010, b"LO", b"private "),
    (0x7FE10010, b"LO", b"private "),
]
_UID_TAGS = (0x0020000E, 0x0020000D, 0x00080018)


@dataclass(frozen=True)
class Element:
    """One top-level data element of a seed file: ``tag``, explicit ``vr`` (b"" when implicit), byte offsets."""

    tag: int
    vr: bytes
    start: int
    value_start: int
    length: int
    length_offset: int
    length_size: int


def _seed_dataset(implicit: bool, bits_stored: int, signed: bool) -> Dataset:
    rng = np.random.default_rng(bits_stored + 2 * signed + 4 * implicit)
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    low = -(1 << (bits_stored - 1)) if signed else 0
    pixels = rng.integers(max(low, -2000), min(high, 3000), size=(8, 8)).astype(np.int16 if signed else np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.999.1.1"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.1.1"
    ds.StudyDate = "20200101"
    ds.AccessionNumber = IDENTIFYING_MARKERS["AccessionNumber"]
    ds.Modality = "CT"
    ds.InstitutionName = IDENTIFYING_MARKERS["InstitutionName"]
    ds.ReferringPhysicianName = IDENTIFYING_MARKERS["ReferringPhysicianName"]
    ds.PatientName = IDENTIFYING_MARKERS["PatientName"]
    ds.PatientID = "anon-7"
    ds.PatientBirthDate = IDENTIFYING_MARKERS["PatientBirthDate"]
    ds.GantryDetectorTilt = 0
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.3"
    ds.StudyID = IDENTIFYING_MARKERS["StudyID"]
    ds.InstanceNumber = 7
    ds.ImagePositionPatient = [-120.5, -130.25, 42.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.WindowCenter = [40, 400]
    ds.WindowWidth = [80, 1500]
    ds.RescaleIntercept = -1024 if not signed else 0
    ds.RescaleSlope = 1 if bits_stored == 16 else 0.5
    ds.PixelData = pixels.tobytes()
    return ds


def seed_files() -> list[bytes]:
    """Valid single-slice CT files (8 x 8): Explicit / Implicit VR Little Endian, signed 16-bit, unsigned 12-bit."""
    out = []
    for implicit, bits, signed in ((False, 16, True), (True, 16, True), (False, 12, False), (True, 12, False)):
        buffer = io.BytesIO()
        _seed_dataset(implicit, bits, signed).save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _is_implicit(data: bytes) -> bool:
    return b"1.2.840.10008.1.2\x00" in data[:400] and b"1.2.840.10008.1.2.1" not in data[:400]


def elements(data: bytes) -> list[Element]:
    """Top-level elements of a seed file (file meta included; seeds hold no sequences)."""
    implicit = _is_implicit(data)
    out: list[Element] = []
    pos = 132
    while pos + 8 <= len(data):
        group = int.from_bytes(data[pos : pos + 2], "little")
        tag = (group << 16) | int.from_bytes(data[pos + 2 : pos + 4], "little")
        if implicit and group != 2:
            vr, length_offset, length_size = b"", pos + 4, 4
        else:
            vr = data[pos + 4 : pos + 6]
            length_offset, length_size = (pos + 8, 4) if vr in _LONG_VRS else (pos + 6, 2)
        value_start = length_offset + length_size
        length = int.from_bytes(data[length_offset:value_start], "little")
        out.append(Element(tag, vr, pos, value_start, length, length_offset, length_size))
        pos = value_start + length
    return out


def encode_element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    """One little-endian data element (value padded to even length with a space, NUL for UI, zero for binary)."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    if implicit:
        return head + len(value).to_bytes(4, "little") + value
    if vr in _LONG_VRS:
        return head + vr + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return head + vr + len(value).to_bytes(2, "little") + value


def _replace_value(data: bytes, el: Element, value: bytes, implicit: bool) -> bytes:
    vr = el.vr or b"LO"
    encoded = encode_element(el.tag, vr, value, implicit and el.tag >> 16 != 2)
    return data[: el.start] + encoded + data[el.value_start + el.length :]


def draw_mutation(draw: Callable[[int, int], int]) -> tuple[int, ...]:
    """A mutation as integers; ``draw(lo, hi)`` returns an int in ``[lo, hi]`` (hypothesis or a random generator)."""
    kind = draw(0, 9)
    return (draw(0, 3), kind, draw(0, 1 << 16), draw(0, 1 << 16), draw(0, 255))


def mutate(seeds: list[bytes], mutation: tuple[int, ...]) -> bytes:
    """Apply a mutation from :func:`draw_mutation` to one of ``seeds``.

    Kinds: 0 flip one byte, 1 truncate, 2 corrupt a length field, 3 corrupt a VR, 4 append an element after PixelData,
    5 repeat an element just before PixelData, 6 append trailing bytes, 7 a malformed number in a DS / IS element,
    8 leading / trailing spaces around a UID, 9 two byte flips in the dataset header.
    """
    seed, kind, a, b, c = mutation
    data = seeds[seed % len(seeds)]
    implicit = _is_implicit(data)
    els = elements(data)
    body = [e for e in els if e.tag >> 16 != 2]
    pixel = next(e for e in els if e.tag == _PIXEL_DATA)
    if kind in (0, 9):
        out = bytearray(data)
        for k in range(1 if kind == 0 else 2):
            pos = 128 + (a if k == 0 else b) % (pixel.value_start - 128)
            out[pos] ^= c or 0xFF
        return bytes(out)
    if kind == 1:
        return data[: 128 + a % (len(data) - 128)]
    if kind == 2:
        el = els[a % len(els)]
        choices = [el.length + 1, el.length - 1, el.length + 2, el.length + 8, 0, 0xFFFF, 0xFFFFFFFF, b]
        new = choices[c % len(choices)] % (1 << (8 * el.length_size))
        out = bytearray(data)
        out[el.length_offset : el.length_offset + el.length_size] = new.to_bytes(el.length_size, "little")
        return bytes(out)
    if kind == 3:
        explicit = [e for e in els if e.vr]
        el = explicit[a % len(explicit)]
        vr = _VRS[b % len(_VRS)]
        return data[: el.start + 4] + vr + data[el.start + 6 :]
    if kind in (4, 5):
        tag, vr, value = _EXTRA_ELEMENTS[a % len(_EXTRA_ELEMENTS)]
        encoded = encode_element(tag, vr, value, implicit)
        if kind == 4:
            return data + encoded
        return data[: pixel.start] + encoded + data[pixel.start :]
    if kind == 6:
        tail = [b"\x00", b"\x00\x00", b"\x00" * 8, bytes([c]) * (1 + b % 15), b"\xfc\xff\xfc\xff"]
        return data + tail[a % len(tail)]
    if kind == 7:
        numeric = [e for e in body if e.tag in (0x00281052, 0x00281053, 0x00200013, 0x00281050, 0x00181120, 0x00200032)]
        el = numeric[a % len(numeric)]
        return _replace_value(data, el, _BAD_NUMBERS[b % len(_BAD_NUMBERS)], implicit)
    uid = [e for e in body if e.tag in _UID_TAGS]
    el = uid[a % len(uid)]
    value = data[el.value_start : el.value_start + el.length].rstrip(b"\x00")
    padded = [b" " + value, value + b" ", b"  " + value + b" ", b"\x00" + value, value + b"\x00\x00"]
    return _replace_value(data, el, padded[b % len(padded)], implicit)


# --------------------------------------------------------------------------------------------------- comparison
def _reference(path: str) -> tuple[dict, np.ndarray] | None:
    """What pydicom alone makes of the file: header values (through the project's header builder) and HU."""
    try:
        ds = pydicom.dcmread(path)
        header = header_from_dataset(ds, path)
        px = ds.pixel_array
        slope = float(ds.RescaleSlope) if "RescaleSlope" in ds and ds.RescaleSlope not in (None, "") else 1.0
        intercept = float(ds.RescaleIntercept) if ds.get("RescaleIntercept") not in (None, "") else 0.0
        hu = (px.astype(np.float64) * slope + intercept).astype(np.float32)
        if px.shape != (header.rows, header.columns):
            return None
    except Exception:
        return None
    return _comparable(header.to_dict()), hu


def _comparable(header: dict) -> dict:
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in header.items()}


def _project(path: str) -> tuple[dict, dict, np.ndarray]:
    """The project's reading: header scan, loader (one-pass reader or pydicom) and HU (raises ValueError)."""
    scanned = read_slice_header(path)
    native = read_native_slice(path)
    if native is not None:
        source, header = native, native.header
    else:
        source = read_dataset(path)
        header = header_from_dataset(source, path)
    problem = truncated_pixel_data(source, header)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    hu, _ = decode_slice_hu(source, header, fix_ich_wrap=False)
    return _comparable(scanned.to_dict()), _comparable(header.to_dict()), hu


def compare_with_pydicom(path: str | Path) -> tuple[str, str]:
    """Read ``path`` the project's way and pydicom's way; returns ``(outcome, detail)``.

    Outcomes: ``agree`` (same header from the header scan and the loader, same HU bits as pydicom), ``refused`` (a
    ``ValueError`` naming the file), ``silent_difference`` (both read it, with different results),
    ``unnamed_error`` (an exception that is not a ``ValueError`` naming the file), ``leaks_identifier`` (an error
    message quoting an identifying value), ``accepts_what_pydicom_refuses`` (the project decodes a file pydicom
    cannot).
    """
    path = str(path)
    with warnings.catch_warnings(), lenient_value_reading():
        warnings.simplefilter("ignore")
        reference = _reference(path)
        try:
            scanned, loaded, hu = _project(path)
        except ValueError as exc:
            message = str(exc)
            if any(marker in message for marker in IDENTIFYING_MARKERS.values()):
                return "leaks_identifier", message
            if path not in message:
                return "unnamed_error", message
            return "refused", message
        except Exception as exc:  # noqa: BLE001 - any other type is a finding
            return "unnamed_error", f"{type(exc).__name__}: {exc}"
    if reference is None:
        return "accepts_what_pydicom_refuses", "pydicom cannot read or decode it; the project can"
    ref_header, ref_hu = reference
    if scanned != loaded:
        diff = {k: (scanned[k], loaded[k]) for k in scanned if scanned[k] != loaded[k]}
        return "silent_difference", f"header scan and loader disagree: {diff}"
    if loaded != ref_header:
        diff = {k: (loaded[k], ref_header[k]) for k in loaded if loaded[k] != ref_header[k]}
        return "silent_difference", f"header differs from pydicom's: {diff}"
    if hu.shape != ref_hu.shape or not np.array_equal(hu.view(np.uint32), ref_hu.view(np.uint32)):
        return "silent_difference", "HU differ from pydicom's"
    return "agree", ""


# ------------------------------------------------------------------------------------------------------- corpus
def _element(data: bytes, tag: int) -> Element:
    return next(e for e in elements(data) if e.tag == tag)


def _with_value(data: bytes, tag: int, value: bytes) -> bytes:
    return _replace_value(data, _element(data, tag), value, _is_implicit(data))


def _with_vr(data: bytes, tag: int, vr: bytes) -> bytes:
    el = _element(data, tag)
    return data[: el.start + 4] + vr + data[el.start + 6 :]


def _with_length(data: bytes, tag: int, length: int) -> bytes:
    el = _element(data, tag)
    out = bytearray(data)
    out[el.length_offset : el.length_offset + el.length_size] = length.to_bytes(el.length_size, "little")
    return bytes(out)


def corpus_cases() -> dict[str, tuple[bytes, str]]:
    """The minimal files behind each finding of issue 11, ``name -> (file bytes, expected outcome)``.

    ``agree``: read exactly as pydicom reads it; ``refused``: a ``ValueError`` naming the file (and no identifier).
    """
    seed, implicit = seed_files()[0], False
    pixel = _element(seed, _PIXEL_DATA)
    before_pixels = seed[: pixel.start]
    return {
        # 1: elements after PixelData (pydicom uses the later value) and UIDs with spaces
        "appended_rescale_intercept": (seed + encode_element(0x00281052, b"DS", b"0", implicit), "agree"),
        "appended_position": (seed + encode_element(0x00200032, b"DS", b"5\\5\\50", implicit), "agree"),
        "repeated_before_pixels": (
            before_pixels + encode_element(0x00281053, b"DS", b"2", implicit) + seed[pixel.start :],
            "agree",
        ),
        "uid_leading_space": (_with_value(seed, 0x0020000E, b" 1.2.826.0.1.3680043.10.999.3"), "agree"),
        "uid_trailing_spaces": (_with_value(seed, 0x0020000E, b"1.2.826.0.1.3680043.10.999.3  "), "agree"),
        "trailing_zero_bytes": (seed + b"\x00" * 8, "agree"),
        "trailing_padding_element": (seed + encode_element(0xFFFCFFFC, b"OB", b"\x00" * 4, implicit), "agree"),
        "huge_instance_number": (_with_value(seed, 0x00200013, b"12345678901234567890"), "agree"),
        "photometric_newline": (_with_value(seed, 0x00280004, b"MONOCHROME2\n"), "refused"),
        "character_set_vr_us": (_with_vr(seed, 0x00080005, b"US"), "refused"),
        "transfer_syntax_vr_us": (_with_vr(seed, 0x00020010, b"US"), "refused"),
        # 2: malformed numbers, wrong VRs, truncation, rescale sanity
        "window_center_abc": (_with_value(seed, 0x00281050, b"abc"), "agree"),
        "instance_number_1A": (_with_value(seed, 0x00200013, b"1A"), "agree"),
        "rescale_intercept_comma": (_with_value(seed, 0x00281052, b"1,5"), "refused"),
        "rescale_intercept_1e400": (_with_value(seed, 0x00281052, b"1e400"), "refused"),
        "rescale_slope_zero": (_with_value(seed, 0x00281053, b"0"), "refused"),
        "bits_stored_vr_ui": (_with_vr(seed, 0x00280101, b"UI"), "refused"),
        "pixel_data_unknown_vr": (_with_vr(seed, _PIXEL_DATA, b"\x4f\xcc"), "refused"),
        "truncated_pixel_data": (seed[:-10], "refused"),
        # 3: a length that runs over the identifying elements must not put them into the message
        "sop_class_length_swallows_identifiers": (_with_length(seed, 0x00080016, 0x0100), "refused"),
    }


def write_corpus(folder: str | Path) -> list[Path]:
    """Write :func:`corpus_cases` as ``<name>.dcm`` files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (data, _) in corpus_cases().items():
        path = folder / f"{name}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":  # regenerate the committed corpus: python tests/reliability/dicom_mutants.py tests/io/corpus
    import sys

    for written in write_corpus(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / "io" / "corpus"):
        print(written)
