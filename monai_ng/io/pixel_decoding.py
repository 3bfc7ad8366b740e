"""Decode one CT slice's stored pixels to Hounsfield units, with the RSNA quirk fixes.

RSNA quirks handled per slice (see ``docs/ingest.md``):

* 12-bit unsigned pixels with a wrapped intercept (RSNA ICH 2019): if BitsStored == 12, PixelRepresentation == 0
  and int(RescaleIntercept) > -100, stored values become ``(px + 1000) mod 4096`` and the intercept -1000. This is
  the correction of the public RSNA ICH Kaggle kernels (J. Howard, "Some DICOM gotchas to be aware of" /
  "Cleaning the data for rapid prototyping (fastai)", 2019, and the widely copied ``correct_dcm`` helper).
* Signed pixels stored in fewer bits than allocated (RSNA 2023 abdominal trauma): values are sign-extended from
  BitsStored (idempotent for correctly decoded data), as in the public RSNA 2023 ``standardize_pixel_array``.
* MONOCHROME1: by default HU come from the modality LUT (RescaleSlope/Intercept), which DICOM defines
  independently of PhotometricInterpretation (PS3.3 C.7.6.3.1.2: MONOCHROME1 only tells the display to invert).
  ``monochrome1="invert"`` mirrors stored values inside the stored range first, for sources that wrote
  display-inverted pixels.
"""

from __future__ import annotations

import sys

import numpy as np
import pydicom

from monai_ng.io._native_dicom import NATIVE_LITTLE_ENDIAN, NativeSlice
from monai_ng.io.dicom_header import SliceHeader, describe_error, read_dataset

__all__ = [
    "MONOCHROME1_POLICIES",
    "decode_slice_hu",
    "fix_rsna_ich_wrap",
    "sign_extend",
    "stored_pixels",
    "truncated_pixel_data",
]

#: ``decode_slice_hu(monochrome1=...)`` values.
MONOCHROME1_POLICIES = ("hu", "invert")
#: Integers of magnitude below 2^24 are exact in float32.
_FLOAT32_EXACT = 1 << 24


def sign_extend(px: np.ndarray, bits_stored: int) -> np.ndarray:
    """Interpret the low ``bits_stored`` bits of each value as a two's complement integer.

    Args:
        px: integer array of any shape.
        bits_stored: DICOM BitsStored (1..32).

    Returns:
        int32 (or int64 for ``bits_stored > 31``) array, same shape; values in ``[-2^(b-1), 2^(b-1) - 1]``.
        Already sign-extended values in that range are unchanged.
    """
    if not 1 <= bits_stored <= 32:
        raise ValueError(f"bits_stored must be in 1..32, got {bits_stored}")
    if bits_stored <= 31:
        # keep the low 32 bits (a modular cast), move bit b-1 to the sign bit, shift back arithmetically
        shift = 32 - bits_stored
        x = px.astype(np.uint32)
        np.left_shift(x, shift, out=x)
        out = x.view(np.int32)
        np.right_shift(out, shift, out=out)
        return out
    x = px.astype(np.int64) & ((1 << bits_stored) - 1)
    return np.where(x >= (1 << (bits_stored - 1)), x - (1 << bits_stored), x).astype(np.int64)


def fix_rsna_ich_wrap(px: np.ndarray, header: SliceHeader) -> tuple[np.ndarray, float, bool]:
    """RSNA ICH 2019 wrapped-intercept fix (public Kaggle kernels, see module docstring).

    Applies only when BitsStored == 12, PixelRepresentation == 0 and ``int(RescaleIntercept) > -100``.

    Args:
        px: stored values ``[rows, columns]``.
        header: the slice's header.

    Returns:
        ``(px, intercept, applied)``: corrected values (int32), the intercept to use, whether the fix applied.
    """
    if header.bits_stored == 12 and header.pixel_representation == 0 and int(header.rescale_intercept) > -100:
        x = px.astype(np.int32)
        x += 1000
        np.subtract(x, 4096, out=x, where=x >= 4096)
        return x, -1000.0, True
    return px, header.rescale_intercept, False


