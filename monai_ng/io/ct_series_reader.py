"""``CTSeriesReader``: a MONAI ``ImageReader`` for one CT series (DICOM folder / file list / single file, or NIfTI).

Use it wherever MONAI takes a reader::

    LoadImage(reader=CTSeriesReader(), ensure_channel_first=True)("/data/scan_folder")   # [1, X, Y, Z]
    LoadImaged(keys="image", reader=CTSeriesReader(), ensure_channel_first=True)

``read`` parses the slices' headers (each file read once: plain uncompressed little-endian slices by the one-pass
reader of :mod:`monai_ng.io._native_dicom`, everything else by pydicom), picks the series, orders the slices along
the slice normal (IOP x IPP, :func:`~monai_ng.io.series_geometry.analyze_series_geometry`) and acts on geometry
issues; ``get_data`` decodes HU (:func:`~monai_ng.io.pixel_decoding.decode_slice_hu`, with the RSNA quirk fixes) and
returns ``(array [X, Y, Z] float32, meta)``.

Voxel grid (one convention for DICOM and NIfTI): ``X`` runs along the DICOM row direction (column index), ``Y``
along the column direction (row index) and ``Z`` over slices. Both sources are brought to the same axis codes
``axcodes`` with MONAI's ``Orientation`` (default ``"LPS"``: X toward patient left, Y toward posterior, Z inferior ->
superior, which is the stored order of a standard axial DICOM series and its radiological display). A DICOM series
whose slice axis is not closest to the third target axis (sagittal / coronal acquisitions, flagged ``non_axial`` in
the geometry report) keeps its stored order, so its slices stay on the last axis. Values are never resampled: flips and axis
permutations only, float32 HU bit for bit. ``affine`` maps voxel indices to RAS millimetres (MONAI's convention;
DICOM LPS flipped in x and y as MONAI's readers do with ``affine_lps_to_ras=True``); ``original_affine`` is the
affine of the stored order.

Meta (per-slice lists in ``Z`` order): ``slice_sop_uids``, ``slice_sop_class_uids``, ``slice_files``, ``slice_positions`` (mm along the
slice normal), ``ich_wrap_fixed``; the geometry report (``geometry``, ``geometry_issues``), ``series_uid``,
``study_uid``, ``dropped_files``, ``skipped_files``, ``window_center`` / ``window_width`` (first value of
multi-valued tags), ``photometric``, plus MONAI's ``affine``, ``original_affine``, ``spatial_shape``, ``space`` and
``original_channel_dim`` (``"no_channel"``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import ImageReader, MetaTensor
from monai.transforms import Orientation
from monai.utils import MetaKeys, SpaceKeys

from monai_ng.io._native_dicom import NativeSlice, read_native_slice
from monai_ng.io.dicom_header import SliceHeader, header_from_dataset, lenient_value_reading, read_dataset
from monai_ng.io.header_scan import group_by_series
from monai_ng.io.pixel_decoding import MONOCHROME1_POLICIES, decode_slice_hu, truncated_pixel_data
from monai_ng.io.series_geometry import LPS_TO_RAS, SeriesGeometry, analyze_series_geometry, dicom_affine

__all__ = ["GEOMETRY_POLICIES", "NIFTI_SUFFIXES", "PER_SLICE_KEYS", "CTSeriesReader", "DicomSeries", "NiftiVolume"]

#: ``on_geometry_issue`` values.
GEOMETRY_POLICIES = ("raise", "warn", "ignore")
#: File name endings read as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Meta keys holding one entry per slice (``Z`` order).
PER_SLICE_KEYS = ("slice_sop_uids", "slice_sop_class_uids", "slice_files", "slice_positions", "ich_wrap_fixed")
#: Axis labels of MONAI's ``Orientation`` (negative, positive end of each RAS world axis).
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class DicomSeries:
    """What :meth:`CTSeriesReader.read` returns for DICOM input: one ordered series, pixels not decoded yet.

    Attributes:
        source: the folder (or the file, or the parent folder of a file list) named in messages and meta.
        series_uid: the SeriesInstanceUID loaded.
        headers: the series' headers (input order).
        datasets: per header, the pydicom dataset or the one-pass reader's :class:`NativeSlice` (with pixel data).
        geometry: the geometry report; ``geometry.order`` indexes ``headers``.
        skipped: ``(file, reason)`` of unreadable files skipped in a folder.
    """

    source: str
    series_uid: str
    headers: list[SliceHeader]
    datasets: list[pydicom.Dataset | NativeSlice | None]
    geometry: SeriesGeometry
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class NiftiVolume:
    """What :meth:`CTSeriesReader.read` returns for a NIfTI file: the (lazily loaded) nibabel image and its path."""

    path: Path
    image: Any


def _list_folder(folder: Path) -> list[str]:
    """Every file below ``folder`` except hidden files and DICOMDIR indexes, sorted."""
    files = sorted(
        str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR"
    )
    if not files:
        raise ValueError(f"{folder}: folder contains no files")
    return files


def _is_nifti(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def _looks_like_dicom(path: str | os.PathLike) -> bool:
    """A ``.dcm`` name, or a file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    if str(path).lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _check_hu(stack: np.ndarray, series: DicomSeries, files: Sequence[str]) -> None:
    """Refuse a decoded ``[Z, rows, cols]`` HU stack that is not finite or holds one value only (naming the files).

    A huge RescaleIntercept or a zero slope gives such stacks; embedding them would pass a blank scan off as a scan.
    """
    low, high = float(stack.min()), float(stack.max())
    where = files[0] if len(files) == 1 else f"{series.source} (series {series.series_uid}, first file {files[0]})"
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int(np.flatnonzero(~np.isfinite(stack).reshape(len(files), -1).all(axis=1))[0])
        raise ValueError(f"{files[bad]}: HU values are not finite (RescaleSlope / RescaleIntercept overflow)")
    if low == high and stack.size > 1:
        raise ValueError(f"{where}: every voxel has the same HU value {low:g}; not a CT scan, refusing it")


class CTSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for one CT series: a DICOM folder, a list of DICOM files, one DICOM file, or a NIfTI file.

    ``get_data`` returns ``(array [X, Y, Z] float32 HU, meta)`` on the grid given by ``axcodes`` (see module
    docstring); add a channel with ``LoadImage(..., ensure_channel_first=True)`` for ``[1, X, Y, Z]``. A list of
    files is one series (not channels to stack, unlike MONAI's other readers).

    Args:
        series_uid: which SeriesInstanceUID to load when the input mixes several series; without it a mixed input
            raises. ``read(..., series_uid=...)`` overrides it for one call.
        on_geometry_issue: ``"raise"``, ``"warn"`` or ``"ignore"`` for duplicate positions (different SOPs), gaps,
            inconsistent spacing, gantry tilt and non-axial series. Exact duplicates (same SOPInstanceUID and
            position) are always dropped and noted; conflicting duplicates (one SOP at two positions), inconsistent
            shape / orientation / pixel spacing always raise (no volume can be stacked).
        fix_ich_wrap: apply the RSNA ICH 12-bit wrapped-intercept fix (:func:`~monai_ng.io.pixel_decoding.fix_rsna_ich_wrap`).
        monochrome1: ``"hu"`` (default: modality LUT only, DICOM semantics) or ``"invert"`` (mirror stored values
            first, for sources that wrote display-inverted pixels).
        skip_unreadable: in a folder, skip files that are not readable DICOM images (listed in
            ``meta["skipped_files"]``) instead of raising.
        gap_factor, spacing_tolerance, tilt_tolerance_degrees, axial_tolerance_degrees: thresholds passed to
            :func:`~monai_ng.io.series_geometry.analyze_series_geometry`.
        axcodes: target axis codes of the voxel grid (three of ``L/R``, ``P/A``, ``I/S``, one per world axis);
            ``"LPS"`` by default.
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
        axcodes: str = "LPS",
    ) -> None:
        super().__init__()
        if on_geometry_issue not in GEOMETRY_POLICIES:
            raise ValueError(f"on_geometry_issue must be one of {GEOMETRY_POLICIES}, got {on_geometry_issue!r}")
        if monochrome1 not in MONOCHROME1_POLICIES:
            raise ValueError(f"monochrome1 must be one of {MONOCHROME1_POLICIES}, got {monochrome1!r}")
        if gap_factor <= 1:
            raise ValueError(f"gap_factor must be > 1, got {gap_factor}")
        if spacing_tolerance < 0:
            raise ValueError(f"spacing_tolerance must be >= 0, got {spacing_tolerance}")
        if not isinstance(axcodes, str) or len(axcodes) != 3:
            raise ValueError(f"axcodes must be three axis codes such as 'LPS' or 'RAS', got {axcodes!r}")
        try:
            target = nib.orientations.axcodes2ornt(axcodes.upper(), _LABELS)
        except ValueError as exc:
            raise ValueError(f"axcodes {axcodes!r}: {exc}") from exc
        if np.isnan(target).any() or len(set(target[:, 0].tolist())) != 3:
            raise ValueError(f"axcodes {axcodes!r} must name each of the L/R, P/A and I/S axes once")
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
        self.axcodes = axcodes.upper()

    # ------------------------------------------------------------------ ImageReader API
    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether ``filename`` is one folder, one NIfTI file, or DICOM file(s) (``.dcm`` or ``DICM`` preamble)."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        if len(names) == 1 and (_is_nifti(names[0]) or Path(names[0]).is_dir()):
            return True
        return bool(names) and all(not _is_nifti(n) and _looks_like_dicom(n) for n in names)

    def read(
        self, data: Sequence[str | os.PathLike] | str | os.PathLike, series_uid: str | None = None
    ) -> DicomSeries | NiftiVolume:
        """Read the headers of ``data`` (folder, file list, one DICOM file, or ``.nii`` / ``.nii.gz``) and order the series.

        Args:
            data: a path, or a sequence of paths (one folder or NIfTI file in a sequence of one is read as that path,
                as ``LoadImage`` passes it).
            series_uid: SeriesInstanceUID to pick in a mixed input (overrides the constructor's ``series_uid``).

        Returns:
            A :class:`DicomSeries` or a :class:`NiftiVolume`, for :meth:`get_data`.

        Raises:
            ValueError: naming the path and reason (no such file or folder, unreadable file, mixed series without
                ``series_uid``, geometry that cannot be stacked or, with ``on_geometry_issue="raise"``, any issue).
            TypeError: ``data`` is not a path or a sequence of paths.
        """
        uid = self.series_uid if series_uid is None else series_uid
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes, bytearray)):
            files = [str(f) for f in data]
            if not files:
                raise ValueError("empty file list: nothing to load")
            if len(files) == 1 and (_is_nifti(files[0]) or Path(files[0]).is_dir()):
                data = files[0]
            else:
                nifti = [f for f in files if _is_nifti(f)]
                if nifti:
                    raise ValueError(f"{nifti[0]}: a file list must hold DICOM files of one series, not NIfTI")
                return self._read_dicom(files, source=str(Path(files[0]).parent), series_uid=uid)
        if not isinstance(data, (str, os.PathLike)):
            raise TypeError(f"expected a path or a sequence of paths, got {type(data).__name__}")
        path = Path(data)
        if _is_nifti(path):
            return self._read_nifti(path)
        if path.is_dir():
            return self._read_dicom(_list_folder(path), source=str(path), series_uid=uid, from_folder=True)
        if path.is_file():
            return self._read_dicom([str(path)], source=str(path), series_uid=uid)
        raise ValueError(f"{path}: no such file or folder")

    def get_data(self, img: DicomSeries | NiftiVolume) -> tuple[np.ndarray, dict]:
        """Decode ``img`` to ``(array [X, Y, Z] float32 HU, meta)`` on the ``axcodes`` grid (see module docstring).

        Raises:
            ValueError: naming the file and reason (undecodable pixel data, unreadable or non-3D NIfTI).
        """
        if isinstance(img, NiftiVolume):
            return self._nifti_data(img)
        if isinstance(img, DicomSeries):
            return self._dicom_data(img)
        raise TypeError(f"expected what CTSeriesReader.read returns, got {type(img).__name__}")

    # ------------------------------------------------------------------ DICOM
    def _read_dicom(
        self, files: Sequence[str], source: str, series_uid: str | None, from_folder: bool = False
    ) -> DicomSeries:
        datasets: list[pydicom.Dataset | NativeSlice | None] = []
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
                        ds = read_dataset(f)
                        header = header_from_dataset(ds, f)
                    problem = truncated_pixel_data(ds, header)
                    if problem is not None:
                        raise ValueError(f"{f}: {problem}")
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
        if series_uid is not None:
            if series_uid not in groups:
                raise ValueError(f"{source}: series {series_uid} not found; series present: {sorted(groups)[:10]}")
            uid = series_uid
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
        return DicomSeries(source, uid, headers, datasets, geometry, skipped)

    def _handle_issues(self, geometry: SeriesGeometry, source: str, uid: str) -> None:
        if not geometry.issues or self.on_geometry_issue == "ignore":
            return
        message = f"{source}: series {uid} geometry: " + "; ".join(geometry.issues)
        if self.on_geometry_issue == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=4)

    def _dicom_data(self, series: DicomSeries) -> tuple[np.ndarray, dict]:
        geometry, headers, datasets = series.geometry, series.headers, series.datasets
        infos = []
        # [Z, rows, cols] (shape checked equal across the series), each slice decoded straight into its plane
        stack = np.empty((len(geometry.order), *geometry.shape), dtype=np.float32)
        with lenient_value_reading():
            for k, i in enumerate(geometry.order):
                _, info = decode_slice_hu(datasets[i], headers[i], self.fix_ich_wrap, self.monochrome1, out=stack[k])  # type: ignore[arg-type]
                datasets[i] = None  # release the file's bytes once decoded
                infos.append(info)
        _check_hu(stack, series, [headers[i].path for i in geometry.order])
        # a strided view [X (cols), Y (rows), Z]; MONAI transforms accept non-contiguous tensors
        volume = stack.transpose(2, 1, 0)
        affine = dicom_affine(headers, geometry)
        ordered = [headers[i] for i in geometry.order]
        first = ordered[0]
        meta: dict = {
            "filename_or_obj": series.source,
            "series_uid": series.series_uid,
            "study_uid": first.study_instance_uid,
            "slice_sop_uids": [h.sop_instance_uid for h in ordered],
            "slice_sop_class_uids": [h.sop_class_uid for h in ordered],
            "slice_files": [h.path for h in ordered],
            "slice_positions": list(geometry.positions),
            "dropped_files": [headers[i].path for i in geometry.dropped],
            "skipped_files": [f"{f}: {r}" for f, r in series.skipped],
            "geometry": geometry.to_dict(),
            "geometry_issues": list(geometry.issues),
            "window_center": first.window_center,
            "window_width": first.window_width,
            "photometric": first.photometric,
            "ich_wrap_fixed": [bool(x["ich_wrap_fixed"]) for x in infos],
            "original_affine": affine.copy(),
        }
        volume, oriented, slices_reversed = self._orient(volume, affine, keep_slice_axis=True)
        if slices_reversed:
            for key in PER_SLICE_KEYS:
                meta[key] = meta[key][::-1]
        return volume, self._finish_meta(meta, oriented, volume.shape)

    # ------------------------------------------------------------------ NIfTI
    def _read_nifti(self, path: Path) -> NiftiVolume:
        if not path.is_file():
            raise ValueError(f"{path}: no such NIfTI file")
        try:
            return NiftiVolume(path, nib.load(str(path)))
        except Exception as exc:
            raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc

    def _nifti_data(self, nifti: NiftiVolume) -> tuple[np.ndarray, dict]:
        path, img = nifti.path, nifti.image
        try:
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except Exception as exc:
            raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{path}: NIfTI volume has shape {data.shape}; expected 3D [X, Y, Z]")
        original = np.asarray(img.affine, dtype=np.float64)
        volume, affine, _ = self._orient(np.ascontiguousarray(data), original, keep_slice_axis=False)
        volume = np.ascontiguousarray(volume)
        n_slices = volume.shape[2]
        # positions along the slice axis in the same convention as DICOM: LPS point . unit LPS slice direction
        lps = LPS_TO_RAS @ affine
        direction = lps[:3, 2] / max(float(np.linalg.norm(lps[:3, 2])), 1e-12)
        positions = [float((lps[:3, 3] + k * lps[:3, 2]) @ direction) for k in range(n_slices)]
        meta = {
            "filename_or_obj": str(path),
            "series_uid": "",
            "study_uid": "",
            "slice_sop_uids": [""] * n_slices,
            "slice_sop_class_uids": [""] * n_slices,
            "slice_files": [str(path)] * n_slices,
            "slice_positions": positions,
            "ich_wrap_fixed": [False] * n_slices,
            "dropped_files": [],
            "skipped_files": [],
            "geometry": {},
            "geometry_issues": [],
            "original_affine": original.copy(),
        }
        return volume, self._finish_meta(meta, affine, volume.shape)

    # ------------------------------------------------------------------ voxel grid
    def _finish_meta(self, meta: dict, affine: np.ndarray, shape: Sequence[int]) -> dict:
        meta[MetaKeys.AFFINE] = affine
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(shape)
        meta[MetaKeys.SPACE] = SpaceKeys.RAS
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
        return meta

    def _keeps_stored_order(self, affine: np.ndarray) -> bool:
        """Whether a DICOM series stays in stored order: its slice axis is not closest to the target's third axis."""
        current = nib.orientations.io_orientation(affine)
        target = nib.orientations.axcodes2ornt(self.axcodes, _LABELS)
        return bool(current[2, 0] != target[2, 0])

    def _orient(
        self, volume: np.ndarray, affine: np.ndarray, keep_slice_axis: bool
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Bring ``volume [X, Y, Z]`` to the target axis codes with MONAI ``Orientation`` (flips / permutations only).

        With ``keep_slice_axis`` (DICOM), a series whose slice axis is not closest to the target's third axis
        (sagittal / coronal acquisition with an axial target) keeps its stored order, so that its slices stay on the
        last axis with their per-slice meta.

        Returns:
            ``(volume, affine, slices_reversed)``. When nothing changes the input view is returned as is (MONAI's
            ``Orientation`` would copy it). A changed DICOM volume keeps the memory order of its slices (slice-major
            when the slice axis stays last), so the slice stack takes the same path as for stored-order series.
        """
        if keep_slice_axis and self._keeps_stored_order(affine):
            return volume, affine, False
        current = nib.orientations.io_orientation(affine)
        transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(self.axcodes, _LABELS))
        if (transform[:, 0] == np.arange(3)).all() and (transform[:, 1] == 1).all():
            return volume, affine, False
        image = MetaTensor(torch.from_numpy(volume)[None], affine=torch.as_tensor(affine, dtype=torch.float64))
        out = Orientation(axcodes=self.axcodes, labels=_LABELS)(image)
        oriented = out.affine.numpy().astype(np.float64)
        data = out.as_tensor()[0]
        if keep_slice_axis:
            # out axis i holds input axis source[i]: give it that axis' stride (the stored memory order)
            source = np.argsort(transform[:, 0])
            item = volume.itemsize
            strides = [volume.strides[int(s)] // item for s in source]
            dense = torch.empty_strided(tuple(data.shape), strides, dtype=data.dtype)
            dense.copy_(data)
            data = dense
        slices_reversed = bool(transform[2, 0] == 2 and transform[2, 1] == -1)
        return data.numpy(), oriented, slices_reversed
