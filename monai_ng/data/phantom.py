"""Phantom CT generator: head, chest and abdomen-like volumes written as DICOM series, NIfTI and RSNA layouts.

The phantoms stand in for the three public datasets the Normal Guidance paper evaluates on (E. Harvey,
D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs", 2026): RSNA intracranial hemorrhage 2019
(head), RSNA pulmonary embolism 2020 (chest) and RSNA abdominal trauma 2023 (abdomen). Each volume carries one
lesion whose axial extent is known exactly (a centre-biased block of slices), so slice-level localization code can be
tested end to end with no real data.

Conventions used throughout:
    * ``hu`` is ``int16`` ``[N, H, W]`` with slice 0 the most inferior slice (increasing patient z, DICOM LPS).
    * Row ``r`` of a slice runs along +y (patient posterior), column ``c`` along +x (patient left), as in an axial
      DICOM image with ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``.
    * The phantom's HU lie in ``[-1000, 2000]`` so that every supported pixel mode stores them exactly.

Compressed transfer syntaxes: RLE Lossless and JPEG 2000 Lossless are encoded by pydicom (the latter through the
``pylibjpeg-openjpeg`` plugin, or by GDCM for images under 64 pixels); JPEG Lossless (process 14, SV1) and JPEG-LS Lossless are encoded by transcoding through
``python-gdcm``. Lossy syntaxes are not offered (the phantom must round-trip exactly).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from monai_ng.data.rsna_schema import (
    ABDOMINAL_IMAGE_COLUMNS,
    ABDOMINAL_IMAGE_CSV,
    ABDOMINAL_SERIES_COLUMNS,
    ABDOMINAL_SERIES_CSV,
    ABDOMINAL_TRAIN_COLUMNS,
    ABDOMINAL_TRAIN_CSV,
    ICH_COLUMNS,
    ICH_CSV,
    ICH_SUBTYPES,
    PE_COLUMNS,
    PE_CSV,
)

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "ICH_SUBTYPES",
    "PE_COLUMNS",
    "ABDOMINAL_TRAIN_COLUMNS",
    "PIXEL_MODES",
    "REGIONS",
    "TRANSFER_SYNTAXES",
    "PhantomVolume",
    "SliceRecord",
    "make_phantom_volume",
    "nifti_affine",
    "write_dicom_series",
    "write_nifti",
    "write_rsna_abdominal",
    "write_rsna_ich",
    "write_rsna_pe",
]

REGIONS = ("head", "chest", "abdomen")
HU_MIN = -1000
HU_MAX = 2000

# Default geometry per region: slice spacing (mm) and in-plane field of view (mm).
_Z_SPACING = {"head": 5.0, "chest": 2.5, "abdomen": 3.0}
_FOV_MM = {"head": 230.0, "chest": 360.0, "abdomen": 400.0}
_BODY_PART = {"head": "HEAD", "chest": "CHEST", "abdomen": "ABDOMEN"}
# (centre, width) pairs written to WindowCenter / WindowWidth; the first is used when single-valued.
_HEADER_WINDOWS = {
    "head": [(40.0, 80.0), (80.0, 200.0)],
    "chest": [(100.0, 700.0), (-600.0, 1500.0)],
    "abdomen": [(50.0, 400.0), (60.0, 150.0)],
}

TRANSFER_SYNTAXES = {
    "explicit_le": ExplicitVRLittleEndian,
    "implicit_le": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000_lossless": JPEG2000Lossless,
    "jpeg_lossless": JPEGLosslessSV1,
    "jpegls_lossless": JPEGLSLossless,
}
_NATIVE_SYNTAXES = ("explicit_le", "implicit_le")
_GDCM_SYNTAXES = ("jpeg_lossless", "jpegls_lossless")

# pixel mode -> (BitsStored, PixelRepresentation, default (slope, intercept))
PIXEL_MODES: dict[str, tuple[int, int, tuple[float, float]]] = {
    "signed16": (16, 1, (1.0, -1024.0)),
    "unsigned16": (16, 0, (1.0, -1024.0)),
    "unsigned12": (12, 0, (1.0, -1024.0)),
    # RSNA ICH 2019 quirk: 12-bit unsigned storage of HU modulo 4096 with an intercept near 0 instead of -1000/-1024.
    # Decoding: raw = (stored + 1000) mod 4096, HU = raw - 1000 (valid for HU >= -1000).
    "unsigned12_wrapped": (12, 0, (1.0, 0.0)),
    # RSNA abdominal 2023 quirk: signed 12-bit values in a 16-bit word whose 4 high bits are NOT sign-extended;
    # a reader must sign-extend from bit 11 (pydicom does, a raw int16 view does not).
    "signed12_in16": (12, 1, (1.0, 0.0)),
}


@dataclass
class PhantomVolume:
    """A phantom CT volume in Hounsfield units.

    Attributes:
        hu: ``int16`` array ``[N, H, W]``, slice 0 most inferior, values in ``[HU_MIN, HU_MAX]``.
        spacing: ``(z, y, x)`` voxel spacing in mm (z = distance between slice centres).
        lesion_slices: ``bool`` array ``[N]``; True exactly on the slices that contain lesion voxels.
        region: ``"head"``, ``"chest"`` or ``"abdomen"``.
        origin: patient (LPS) position ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    lesion_slices: np.ndarray
    region: str
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def n_slices(self) -> int:
        """Number of axial slices ``N``."""
        return int(self.hu.shape[0])

    @property
    def label(self) -> int:
        """Scan label: 1 when any slice holds the lesion."""
        return int(self.lesion_slices.any())


