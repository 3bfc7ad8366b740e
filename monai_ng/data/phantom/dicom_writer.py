"""Write a phantom volume as a DICOM CT series (uncompressed or lossless-compressed, several pixel modes).

Compressed transfer syntaxes: RLE Lossless and JPEG 2000 Lossless are encoded by pydicom (the latter through the
``pylibjpeg-openjpeg`` plugin, or by GDCM for images under 64 pixels); JPEG Lossless (process 14, SV1) and JPEG-LS
Lossless are encoded by transcoding through ``python-gdcm``. Lossy syntaxes are not offered (the phantom must
round-trip exactly).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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

from monai_ng.data.phantom.volume import PhantomVolume, _as_rng

__all__ = ["PIXEL_MODES", "TRANSFER_SYNTAXES", "SliceRecord", "write_dicom_series"]

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
