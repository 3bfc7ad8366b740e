"""Reading CT from disk: DICOM headers, header scans, series geometry, HU decoding and the MONAI reader.

``dicom_header`` (one slice's header), ``header_scan`` (many files, grouped by series), ``series_geometry``
(ordering along the slice normal, geometry report, affine), ``pixel_decoding`` (stored pixels -> HU with the RSNA
quirk fixes) and ``ct_series_reader`` (:class:`CTSeriesReader`, a ``monai.data.ImageReader`` for DICOM series and
NIfTI on one voxel grid). The one-pass reader for plain uncompressed files is private (``_native_dicom``).
"""

from __future__ import annotations

from monai_ng.io.ct_series_reader import CTSeriesReader
from monai_ng.io.dicom_header import (
    HEADER_TAGS,
    SliceHeader,
    header_from_dataset,
    lenient_value_reading,
    read_dataset,
    read_slice_header,
    slice_normal,
)
from monai_ng.io.header_scan import HeaderScan, group_by_series, list_dicom_files, scan_headers
from monai_ng.io.pixel_decoding import decode_slice_hu, fix_rsna_ich_wrap, sign_extend, stored_pixels
from monai_ng.io.series_geometry import (
    LPS_TO_RAS,
    SeriesGeometry,
    analyze_series_geometry,
    dicom_affine,
    order_series,
)

__all__ = [
    "HEADER_TAGS",
    "LPS_TO_RAS",
    "CTSeriesReader",
    "HeaderScan",
    "SeriesGeometry",
    "SliceHeader",
    "analyze_series_geometry",
    "decode_slice_hu",
    "dicom_affine",
    "fix_rsna_ich_wrap",
    "group_by_series",
    "header_from_dataset",
    "lenient_value_reading",
    "list_dicom_files",
    "order_series",
    "read_dataset",
    "read_slice_header",
    "scan_headers",
    "sign_extend",
    "slice_normal",
    "stored_pixels",
]
