"""Small synthetic CT DICOM files for the tests (imported by the test modules; pytest puts ``tests/`` on path).

Every slice is a single-frame CT image in Explicit VR Little Endian with pseudonymous ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

__all__ = ["ct_slice", "save_slice"]


def ct_slice(
    pixels: np.ndarray,
    *,
    sop: str,
    series: str,
    ipp: Sequence[float],
    study: str = "1.2.3",
    patient_id: str = "anon",
    instance: int = 1,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.5),
    intercept: float = 0,
    sop_class: str = CTImageStorage,
    **tags: object,
) -> Dataset:
    """One CT slice dataset holding ``pixels [rows, cols]`` (16-bit, slope 1, signed when ``pixels`` is signed).

    Args:
        pixels: stored values; their bytes become PixelData as they are.
        sop: SOPInstanceUID (also the media storage UID).
        series: SeriesInstanceUID.
        ipp: ImagePositionPatient ``(x, y, z)`` in mm.
        study: StudyInstanceUID.
        patient_id: pseudonymous PatientID.
        instance: InstanceNumber.
        iop: ImageOrientationPatient (row then column direction cosines).
        spacing: PixelSpacing ``(row, column)`` in mm.
        intercept: RescaleIntercept.
        sop_class: SOPClassUID (also the media storage SOP class); set ``Modality`` in ``tags`` to match.
        **tags: set last, overriding the above; a value of ``None`` deletes the tag.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.SeriesInstanceUID = series
    ds.StudyInstanceUID = study
    ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in tags.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def save_slice(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (with preamble and file meta) at ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
