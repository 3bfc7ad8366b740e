"""Load one CT series (DICOM folder / file list, or NIfTI) as a channel-first HU ``MetaTensor``.

Output representation (both DICOM and NIfTI): a ``monai.data.MetaTensor`` of shape ``[1, X, Y, Z]`` (MONAI's
channel-first ``[C, H, W, D]`` convention, as ``LoadImage(..., ensure_channel_first=True)`` with the ITK reader
returns it): ``X`` runs along the DICOM row direction (column index), ``Y`` along the column direction (row
index) and ``Z`` over slices ordered inferior -> superior along the slice normal. Values are float32 Hounsfield
units. ``affine`` maps voxel indices to RAS millimetres (DICOM LPS flipped in x and y, as MONAI's readers do with
``affine_lps_to_ras=True``). The meta dict also carries, in slice order, ``slice_sop_uids``, ``slice_files`` and
``slice_positions`` (mm along the normal), plus the geometry report (``geometry``), so slice labels can be joined.

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
* Multi-valued WindowCenter/WindowWidth: the first value is used.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys
from pydicom.errors import InvalidDicomError

from monai_ng.transforms.dicom_headers import (
    NATIVE_LITTLE_ENDIAN,
    NativeSlice,
    SeriesGeometry,
    SliceHeader,
    analyze_series_geometry,
    group_by_series,
    header_from_dataset,
    lenient_value_reading,
    read_native_slice,
)

__all__ = [
    "LPS_TO_RAS",
    "LoadCTSeries",
    "LoadCTSeriesd",
    "decode_slice_hu",
    "dicom_affine",
    "fix_rsna_ich_wrap",
    "sign_extend",
    "stored_pixels",
]

#: ``diag(-1, -1, 1, 1)``: flips DICOM LPS to RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOMETRY_POLICIES = ("raise", "warn", "ignore")
_MONOCHROME1_POLICIES = ("hu", "invert")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
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


def _read_dataset(path: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ValueError(f"{path}: not a DICOM file ({exc})") from exc
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: file not found") from exc
    except Exception as exc:
        raise ValueError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc


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
    if not 1 <= bits_stored <= bits_allocated or str(photometric).strip() not in ("MONOCHROME1", "MONOCHROME2"):  # type: ignore[operator]
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
    if int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("NumberOfFrames") or 1) != 1:
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


def stored_pixels(ds: pydicom.Dataset | NativeSlice, header: SliceHeader, fast: bool = True) -> np.ndarray:
    """Stored pixel values of one slice, ``[rows, columns]``, as pydicom's ``Dataset.pixel_array`` returns them.

    Args:
        ds: the full dataset (with pixel data), or a :class:`~monai_ng.transforms.dicom_headers.NativeSlice`
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
        ds = _read_dataset(ds.path)
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
        raise ValueError(f"{path}: cannot decode pixel data ({name}): {type(exc).__name__}: {exc}") from exc
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
        ds: the full dataset (with pixel data) or a :class:`~monai_ng.transforms.dicom_headers.NativeSlice`.
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
    px = stored_pixels(ds, header, fast=fast)
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


def dicom_affine(headers: Sequence[SliceHeader], geometry: SeriesGeometry, lps_to_ras: bool = True) -> np.ndarray:
    """Voxel -> world affine of a ``[X, Y, Z]`` volume (X = column index, Y = row index, Z = ordered slice).

    ``world = IPP_0 + i * dc * row_dir + j * dr * col_dir + k * step`` (DICOM PS3.3 C.7.6.2.1.1), with
    ``PixelSpacing = (dr, dc)`` and ``step`` the series' slice step (see :class:`SeriesGeometry`).

    Returns:
        ``[4, 4]`` float64, RAS when ``lps_to_ras`` else LPS.
    """
    first = headers[geometry.order[0]]
    iop = np.asarray(first.image_orientation, dtype=np.float64)
    dr, dc = geometry.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * dc
    affine[:3, 1] = iop[3:] * dr
    affine[:3, 2] = np.asarray(geometry.step)
    affine[:3, 3] = np.asarray(first.image_position, dtype=np.float64)
    return LPS_TO_RAS @ affine if lps_to_ras else affine


def _list_folder(folder: Path) -> list[str]:
    """Every file below ``folder`` except hidden files and DICOMDIR indexes, sorted."""
    files = sorted(
        str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR"
    )
    if not files:
        raise ValueError(f"{folder}: folder contains no files")
    return files