@dataclass
class SliceRecord:
    """One written DICOM file and where its slice sits in the volume (``slice_index`` 0 = most inferior)."""

    path: Path
    slice_index: int
    instance_number: int
    z_position: float
    lesion: bool
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    extra: dict = field(default_factory=dict)


def _as_rng(seed: int | np.random.Generator | None, rng: np.random.Generator | None = None) -> np.random.Generator:
    if rng is not None:
        return rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy, cx, ry, rx) -> np.ndarray:
    """Boolean mask of points inside an axis-aligned ellipse; centres / radii broadcast against ``[N, 1, 1]``."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lesion_block(n_slices: int, rng: np.random.Generator) -> tuple[int, int]:
    """Centre-biased block of slices ``[start, stop)``: centre ~ N(N/2, N/8), length 15-35 % of N (at least 1)."""
    length = int(np.clip(round(n_slices * rng.uniform(0.15, 0.35)), 1, n_slices))
    centre = rng.normal((n_slices - 1) / 2.0, n_slices / 8.0)
    start = int(np.clip(round(centre - (length - 1) / 2.0), 0, n_slices - length))
    return start, start + length


def _head(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    # Skull narrows toward the vertex: semi-axes shrink with z (0 = inferior, 1 = superior).
    scale = 0.55 + 0.4 * np.sqrt(np.clip(1.0 - ((zz - 0.3) / 1.0) ** 2, 0.0, 1.0))
    ry, rx = 0.9 * scale, 0.75 * scale
    cy = -0.05 + 0.05 * zz
    outer = _ellipse(yy, xx, cy, 0.0, ry, rx)
    inner = _ellipse(yy, xx, cy, 0.0, ry - 0.1, rx - 0.1)
    hu = np.full(np.broadcast_shapes(zz.shape, yy.shape, xx.shape), -1000.0, dtype=np.float32)
    hu[outer] = 1000.0 + 300.0 * rng.random()
    hu[inner] = 33.0
    white = _ellipse(yy, xx, cy, 0.0, 0.6 * ry, 0.55 * rx)
    hu[white & inner] = 28.0
    # Lateral ventricles: two CSF ellipses in the middle third of the volume.
    vent_on = (zz > 0.35) & (zz < 0.7)
    for side in (-1.0, 1.0):
        vent = _ellipse(yy, xx, cy - 0.05, side * 0.12 * rx, 0.3 * ry, 0.07) & vent_on
        hu[vent] = 5.0
    geometry = {"cy": cy, "ry": ry - 0.1, "rx": rx - 0.1}
    return hu, geometry


def _chest(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipse(yy, xx, 0.0, 0.0, 0.62, 0.92)
    hu[body] = -100.0  # subcutaneous fat
    muscle = _ellipse(yy, xx, 0.0, 0.0, 0.56, 0.85)
    hu[muscle] = 45.0
    # Lungs grow from the diaphragm (bottom) upward, then taper at the apex.
    lung_scale = np.clip(0.35 + 1.6 * zz - 1.2 * zz**2, 0.2, 1.0)
    for side in (-1.0, 1.0):
        lung = _ellipse(yy, xx, 0.0, side * 0.42, 0.45 * lung_scale, 0.32 * lung_scale)
        hu[lung] = -820.0
    spine = _ellipse(yy, xx, 0.45, 0.0, 0.1, 0.1)
    hu[spine] = 700.0
    aorta = _ellipse(yy, xx, 0.25, 0.1, 0.08, 0.08)
    hu[aorta] = 320.0
    # Contrast-filled pulmonary artery branch running obliquely through the right lung (image left).
    vy = -0.05 + 0.15 * zz
    vx = -0.42 + 0.05 * zz
    vessel = _ellipse(yy, xx, vy, vx, 0.16, 0.16)
    hu[vessel] = 330.0 + 40.0 * rng.random()
    geometry = {"vy": vy, "vx": vx}
    return hu, geometry


def _abdomen(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    width = 0.85 + 0.08 * zz
    body = _ellipse(yy, xx, 0.0, 0.0, 0.65, width)
    hu[body] = -100.0
    inner = _ellipse(yy, xx, 0.0, 0.0, 0.58, width - 0.07)
    hu[inner] = 20.0
    # Liver (patient right = image left) dominates the upper slices, shrinking downward.
    liver_scale = np.clip(1.4 * zz - 0.1, 0.0, 1.0)
    liver = _ellipse(yy, xx, -0.05, -0.35, 0.4 * liver_scale + 1e-3, 0.38 * liver_scale + 1e-3) & (liver_scale > 0)
    hu[liver] = 62.0
    spleen_scale = np.clip(2.0 * zz - 0.9, 0.0, 1.0)
    spleen = _ellipse(yy, xx, 0.1, 0.5, 0.18 * spleen_scale + 1e-3, 0.14 * spleen_scale + 1e-3) & (spleen_scale > 0)
    hu[spleen] = 50.0
    kidney_on = (zz > 0.3) & (zz < 0.75)
    for side in (-1.0, 1.0):
        kidney = _ellipse(yy, xx, 0.32, side * 0.3, 0.14, 0.09) & kidney_on
        hu[kidney] = 160.0
    # Bowel loops (fluid with gas) in the lower half.
    bowel_on = zz < 0.55
    for cy, cx in ((-0.3, 0.15), (-0.15, 0.4), (-0.35, -0.2)):
        loop = _ellipse(yy, xx, cy, cx, 0.1, 0.12) & bowel_on
        hu[loop] = 15.0
        gas = _ellipse(yy, xx, cy - 0.04, cx, 0.04, 0.06) & bowel_on
        hu[gas] = -900.0
    spine = _ellipse(yy, xx, 0.45, 0.0, 0.1, 0.1)
    hu[spine] = 650.0
    aorta = _ellipse(yy, xx, 0.3, 0.08, 0.06, 0.06)
    hu[aorta] = 180.0 + 60.0 * rng.random()
    geometry = {}
    return hu, geometry


def make_phantom_volume(
    region: str,
    n_slices: int,
    size: int = 64,
    lesion: bool = True,
    seed: int | np.random.Generator | None = None,
    rng: np.random.Generator | None = None,
    *,
    spacing: tuple[float, float, float] | None = None,
    noise_hu: float = 6.0,
) -> PhantomVolume:
    """Make an anatomy-like CT phantom with an optional lesion of known axial extent.

    Head: skull ring (~1000-1300 HU) narrowing toward the vertex around brain (28-33 HU) with CSF ventricles; lesion =
    hemorrhage blob (~70 HU). Chest: body, fat, lungs (-820 HU) growing from the diaphragm, spine, aorta and a bright
    contrast-filled pulmonary artery branch; lesion = filling defect (~45 HU) inside that vessel. Abdomen: body, liver,
    spleen, kidneys, bowel loops with gas, spine, aorta; lesion = active extravasation blob (~260 HU).

    The lesion occupies a centre-biased contiguous block of slices (centre ~ N(N/2, N/8), 15-35 % of the slices) and is
    visible (several pixels) on every slice of that block and on no other. The anatomy and the noise do not depend on
    ``lesion``: the same seed with ``lesion=False`` gives the same volume except on the lesion slices.

    Args:
        region: ``"head"``, ``"chest"`` or ``"abdomen"``.
        n_slices: number of axial slices ``N`` (>= 1).
        size: in-plane size ``H = W`` in pixels (>= 16).
        lesion: whether to insert the lesion.
        seed: integer seed or generator (ignored when ``rng`` is given).
        rng: numpy generator to draw from.
        spacing: ``(z, y, x)`` in mm; default depends on the region (FOV 230 / 360 / 400 mm over ``size`` pixels).
        noise_hu: standard deviation of additive Gaussian noise (HU).

    Returns:
        ``PhantomVolume`` with ``hu`` ``int16 [N, H, W]`` ordered inferior -> superior.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if not isinstance(n_slices, (int, np.integer)) or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if noise_hu < 0:
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    if spacing is None:
        pixel = _FOV_MM[region] / size
        spacing = (_Z_SPACING[region], pixel, pixel)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    spacing = tuple(float(s) for s in spacing)

    generator = _as_rng(seed, rng)
    seeds = generator.integers(0, 2**63 - 1, size=3)
    anatomy_rng, noise_rng, lesion_rng = (np.random.default_rng(int(s)) for s in seeds)

    n = int(n_slices)
    zz = ((np.arange(n, dtype=np.float32) + 0.5) / n)[:, None, None]
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy = axis[None, :, None]
    xx = axis[None, None, :]
    builder = {"head": _head, "chest": _chest, "abdomen": _abdomen}[region]
    hu, geom = builder(*np.broadcast_arrays(zz, yy, xx), anatomy_rng)
    geom = {key: np.broadcast_to(value, (n, size, size))[:, 0, 0] for key, value in geom.items()}  # per slice [N]
    hu = np.broadcast_to(hu, (n, size, size)).copy()
    hu += noise_rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)

    lesion_slices = np.zeros(n, dtype=bool)
    start, stop = _lesion_block(n, lesion_rng)
    # Lesion position / appearance is drawn even when lesion=False so that the other draws do not shift.
    jitter = lesion_rng.uniform(-1.0, 1.0, size=2)
    if lesion:
        lesion_slices[start:stop] = True
        k = np.arange(n)[:, None, None]
        on = (k >= start) & (k < stop)
        min_r = 2.6 * 2.0 / size  # at least ~2.6 pixels of radius on every lesion slice
        if region == "head":
            k_mid = (start + stop - 1) // 2
            cy = float(geom["cy"][k_mid]) + 0.125 * jitter[0]
            ry_min = float(geom["ry"][start:stop].min())
            rx_min = float(geom["rx"][start:stop].min())
            cx = 0.35 * rx_min * (1.0 if jitter[1] >= 0 else -1.0)
            r = max(0.18 * min(ry_min, rx_min), min_r)
            mask = _ellipse(yy, xx, cy, cx, r, r) & on
            hu[mask] = 70.0 + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)
        elif region == "chest":
            vy = geom["vy"][:, None, None]
            vx = geom["vx"][:, None, None]
            r = max(0.08, min_r)
            mask = _ellipse(yy, xx, vy + 0.03 * jitter[0], vx + 0.03 * jitter[1], r, r) & on
            hu[mask] = 45.0 + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)
        else:
            cy, cx = -0.05 + 0.1 * jitter[0], -0.05 + 0.1 * jitter[1]
            r = max(0.1, min_r)
            mask = _ellipse(yy, xx, cy, cx, r, r * 1.2) & on
            hu[mask] = 260.0 + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)

    hu = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    dz, dy, dx = spacing
    origin_z = float(anatomy_rng.uniform(-400.0, 100.0))
    origin = (-(size - 1) / 2.0 * dx, -(size - 1) / 2.0 * dy, round(origin_z, 2))
    return PhantomVolume(hu=hu, spacing=spacing, lesion_slices=lesion_slices, region=region, origin=origin)


