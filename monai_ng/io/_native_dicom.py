"""One-pass reader for plain uncompressed little-endian single-slice DICOM files (private to ``monai_ng.io``).

The file is read once; the header tags of :data:`~monai_ng.io.dicom_header.HEADER_TAGS` are decoded from its bytes
and PixelData is kept as a view into the same buffer. It gives the same headers as pydicom and returns ``None`` for
every file it is unsure about, which the callers then read with pydicom (which also produces the canonical errors).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from monai_ng.io.dicom_header import SliceHeader, _build_header

__all__ = ["NATIVE_LITTLE_ENDIAN", "NativeSlice", "read_native_header", "read_native_slice"]

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
_TRAILING_PADDING = 0xFFFCFFFC
_CHARACTER_SET = 0x00080005
_FLOAT_EXACT = 1 << 53
#: The VR of each File Meta Information element (PS3.10 7.1); another VR sends the file to pydicom.
_META_VRS = {
    0x0000: b"UL", 0x0001: b"OB", 0x0002: b"UI", 0x0003: b"UI", 0x0010: b"UI", 0x0012: b"UI", 0x0013: b"SH",
    0x0016: b"AE", 0x0017: b"AE", 0x0018: b"AE", 0x0026: b"UR", 0x0027: b"UR", 0x0028: b"UR", 0x0031: b"UI",
    0x0032: b"UI", 0x0033: b"OB", 0x0035: b"OB", 0x0036: b"UL", 0x0037: b"FD", 0x0100: b"UI", 0x0102: b"OB",
}  # fmt: skip
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
    if kind == b"UI":
        # pydicom's convert_UI strips trailing NULs and spaces, and its UID class strips leading spaces too
        return raw.decode("ascii").rstrip("\x00 ").strip()
    if kind in _TEXT_VRS:
        return raw.decode("ascii").rstrip(" \x00")  # CS (multi_string) and LO (convert_text): trailing only
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
    if kind == b"IS" and any(abs(v) > _FLOAT_EXACT for v in values):
        raise _Unsupported  # pydicom keeps such integers as floats (ISfloat): its rounding applies
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
            # an undefined-length UN value is an Implicit VR Little Endian sequence (PS3.5 6.2.2), as pydicom reads it
            pos = _skip_undefined(buf, pos, implicit or vr == b"UN")
            continue
        if pos + length > end:
            raise _Truncated
        if wanted is not None and tag == _CHARACTER_SET and vr and vr != b"CS":
            raise _Unsupported  # pydicom decodes every text element with this value
        if wanted is not None and tag in _NATIVE_TAGS:
            keyword, kind = _NATIVE_TAGS[tag]
            if vr and vr != kind:
                raise _Unsupported  # an unexpected explicit VR: pydicom's conversion for it applies
            raw = bytes(buf[pos : pos + length])
            wanted[keyword] = _decode_number(raw, kind) if kind in (b"DS", b"IS") else _decode_value(raw, kind)
        pos += length
    raise _Truncated  # no PixelData (top level) or no item delimiter (nested) in the bytes read


def _only_padding(buf: memoryview, pos: int, implicit: bool) -> bool:
    """Whether the bytes from ``pos`` on hold nothing, or only Data Set Trailing Padding ``(FFFC,FFFC)`` elements.

    Anything else after PixelData (a repeated RescaleIntercept or ImagePositionPatient, unknown bytes) could change
    what pydicom reads, since a later element replaces an earlier one there: such files go to pydicom.
    """
    end = len(buf)
    while pos < end:
        if pos + 8 > end:
            return False
        tag = (int.from_bytes(buf[pos : pos + 2], "little") << 16) | int.from_bytes(buf[pos + 2 : pos + 4], "little")
        if tag != _TRAILING_PADDING:
            return False
        try:
            if implicit:
                length, pos = int.from_bytes(buf[pos + 4 : pos + 8], "little"), pos + 8
            else:
                _, length, pos = _explicit_element(buf, pos, end)
        except _Unsupported:
            return False
        if length == _UNDEFINED or pos + length > end:
            return False
        pos += length
    return True


def _parse_native(data: bytes, path: str, need_pixels: bool = True) -> tuple[NativeSlice, int, bool]:
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
        vr, length, pos = _explicit_element(buf, pos, len(buf))
        if _META_VRS.get(element) != vr:
            raise _Unsupported  # an unknown meta element or an unexpected VR: pydicom's reading applies
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
    implicit = transfer_syntax == _IMPLICIT_LE
    if need_pixels and not _only_padding(buf, offset + length, implicit):
        raise _Unsupported  # elements after PixelData: pydicom's reading (the later value wins) applies
    if need_pixels and "SamplesPerPixel" not in values:
        raise _Unsupported  # pydicom refuses to decode pixels without it
    values.file_meta = {"TransferSyntaxUID": transfer_syntax}
    try:
        header = _build_header(values, path)  # type: ignore[arg-type]
    except Exception as exc:
        raise _Unsupported from exc  # let pydicom produce the canonical error
    photometric = values.get("PhotometricInterpretation")
    native = NativeSlice(
        header=header,
        pixel_data=buf[offset : offset + length] if need_pixels else buf[0:0],
        bits_allocated=values.get("BitsAllocated"),  # type: ignore[arg-type]
        bits_stored=values.get("BitsStored"),  # type: ignore[arg-type]
        pixel_representation=values.get("PixelRepresentation"),  # type: ignore[arg-type]
        photometric=None if photometric is None else str(photometric),
    )
    return native, offset + length, implicit


def read_native_slice(path: str | os.PathLike) -> NativeSlice | None:
    """Read one uncompressed little-endian single-slice DICOM file in a single pass, without pydicom.

    The file is read once; the header tags of :data:`HEADER_TAGS` are decoded from their bytes and PixelData is
    kept as a view into the same buffer. Only plain files are taken: Part 10 preamble, Implicit or Explicit VR
    Little Endian, File Meta elements with their standard VRs, elements in ascending order, ASCII single-valued text,
    well-formed numbers, a defined-length PixelData followed by nothing but Data Set Trailing Padding (an element
    after PixelData replaces an earlier one in pydicom, so such files go to pydicom). For anything else (compressed or big-endian syntaxes, multi-valued or non-ASCII text, empty or
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
        return _parse_native(data, path)[0]
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
                native, pixel_end, implicit = _parse_native(data, path, need_pixels=False)
            except _Truncated:
                if len(data) < prefix_bytes:
                    return None  # the whole file was read: truly truncated
                data += fh.read()
                native, pixel_end, implicit = _parse_native(data, path, need_pixels=False)
            size = os.fstat(fh.fileno()).st_size
            if size > pixel_end:  # something follows PixelData: only trailing padding keeps this header
                fh.seek(pixel_end)
                if not _only_padding(memoryview(fh.read()), 0, implicit):
                    return None
            return native.header
    except (OSError, _Unsupported, KeyError, IndexError, ValueError, UnicodeDecodeError):
        return None