class LoadCTSeries(Transform):
    """Load a CT series from a DICOM folder, a list of DICOM files, or a NIfTI file.

    Output: ``MetaTensor`` ``[1, X, Y, Z]`` float32 HU, RAS affine, slices inferior -> superior (see module
    docstring for the full meta contents).

    Args:
        series_uid: which SeriesInstanceUID to load when the input mixes several series; without it a mixed
            input raises.
        on_geometry_issue: ``"raise"``, ``"warn"`` or ``"ignore"`` for duplicate positions (different SOPs),
            gaps, inconsistent spacing, gantry tilt and non-axial series. Exact duplicates (same SOPInstanceUID
            and position) are always dropped and noted; conflicting duplicates (one SOP at two positions),
            inconsistent shape/orientation/pixel spacing always raise (no volume can be stacked).
        fix_ich_wrap: apply the RSNA ICH 12-bit wrapped-intercept fix.
        monochrome1: ``"hu"`` (default) or ``"invert"``, see module docstring.
        skip_unreadable: in a folder, skip files that are not readable DICOM images (listed in
            ``meta["skipped_files"]``) instead of raising.
        gap_factor, spacing_tolerance, tilt_tolerance_degrees, axial_tolerance_degrees: thresholds passed to
            :func:`~monai_ng.transforms.dicom_headers.analyze_series_geometry`.
    """

    def __init__(
        self,
        series_uid: str | None = None,
        on_geometry_issue: str = "warn",
        fix_ich_wrap: bool = True,
        monochrome1: str = "hu",
        skip_unreadable: bool = False,
        gap_factor: float = 1.5,
        spacing_tolerance: float = 0.1,
        tilt_tolerance_degrees: float = 0.5,
        axial_tolerance_degrees: float = 30.0,
    ) -> None:
        if on_geometry_issue not in _GEOMETRY_POLICIES:
            raise ValueError(f"on_geometry_issue must be one of {_GEOMETRY_POLICIES}, got {on_geometry_issue!r}")
        if monochrome1 not in _MONOCHROME1_POLICIES:
            raise ValueError(f"monochrome1 must be one of {_MONOCHROME1_POLICIES}, got {monochrome1!r}")
        if gap_factor <= 1:
            raise ValueError(f"gap_factor must be > 1, got {gap_factor}")
        if spacing_tolerance < 0:
            raise ValueError(f"spacing_tolerance must be >= 0, got {spacing_tolerance}")
        self.series_uid = series_uid
        self.on_geometry_issue = on_geometry_issue
        self.fix_ich_wrap = fix_ich_wrap
        self.monochrome1 = monochrome1
        self.skip_unreadable = skip_unreadable
        self.geometry_kwargs = {
            "gap_factor": gap_factor,
            "spacing_tolerance": spacing_tolerance,
            "tilt_tolerance_degrees": tilt_tolerance_degrees,
            "axial_tolerance_degrees": axial_tolerance_degrees,
        }

    def __call__(self, data: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:
        """Load ``data`` (folder, file list, single DICOM file, or ``.nii``/``.nii.gz`` path)."""
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if str(path).endswith(_NIFTI_SUFFIXES):
                return self.load_nifti(path)
            if path.is_dir():
                return self.load_dicom(_list_folder(path), source=str(path), from_folder=True)
            if path.is_file():
                return self.load_dicom([str(path)], source=str(path))
            raise ValueError(f"{path}: no such file or folder")
        if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
            files = [str(f) for f in data]
            if not files:
                raise ValueError("empty file list: nothing to load")
            return self.load_dicom(files, source=str(Path(files[0]).parent))
        raise TypeError(f"expected a path or a sequence of paths, got {type(data).__name__}")

    # ------------------------------------------------------------------ DICOM
    def load_dicom(self, files: Sequence[str], source: str, from_folder: bool = False) -> MetaTensor:
        """Load the DICOM ``files`` (one series, or pick ``series_uid``) into ``[1, X, Y, Z]``."""
        datasets: list[pydicom.Dataset | NativeSlice] = []
        headers: list[SliceHeader] = []
        skipped: list[tuple[str, str]] = []
        with lenient_value_reading():
            for f in files:
                try:
                    # each file is read once: plain uncompressed little-endian slices by the one-pass reader,
                    # everything else (and anything it is unsure about) by pydicom
                    ds = read_native_slice(f)
                    if ds is not None:
                        header = ds.header
                    else:
                        ds = _read_dataset(f)
                        header = header_from_dataset(ds, f)
                except ValueError as exc:
                    if self.skip_unreadable and from_folder:
                        skipped.append((f, str(exc)))
                        continue
                    raise
                datasets.append(ds)
                headers.append(header)
        if not headers:
            raise ValueError(f"{source}: no readable DICOM image among {len(files)} file(s)")
        groups = group_by_series(headers)
        if self.series_uid is not None:
            if self.series_uid not in groups:
                raise ValueError(f"{source}: series {self.series_uid} not found; series present: {sorted(groups)[:10]}")
            uid = self.series_uid
        elif len(groups) > 1:
            counts = ", ".join(f"{u} ({len(v)} files)" for u, v in groups.items())
            raise ValueError(
                f"{source}: mixed folder with {len(groups)} series: {counts}; pass series_uid= to pick one"
            )
        else:
            uid = next(iter(groups))
        index = [i for i, h in enumerate(headers) if h.series_instance_uid == uid]
        headers = [headers[i] for i in index]
        datasets = [datasets[i] for i in index]
        geometry = analyze_series_geometry(headers, **self.geometry_kwargs)  # type: ignore[arg-type]
        self._handle_issues(geometry, source, uid)
        infos = []
        # [Z, rows, cols] (shape checked equal across the series), each slice decoded straight into its plane
        stack = np.empty((len(geometry.order), *geometry.shape), dtype=np.float32)
        with lenient_value_reading():
            for k, i in enumerate(geometry.order):
                _, info = decode_slice_hu(datasets[i], headers[i], self.fix_ich_wrap, self.monochrome1, out=stack[k])
                datasets[i] = None  # type: ignore[call-overload]  # release the file's bytes once decoded
                infos.append(info)
        # a strided view [1, X (cols), Y (rows), Z]; MONAI transforms accept non-contiguous tensors
        volume = torch.from_numpy(stack).permute(2, 1, 0)[None]
        affine = dicom_affine(headers, geometry)
        ordered = [headers[i] for i in geometry.order]
        first = ordered[0]
        meta = {
            "filename_or_obj": source,
            "series_uid": uid,
            "study_uid": first.study_instance_uid,
            "slice_sop_uids": [h.sop_instance_uid for h in ordered],
            "slice_files": [h.path for h in ordered],
            "slice_positions": list(geometry.positions),
            "dropped_files": [headers[i].path for i in geometry.dropped],
            "skipped_files": [f"{f}: {r}" for f, r in skipped],
            "geometry": geometry.to_dict(),
            "geometry_issues": list(geometry.issues),
            "window_center": first.window_center,
            "window_width": first.window_width,
            "photometric": first.photometric,
            "ich_wrap_fixed": [bool(x["ich_wrap_fixed"]) for x in infos],
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(volume.shape[1:]),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(volume, affine=torch.as_tensor(affine), meta=meta)

    def _handle_issues(self, geometry: SeriesGeometry, source: str, uid: str) -> None:
        if not geometry.issues or self.on_geometry_issue == "ignore":
            return
        message = f"{source}: series {uid} geometry: " + "; ".join(geometry.issues)
        if self.on_geometry_issue == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)

    # ------------------------------------------------------------------ NIfTI
    def load_nifti(self, path: Path) -> MetaTensor:
        """Load a NIfTI volume into ``[1, X, Y, Z]`` HU, reoriented to the closest RAS+ axes (Z inferior->superior)."""
        if not path.is_file():
            raise ValueError(f"{path}: no such NIfTI file")
        try:
            img = nib.load(str(path))
            img = nib.as_closest_canonical(img)
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except Exception as exc:
            raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{path}: NIfTI volume has shape {data.shape}; expected 3D [X, Y, Z]")
        affine = np.asarray(img.affine, dtype=np.float64)
        n_slices = data.shape[2]
        # positions along the slice axis in the same convention as DICOM: LPS point . unit LPS slice direction
        lps = LPS_TO_RAS @ affine
        direction = lps[:3, 2] / max(float(np.linalg.norm(lps[:3, 2])), 1e-12)
        positions = [float((lps[:3, 3] + k * lps[:3, 2]) @ direction) for k in range(n_slices)]
        meta = {
            "filename_or_obj": str(path),
            "series_uid": "",
            "study_uid": "",
            "slice_sop_uids": [""] * n_slices,
            "slice_files": [str(path)] * n_slices,
            "slice_positions": positions,
            "ich_wrap_fixed": [False] * n_slices,
            "dropped_files": [],
            "skipped_files": [],
            "geometry": {},
            "geometry_issues": [],
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(data.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(data[None])), affine=torch.as_tensor(affine), meta=meta)


class LoadCTSeriesd(MapTransform):
    """Dictionary version of :class:`LoadCTSeries`: replaces each ``data[key]`` (path / file list) by the volume.

    Args:
        keys: keys to load.
        series_uid_key: optional key in the dict holding the SeriesInstanceUID to pick (per item).
        allow_missing_keys: skip absent keys.
        **loader_kwargs: passed to :class:`LoadCTSeries`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_uid_key: str | None = None,
        allow_missing_keys: bool = False,
        **loader_kwargs: object,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_uid_key = series_uid_key
        self.loader_kwargs = loader_kwargs
        self.loader = LoadCTSeries(**loader_kwargs)  # type: ignore[arg-type]

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        loader = self.loader
        if self.series_uid_key is not None and d.get(self.series_uid_key):
            loader = LoadCTSeries(**{**self.loader_kwargs, "series_uid": str(d[self.series_uid_key])})  # type: ignore[arg-type]
        for key in self.key_iterator(d):
            d[key] = loader(d[key])  # type: ignore[arg-type]
        return d