def _encode_stored(hu: np.ndarray, pixel_mode: str, slope: float, intercept: float) -> np.ndarray:
    """Stored pixel values ``[N, H, W]`` (as the uint16 / int16 words written to PixelData) for ``hu``."""
    bits, signed, _ = PIXEL_MODES[pixel_mode]
    if pixel_mode == "unsigned12_wrapped":
        if slope != 1.0 or intercept != 0.0:
            raise ValueError(f"pixel_mode 'unsigned12_wrapped' needs rescale (1, 0), got ({slope}, {intercept})")
        return np.mod(hu.astype(np.int32), 4096).astype(np.uint16)
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if stored.min() < lo or stored.max() > hi:
        raise ValueError(
            f"HU range [{hu.min()}, {hu.max()}] with rescale ({slope}, {intercept}) gives stored values "
            f"[{stored.min():.0f}, {stored.max():.0f}] outside the {bits}-bit {'signed' if signed else 'unsigned'} "
            f"range [{lo}, {hi}] of pixel_mode {pixel_mode!r}"
        )
    if pixel_mode == "signed12_in16":
        # two's complement in the low 12 bits, high 4 bits left at zero (not sign-extended)
        return (stored.astype(np.int16).view(np.uint16) & 0x0FFF).astype(np.uint16)
    return stored.astype(np.int16 if signed else np.uint16)


