"""Phantom CT: head, chest and abdomen-like volumes written as DICOM series, NIfTI and RSNA challenge layouts.

The phantoms stand in for the three public datasets the Normal Guidance paper evaluates on (E. Harvey,
D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs", 2026): RSNA intracranial hemorrhage 2019
(head), RSNA pulmonary embolism 2020 (chest) and RSNA abdominal trauma 2023 (abdomen).

* :mod:`~monai_ng.data.phantom.volume`: :class:`PhantomVolume` and :func:`make_phantom_volume` (conventions there).
* :mod:`~monai_ng.data.phantom.dicom_writer`: :func:`write_dicom_series` (transfer syntaxes, pixel modes).
* :mod:`~monai_ng.data.phantom.nifti_writer`: :func:`write_nifti`, :func:`nifti_affine`.
* :mod:`~monai_ng.data.phantom.rsna_layouts`: :func:`write_rsna_ich`, :func:`write_rsna_pe`,
  :func:`write_rsna_abdominal`.
* :mod:`~monai_ng.data.phantom.lesion_benchmark`: :func:`write_lesion_benchmark` (head scans with one or 2-3 lesions
  of varied size, contrast and position, for ``monai-ng ingest --dataset folder``).
"""

from __future__ import annotations

from monai_ng.data.phantom.dicom_writer import PIXEL_MODES, TRANSFER_SYNTAXES, SliceRecord, write_dicom_series
from monai_ng.data.phantom.lesion_benchmark import (
    HEAD_SLICES,
    MULTI_LESION,
    SINGLE_LESION,
    LesionRanges,
    insert_lesions,
    place_lesion_blocks,
    write_lesion_benchmark,
)
from monai_ng.data.phantom.nifti_writer import nifti_affine, write_nifti
from monai_ng.data.phantom.rsna_layouts import write_rsna_abdominal, write_rsna_ich, write_rsna_pe
from monai_ng.data.phantom.volume import HU_MAX, HU_MIN, REGIONS, PhantomVolume, head_skull_ellipse, make_phantom_volume

__all__ = [
    "HEAD_SLICES",
    "HU_MAX",
    "HU_MIN",
    "LesionRanges",
    "MULTI_LESION",
    "PIXEL_MODES",
    "REGIONS",
    "TRANSFER_SYNTAXES",
    "PhantomVolume",
    "SINGLE_LESION",
    "SliceRecord",
    "head_skull_ellipse",
    "insert_lesions",
    "make_phantom_volume",
    "nifti_affine",
    "place_lesion_blocks",
    "write_dicom_series",
    "write_lesion_benchmark",
    "write_nifti",
    "write_rsna_abdominal",
    "write_rsna_ich",
    "write_rsna_pe",
]