def _decoder_problem(transfer_syntax: str) -> str | None:
    """Why pydicom cannot decode ``transfer_syntax`` here (``None`` when a decoder is available)."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        return "pydicom has no decoder for this transfer syntax"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "unknown plugin"
        return f"no decoder plugin installed (needs one of: {missing}; install pylibjpeg-libjpeg, pylibjpeg-openjpeg or python-gdcm)"
    return None


def _little_endian_pixels(
    data: object,
    shape: tuple[int, int],
    bits_allocated: object,
    bits_stored: object,
    representation: object,
    photometric: object,
) -> np.ndarray | None:
    """``[rows, columns]`` stored values from raw little-endian PixelData bytes, or ``None`` to defer to pydicom.

    Reproduces what pydicom's native decoder returns for the cases taken here (``pydicom.pixels.decoders.base``:
    ``frombuffer`` with dtype ``{u,i}{BitsAllocated / 8}``, then, when BitsStored < BitsAllocated, its
    ``correct_unused_bits`` left/right shift that clears (unsigned) or sign-extends (signed) the unused high bits).
    Unusual pixel-module values, a length other than the expected one (plus one padding byte) or a big-endian host
    return ``None``.
    """
    if sys.byteorder != "little" or not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    if bits_allocated not in (8, 16, 32) or representation not in (0, 1) or bits_stored is None:
        return None
    if not 1 <= bits_stored <= bits_allocated or photometric not in ("MONOCHROME1", "MONOCHROME2"):  # type: ignore[operator]
        return None
    rows, columns = shape
    n = rows * columns
    nbytes = n * (bits_allocated // 8)  # type: ignore[operator]
    if len(data) not in (nbytes, nbytes + (nbytes & 1)):
        return None
    px = np.frombuffer(data, dtype=np.dtype(f"{'ui'[representation]}{bits_allocated // 8}"), count=n)  # type: ignore[index,operator]
    px = px.reshape(rows, columns)
    if bits_stored < bits_allocated:  # type: ignore[operator]
        shift = bits_allocated - bits_stored  # type: ignore[operator]
        shifted = np.left_shift(px, shift, out=np.empty_like(px))
        px = np.right_shift(shifted, shift, out=shifted)
    return px


def _native_stored_pixels(ds: pydicom.Dataset | NativeSlice, header: SliceHeader) -> np.ndarray | None:
    """Stored values of an uncompressed little-endian slice straight from PixelData, or ``None`` to defer to pydicom.

    Same values and dtype as ``pixel_array`` (see :func:`_little_endian_pixels`) without building a pydicom decode
    runner per slice. Compressed or big-endian syntaxes, float pixels, missing or unusual pixel-module tags return
    ``None``.
    """
    if header.transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        return None
    if isinstance(ds, NativeSlice):
        values = (ds.bits_allocated, ds.bits_stored, ds.pixel_representation, ds.photometric)
        return _little_endian_pixels(ds.pixel_data, (header.rows, header.columns), *values)
    if "PixelData" not in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    if ds.get("SamplesPerPixel") != 1 or int(ds.get("NumberOfFrames") or 1) != 1:  # pixel_array needs the tag
        return None
    if (ds.get("Rows"), ds.get("Columns")) != (header.rows, header.columns):
        return None
    return _little_endian_pixels(
        ds.PixelData,
        (header.rows, header.columns),
        ds.get("BitsAllocated"),
        ds.get("BitsStored"),
        ds.get("PixelRepresentation"),
        ds.get("PhotometricInterpretation"),
    )


def truncated_pixel_data(ds: pydicom.Dataset | NativeSlice, header: SliceHeader) -> str | None:
    """Why the uncompressed PixelData of a slice is too short for Rows x Columns (``None`` when it is not).

    Only native (uncompressed little-endian) syntaxes are checked: a compressed frame's size is known after decoding.
    """
    if header.transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        return None
    try:
        data = ds.pixel_data if isinstance(ds, NativeSlice) else ds.get("PixelData")
    except Exception as exc:  # a PixelData element pydicom cannot convert (an unknown VR)
        return f"unreadable PixelData element ({describe_error(exc)})"
    if data is None or not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    expected = header.rows * header.columns * max(1, header.bits_allocated // 8)
    if len(data) < expected:
        return f"truncated pixel data: {len(data)} bytes, {expected} expected for {header.rows} x {header.columns}"
    return None


def stored_pixels(ds: pydicom.Dataset | NativeSlice, header: SliceHeader, fast: bool = True) -> np.ndarray:
    """Stored pixel values of one slice, ``[rows, columns]``, as pydicom's ``Dataset.pixel_array`` returns them.

    Args:
        ds: the full dataset (with pixel data), or a :class:`~monai_ng.io._native_dicom.NativeSlice`
            (read by pydicom here when its pixels need pydicom's decoders).
        header: its :class:`SliceHeader`.
        fast: read uncompressed little-endian PixelData with ``numpy.frombuffer`` (same dtype and values as
            ``pixel_array``, possibly a read-only view); ``False`` always goes through ``pixel_array``.

    Returns:
        The integer (or float, for float pixel data) array.

    Raises:
        ValueError: naming the file and reason: no pixel data, truncated pixel data, no decoder for a compressed
            transfer syntax (naming the missing plugin), or a decoded shape that disagrees with Rows/Columns.
    """
    path = header.path
    if fast:
        px = _native_stored_pixels(ds, header)
        if px is not None:
            return px
    if isinstance(ds, NativeSlice):
        ds = read_dataset(ds.path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ValueError(f"{path}: no pixel data")
    ts = header.transfer_syntax
    try:
        px = ds.pixel_array
    except Exception as exc:
        problem = _decoder_problem(ts) if ts else None
        name = pydicom.uid.UID(ts).name if ts else "unknown transfer syntax"
        if problem is not None:
            raise ValueError(f"{path}: cannot decode {name} ({ts}) pixel data: {problem}") from exc
        raise ValueError(f"{path}: cannot decode pixel data ({name}): {describe_error(exc)}") from exc
    if px.shape != (header.rows, header.columns):
        raise ValueError(f"{path}: decoded pixel shape {px.shape} != (Rows, Columns) {(header.rows, header.columns)}")
    return px


def decode_slice_hu(
    ds: pydicom.Dataset | NativeSlice,
    header: SliceHeader,
    fix_ich_wrap: bool = True,
    monochrome1: str = "hu",
    out: np.ndarray | None = None,
    fast: bool = True,
) -> tuple[np.ndarray, dict]:
    """Decode one slice's pixels to HU, shape ``[rows, columns]`` float32.

    HU are ``float32(float64(stored) * slope + intercept)``. When that is exact in float32 (slope 1, an integral
    intercept and stored values of at most 16 bits, so every sum is an integer below ``2^24``) it is computed as one
    float32 add, which gives the same bits without a float64 intermediate.

    Args:
        ds: the full dataset (with pixel data) or a :class:`~monai_ng.io._native_dicom.NativeSlice`.
        header: its :class:`SliceHeader`.
        fix_ich_wrap: apply :func:`fix_rsna_ich_wrap`.
        monochrome1: ``"hu"`` (modality LUT only, DICOM semantics) or ``"invert"`` (mirror stored values first).
        out: optional float32 ``[rows, columns]`` array to write the HU into (returned as ``hu``).
        fast: see :func:`stored_pixels`.

    Returns:
        ``(hu, info)`` with ``info`` flags ``ich_wrap_fixed`` and ``monochrome1_inverted``.

    Raises:
        ValueError: naming the file and reason: no pixel data, truncated pixel data, no decoder for a compressed
            transfer syntax (naming the missing plugin), or a decoded shape that disagrees with Rows/Columns.
    """
    try:
        px = stored_pixels(ds, header, fast=fast)
    except ValueError:
        raise
    except Exception as exc:  # malformed pixel-module values of a pydicom dataset (a str BitsStored, an unknown VR)
        raise ValueError(f"{header.path}: cannot decode pixel data ({describe_error(exc)})") from exc
    if out is None:
        out = np.empty(px.shape, dtype=np.float32)
    elif out.shape != px.shape or out.dtype != np.float32:
        raise ValueError(f"{header.path}: out must be float32 {px.shape}, got {out.dtype} {out.shape}")
    info = {"ich_wrap_fixed": False, "monochrome1_inverted": False}
    if np.issubdtype(px.dtype, np.floating):
        out[...] = px
        return out, info
    # bound on |stored value| through the quirk fixes below (no pass over the data)
    bound = 1 << (8 * px.dtype.itemsize)
    if header.pixel_representation == 1 and header.bits_stored < header.bits_allocated:
        px = sign_extend(px, header.bits_stored)
        bound = 1 << header.bits_stored if header.bits_stored <= 31 else 1 << 32
    intercept = header.rescale_intercept
    if fix_ich_wrap:
        px, intercept, info["ich_wrap_fixed"] = fix_rsna_ich_wrap(px, header)
        if info["ich_wrap_fixed"]:
            bound += 1000
    if header.photometric == "MONOCHROME1" and monochrome1 == "invert":
        x = px.astype(np.int64)
        if header.pixel_representation == 1:
            px = -x - 1  # mirror of two's complement range [-2^(b-1), 2^(b-1)-1]
        else:
            px = (1 << header.bits_stored) - 1 - x
        bound = bound + (1 << header.bits_stored)
        info["monochrome1_inverted"] = True
    slope = header.rescale_slope
    intercept = float(intercept)
    if slope == 1.0 and intercept.is_integer() and bound + abs(intercept) < _FLOAT32_EXACT:
        np.add(px, np.float32(intercept), out=out, dtype=np.float32)  # exact integers: same bits as float64
    else:
        hu = np.multiply(px, slope, dtype=np.float64)
        hu += intercept
        out[...] = hu
    return out, info