def _gdcm_transcode(path: Path, syntax: str) -> None:
    import gdcm  # optional codec backend for JPEG Lossless / JPEG-LS

    target = {
        "jpeg_lossless": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        "jpegls_lossless": gdcm.TransferSyntax.JPEGLSLossless,
        "jpeg2000_lossless": gdcm.TransferSyntax.JPEG2000Lossless,
    }[syntax]
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError(f"{path}: gdcm could not read the file written for transcoding")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(target))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"{path}: gdcm could not encode {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    tmp = path.with_suffix(".tmp")
    writer.SetFileName(str(tmp))
    if not writer.Write():
        raise RuntimeError(f"{path}: gdcm could not write the {syntax} file")
    os.replace(tmp, path)


def write_dicom_series(
    volume: PhantomVolume,
    folder: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    shuffle_names: bool = True,
    file_naming: str = "sop",
    transfer_syntax: str = "explicit_le",
    rescale: tuple[float, float] | None = None,
    pixel_mode: str = "signed16",
    monochrome1: bool = False,
    instance_numbers: str = "ascending",
    tilt_deg: float = 0.0,
    seed: int | np.random.Generator | None = None,
    sop_uids: Sequence[str] | None = None,
    first_instance_number: int = 1,
    multi_valued_windows: bool | None = None,
) -> list[SliceRecord]:
    """Write ``volume`` as a CT Image Storage DICOM series, one file per slice.

    Headers carry generated UIDs, ``ImagePositionPatient`` = ``origin + k * dz`` along z for slice ``k`` (inferior ->
    superior), ``ImageOrientationPatient`` (rows along +x, columns along +y, tilted about x by ``tilt_deg`` with
    ``GantryDetectorTilt`` set), ``PixelSpacing`` (row spacing, column spacing) = ``(dy, dx)``, ``SliceThickness`` =
    ``dz``, rescale slope / intercept, 16-bit allocation with the pixel mode's ``BitsStored``, ``HighBit`` and
    ``PixelRepresentation``, window centre / width (sometimes multi-valued) and the given pseudonymous ``PatientID``.
    ``PatientName`` and ``PatientBirthDate`` are never written.

    Args:
        volume: phantom to write.
        folder: output folder (created).
        patient_id: synthetic pseudonymous patient id.
        study_uid: StudyInstanceUID (generated when None).
        series_uid: SeriesInstanceUID (generated when None).
        shuffle_names: write the files in a random order (and, with ``file_naming="index"``, number the names in
            that random order) so that neither names nor directory order reveal the slice order.
        file_naming: ``"sop"`` (``<SOPInstanceUID>.dcm``), ``"instance"`` (``<InstanceNumber>.dcm``), ``"index"``
            (``IM<k>.dcm`` in write order).
        transfer_syntax: one of ``TRANSFER_SYNTAXES``.
        rescale: ``(RescaleSlope, RescaleIntercept)``; default per pixel mode (see ``PIXEL_MODES``).
        pixel_mode: one of ``PIXEL_MODES`` (quirk modes need a native transfer syntax).
        monochrome1: write ``PhotometricInterpretation = MONOCHROME1`` (stored values unchanged: the modality LUT
            still maps them to HU; only display is inverted).
        instance_numbers: ``"ascending"`` / ``"descending"`` along z, or ``"shuffled"`` (unrelated to position).
        tilt_deg: gantry tilt in degrees.
        seed: randomness for shuffling and header choices.
        sop_uids: SOPInstanceUIDs per slice (inferior -> superior); generated when None.
        first_instance_number: InstanceNumber of the first numbered slice.
        multi_valued_windows: force (True) / forbid (False) multi-valued WindowCenter; random when None.

    Returns:
        ``SliceRecord`` per slice ordered inferior -> superior.
    """
    if not isinstance(volume, PhantomVolume):
        raise TypeError(f"volume must be a PhantomVolume, got {type(volume).__name__}")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}")
    if pixel_mode not in PIXEL_MODES:
        raise ValueError(f"pixel_mode must be one of {sorted(PIXEL_MODES)}, got {pixel_mode!r}")
    if pixel_mode == "signed12_in16" and transfer_syntax not in _NATIVE_SYNTAXES:
        raise ValueError(f"pixel_mode 'signed12_in16' is a raw-bits quirk and needs a native syntax {_NATIVE_SYNTAXES}")
    if file_naming not in ("sop", "instance", "index"):
        raise ValueError(f"file_naming must be 'sop', 'instance' or 'index', got {file_naming!r}")
    if instance_numbers not in ("ascending", "descending", "shuffled"):
        raise ValueError(f"instance_numbers must be 'ascending', 'descending' or 'shuffled', got {instance_numbers!r}")
    if not patient_id:
        raise ValueError("patient_id must be a non-empty pseudonymous id")
    if abs(tilt_deg) >= 45:
        raise ValueError(f"tilt_deg must lie in (-45, 45), got {tilt_deg}")
    n = volume.n_slices
    if sop_uids is not None and len(sop_uids) != n:
        raise ValueError(f"sop_uids has {len(sop_uids)} entries for a volume of {n} slices")

    rng = _as_rng(seed)
    bits, signed, default_rescale = PIXEL_MODES[pixel_mode]
    slope, intercept = (float(v) for v in (rescale if rescale is not None else default_rescale))
    if slope <= 0:
        raise ValueError(f"rescale slope must be > 0, got {slope}")
    stored = _encode_stored(volume.hu, pixel_mode, slope, intercept)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    sops = list(sop_uids) if sop_uids is not None else [generate_uid() for _ in range(n)]

    if instance_numbers == "ascending":
        numbers = np.arange(n)
    elif instance_numbers == "descending":
        numbers = np.arange(n)[::-1]
    else:
        numbers = rng.permutation(n)
    numbers = numbers + int(first_instance_number)

    dz, dy, dx = volume.spacing
    x0, y0, z0 = volume.origin
    t = np.deg2rad(tilt_deg)
    orientation = [1.0, 0.0, 0.0, 0.0, round(float(np.cos(t)), 6), round(float(-np.sin(t)), 6)]
    windows = _HEADER_WINDOWS[volume.region]
    multi = bool(rng.random() < 0.5) if multi_valued_windows is None else bool(multi_valued_windows)
    order = rng.permutation(n) if shuffle_names else np.arange(n)
    series_number = int(rng.integers(1, 10))

    records: list[SliceRecord | None] = [None] * n
    with warnings.catch_warnings():
        # RSNA ICH style "ID_<hex>" UIDs are not valid UI values; the real dataset ships them anyway.
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        for write_pos, k in enumerate(order):
            k = int(k)
            z = round(z0 + k * dz, 4)
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = sops[k]
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sops[k]
            ds.StudyDate = "20000101"
            ds.Modality = "CT"
            ds.Manufacturer = "monai_ng phantom"
            ds.PatientID = str(patient_id)
            ds.BodyPartExamined = _BODY_PART[volume.region]
            ds.SliceThickness = f"{dz:g}"
            ds.KVP = "120"
            ds.GantryDetectorTilt = f"{tilt_deg:g}"
            ds.ConvolutionKernel = "STANDARD"
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = series_number
            ds.InstanceNumber = int(numbers[k])
            ds.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{z:.4f}"]
            ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = f"{z:.4f}"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
            ds.Rows, ds.Columns = int(volume.hu.shape[1]), int(volume.hu.shape[2])
            ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
            ds.BitsAllocated = 16
            ds.BitsStored = bits
            ds.HighBit = bits - 1
            ds.PixelRepresentation = signed
            if multi:
                ds.WindowCenter = [f"{c:g}" for c, _ in windows]
                ds.WindowWidth = [f"{w:g}" for _, w in windows]
            else:
                ds.WindowCenter = f"{windows[0][0]:g}"
                ds.WindowWidth = f"{windows[0][1]:g}"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleSlope = f"{slope:g}"
            ds.RescaleType = "HU"
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()

            if file_naming == "sop":
                name = f"{sops[k]}.dcm"
            elif file_naming == "instance":
                name = f"{int(numbers[k])}.dcm"
            else:
                name = f"IM{write_pos:04d}.dcm"
            path = folder / name
            if transfer_syntax == "implicit_le":
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
                ds.save_as(path, enforce_file_format=True, implicit_vr=True, little_endian=True)
            elif transfer_syntax in ("rle", "jpeg2000_lossless"):
                try:
                    ds.compress(
                        TRANSFER_SYNTAXES[transfer_syntax], np.ascontiguousarray(stored[k]), generate_instance_uid=False
                    )
                    ds.save_as(path, enforce_file_format=True)
                except RuntimeError:
                    # openjpeg (via pydicom) refuses images smaller than its default 6 resolution levels allow
                    # (< 64 px); GDCM encodes those.
                    if transfer_syntax != "jpeg2000_lossless":
                        raise
                    ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.save_as(path, enforce_file_format=True)
                    _gdcm_transcode(path, transfer_syntax)
            else:
                ds.save_as(path, enforce_file_format=True)
                if transfer_syntax in _GDCM_SYNTAXES:
                    _gdcm_transcode(path, transfer_syntax)
            records[k] = SliceRecord(
                path=path,
                slice_index=k,
                instance_number=int(numbers[k]),
                z_position=float(z),
                lesion=bool(volume.lesion_slices[k]),
                sop_instance_uid=sops[k],
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                patient_id=str(patient_id),
            )
    return [r for r in records if r is not None]


def nifti_affine(volume: PhantomVolume) -> np.ndarray:
    """RAS voxel-to-world affine ``[4, 4]`` for the NIfTI array ``[x, y, z] = hu.transpose(2, 1, 0)``.

    DICOM is LPS, so x and y flip sign: world_RAS = (-(x0 + i dx), -(y0 + j dy), z0 + k dz) for voxel (i, j, k).
    """
    dz, dy, dx = volume.spacing
    x0, y0, z0 = volume.origin
    affine = np.diag([-dx, -dy, dz, 1.0])
    affine[:3, 3] = [-x0, -y0, z0]
    return affine


def write_nifti(volume: PhantomVolume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as NIfTI (int16, ``[x, y, z]`` = columns, rows, slices) with an RAS affine.

    The affine matches the DICOM geometry written by ``write_dicom_series`` (no tilt): voxel (i, j, k) is column i,
    row j of slice k (inferior -> superior). ``scl_slope`` / ``scl_inter`` are left at 1 / 0 (data are HU).

    Returns:
        The path written.
    """
    import nibabel as nib

    if not isinstance(volume, PhantomVolume):
        raise TypeError(f"volume must be a PhantomVolume, got {type(volume).__name__}")
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"{path}: NIfTI path must end with .nii or .nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(volume.hu.transpose(2, 1, 0))
    img = nib.Nifti1Image(data, nifti_affine(volume))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(nifti_affine(volume), code=1)
    img.set_sform(nifti_affine(volume), code=1)
    nib.save(img, str(path))
    return path


def _hex_id(rng: np.random.Generator, n_hex: int = 9) -> str:
    return "ID_" + "".join(rng.choice(list("0123456789abcdef"), size=n_hex))


def _truth_row(records: list[SliceRecord], volume: PhantomVolume, **extra) -> dict:
    return {
        "scan_id": records[0].series_instance_uid,
        "patient_id": records[0].patient_id,
        "study_uid": records[0].study_instance_uid,
        "series_uid": records[0].series_instance_uid,
        "label": volume.label,
        "n_slices": volume.n_slices,
        "sop_uids": [r.sop_instance_uid for r in records],
        "instance_numbers": [r.instance_number for r in records],
        "slice_labels": volume.lesion_slices.astype(int).tolist(),
        "region": volume.region,
        **extra,
    }


def _check_layout_args(n: int, what: str, size: int, slices: tuple[int, int]) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    if len(slices) != 2 or not 1 <= slices[0] <= slices[1]:
        raise ValueError(f"slice range must be (min, max) with 1 <= min <= max, got {slices!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")


def write_rsna_ich(
    root: str | os.PathLike,
    n_scans: int = 4,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (8, 14),
    positive_rate: float = 0.5,
    quirk_rate: float = 0.34,
    kaggle_uids: bool = True,
) -> pd.DataFrame:
    """Write an RSNA intracranial hemorrhage 2019 style download: ``stage_2_train/ID_<hex>.dcm`` + ``stage_2_train.csv``.

    ``stage_2_train.csv`` has columns ``ID, Label`` with one row per image and subtype (``ID_<img>_<subtype>`` for
    ``ICH_SUBTYPES``); a positive slice has ``any = 1`` and one subtype (fixed per scan) = 1. As in the real data the
    Study / Series / SOP UIDs and PatientID are ``ID_<hex>`` strings (``kaggle_uids=True``), the file name stem is the
    SOPInstanceUID, some patients have two scans, and some scans use the ``unsigned12_wrapped`` pixel quirk.

    Returns:
        Ground truth, one row per scan: ``scan_id`` (= SeriesInstanceUID), ``patient_id``, ``study_uid``,
        ``series_uid``, ``label``, ``n_slices``, ``sop_uids`` and ``slice_labels`` (inferior -> superior),
        ``instance_numbers``, ``pixel_mode``, ``subtype``.
    """
    _check_layout_args(n_scans, "n_scans", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / "stage_2_train"
    image_dir.mkdir(parents=True, exist_ok=True)
    uid = (lambda: _hex_id(rng, 10)) if kaggle_uids else generate_uid
    truth, csv_rows = [], []
    patient = _hex_id(rng, 8)
    for s in range(n_scans):
        if s > 0 and rng.random() >= 0.3:  # ~30 % of scans share the previous scan's patient
            patient = _hex_id(rng, 8)
        positive = bool(rng.random() < positive_rate)
        vol = make_phantom_volume("head", int(rng.integers(slices[0], slices[1] + 1)), size, positive, rng=rng)
        mode = "unsigned12_wrapped" if rng.random() < quirk_rate else str(rng.choice(["unsigned12", "signed16"]))
        sops = [uid() for _ in range(vol.n_slices)]
        numbering = "descending" if rng.random() < 0.5 else "shuffled"
        records = write_dicom_series(
            vol,
            image_dir,
            patient_id=patient,
            study_uid=uid(),
            series_uid=uid(),
            sop_uids=sops,
            file_naming="sop",
            pixel_mode=mode,
            instance_numbers=numbering,
            seed=rng,
        )
        subtype = str(rng.choice(ICH_SUBTYPES[:5])) if positive else ""
        for rec in records:
            for sub in ICH_SUBTYPES:
                value = int(rec.lesion and (sub == "any" or sub == subtype))
                csv_rows.append((f"{rec.sop_instance_uid}_{sub}", value))
        truth.append(_truth_row(records, vol, pixel_mode=mode, subtype=subtype))
    # shuffle CSV rows by image (keeping each image's six subtype rows together, as the real file)
    blocks = [csv_rows[i : i + 6] for i in range(0, len(csv_rows), 6)]
    order = rng.permutation(len(blocks))
    rows = [row for i in order for row in blocks[i]]
    pd.DataFrame(rows, columns=list(ICH_COLUMNS)).to_csv(root / ICH_CSV, index=False)
    return pd.DataFrame(truth)


def write_rsna_pe(
    root: str | os.PathLike,
    n_scans: int = 4,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (12, 20),
    positive_rate: float = 0.5,
    indeterminate_rate: float = 0.0,
) -> pd.DataFrame:
    """Write an RSNA pulmonary embolism 2020 style download: ``train/<Study>/<Series>/<SOP>.dcm`` + ``train.csv``.

    ``train.csv`` has the columns ``PE_COLUMNS`` with one row per image; exam-level columns repeat on every row of a
    study and follow the challenge's consistency rules (negative exam => no PE columns and no RV/LV ratio; positive
    exam => exactly one RV/LV column and at least one of left / right / central). Indeterminate exams (rate
    ``indeterminate_rate``) have no PE images, ``negative_exam_for_pe = 0`` and ``indeterminate = 1``. InstanceNumber
    follows position in most series but is shuffled in some (so ordering by position is required).

    Returns:
        Ground truth per scan (see ``write_rsna_ich``) plus ``indeterminate`` and ``instance_numbering``.
    """
    _check_layout_args(n_scans, "n_scans", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth, csv_rows = [], []
    for _ in range(n_scans):
        indeterminate = bool(rng.random() < indeterminate_rate)
        positive = (not indeterminate) and bool(rng.random() < positive_rate)
        vol = make_phantom_volume("chest", int(rng.integers(slices[0], slices[1] + 1)), size, positive, rng=rng)
        study, series = generate_uid(), generate_uid()
        numbering = str(rng.choice(["ascending", "descending", "shuffled"], p=[0.45, 0.45, 0.1]))
        records = write_dicom_series(
            vol,
            root / "train" / study / series,
            patient_id=study,
            study_uid=study,
            series_uid=series,
            file_naming="sop",
            instance_numbers=numbering,
            pixel_mode=str(rng.choice(["unsigned16", "signed16"])),
            seed=rng,
        )
        exam = dict.fromkeys(PE_COLUMNS[4:], 0)
        if positive:
            exam[str(rng.choice(["rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1"]))] = 1
            for side in rng.choice(["leftsided_pe", "rightsided_pe", "central_pe"], size=int(rng.integers(1, 3))):
                exam[str(side)] = 1
            chronicity = rng.choice(["", "chronic_pe", "acute_and_chronic_pe"], p=[0.7, 0.15, 0.15])
            if chronicity:
                exam[str(chronicity)] = 1
        elif indeterminate:
            exam["indeterminate"] = 1
            exam[str(rng.choice(["qa_motion", "qa_contrast"]))] = 1
        else:
            exam["negative_exam_for_pe"] = 1
        exam["flow_artifact"] = int(rng.random() < 0.1)
        for rec in records:
            csv_rows.append(
                {
                    "StudyInstanceUID": study,
                    "SeriesInstanceUID": series,
                    "SOPInstanceUID": rec.sop_instance_uid,
                    "pe_present_on_image": int(rec.lesion),
                    **exam,
                }
            )
        truth.append(_truth_row(records, vol, indeterminate=int(indeterminate), instance_numbering=numbering))
    order = rng.permutation(len(csv_rows))
    pd.DataFrame([csv_rows[i] for i in order], columns=list(PE_COLUMNS)).to_csv(root / PE_CSV, index=False)
    return pd.DataFrame(truth)


def write_rsna_abdominal(
    root: str | os.PathLike,
    n_patients: int = 3,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (10, 18),
    positive_rate: float = 0.5,
    quirk_rate: float = 0.34,
    organ_injury_rate: float = 0.0,
) -> pd.DataFrame:
    """Write an RSNA abdominal trauma 2023 style download.

    Layout: ``train_images/<patient_id>/<series_id>/<instance_number>.dcm``, ``train.csv`` (``ABDOMINAL_TRAIN_COLUMNS``,
    one row per patient), ``image_level_labels.csv`` (one row per positive image: ``patient_id, series_id,
    instance_number, injury_name`` with ``injury_name`` in ``{Bowel, Active_Extravasation}``) and
    ``train_series_meta.csv`` (``patient_id, series_id, aortic_hu, incomplete_organ``). Patients have one or two
    series; every series of a positive patient shows the lesion. Instance numbers do not start at 1 and run
    ascending or descending along z; some series use the ``signed12_in16`` pixel quirk. With
    ``organ_injury_rate > 0`` some negative patients get a solid-organ injury (``any_injury = 1``) that has no image
    level labels, as in the real data.

    Returns:
        Ground truth per series (see ``write_rsna_ich``) with ``scan_id`` = series_id (str), ``patient_id`` (str),
        ``injury_name``, ``pixel_mode``, ``any_injury``.
    """
    _check_layout_args(n_patients, "n_patients", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth, patients, image_rows, series_rows = [], [], [], []
    used_ids: set[int] = set()

    def new_id(lo: int, hi: int) -> int:
        while True:
            value = int(rng.integers(lo, hi))
            if value not in used_ids:
                used_ids.add(value)
                return value

    for _ in range(n_patients):
        patient_id = new_id(10000, 66000)
        positive = bool(rng.random() < positive_rate)
        injury = str(rng.choice(["Bowel", "Active_Extravasation"])) if positive else ""
        row = dict.fromkeys(ABDOMINAL_TRAIN_COLUMNS, 0)
        row["patient_id"] = patient_id
        row["bowel_injury"] = int(injury == "Bowel")
        row["extravasation_injury"] = int(injury == "Active_Extravasation")
        organ_injured = (not positive) and bool(rng.random() < organ_injury_rate)
        organ_grade = {o: "healthy" for o in ("kidney", "liver", "spleen")}
        if organ_injured:
            organ_grade[str(rng.choice(["kidney", "liver", "spleen"]))] = str(rng.choice(["low", "high"]))
        for organ, grade in organ_grade.items():
            row[f"{organ}_{grade}"] = 1
        row["bowel_healthy"] = 1 - row["bowel_injury"]
        row["extravasation_healthy"] = 1 - row["extravasation_injury"]
        row["any_injury"] = int(positive or organ_injured)
        patients.append(row)
        for _s in range(int(rng.integers(1, 3))):
            series_id = new_id(100, 65000)
            vol = make_phantom_volume("abdomen", int(rng.integers(slices[0], slices[1] + 1)), size, positive, rng=rng)
            mode = "signed12_in16" if rng.random() < quirk_rate else "unsigned16"
            records = write_dicom_series(
                vol,
                root / "train_images" / str(patient_id) / str(series_id),
                patient_id=str(patient_id),
                file_naming="instance",
                instance_numbers=str(rng.choice(["ascending", "descending"])),
                first_instance_number=int(rng.integers(1, 40)),
                pixel_mode=mode,
                seed=rng,
            )
            for rec in records:
                if rec.lesion:
                    image_rows.append((patient_id, series_id, rec.instance_number, injury))
            series_rows.append((patient_id, series_id, round(float(rng.uniform(90, 400)), 2), int(rng.random() < 0.2)))
            t = _truth_row(records, vol, injury_name=injury, pixel_mode=mode, any_injury=row["any_injury"])
            t["scan_id"] = str(series_id)
            t["patient_id"] = str(patient_id)
            truth.append(t)
    pd.DataFrame(patients, columns=list(ABDOMINAL_TRAIN_COLUMNS)).to_csv(root / ABDOMINAL_TRAIN_CSV, index=False)
    pd.DataFrame(image_rows, columns=list(ABDOMINAL_IMAGE_COLUMNS)).to_csv(root / ABDOMINAL_IMAGE_CSV, index=False)
    pd.DataFrame(series_rows, columns=list(ABDOMINAL_SERIES_COLUMNS)).to_csv(root / ABDOMINAL_SERIES_CSV, index=False)
    return pd.DataFrame(truth)
