"""CT ingest as MONAI transforms: DICOM/NIfTI series loading, HU, windows and slice stacks.

Series loading and header scanning: ``dicom_headers`` / ``series_loader``; windows / HU z-score: ``windowing``;
slice stacks for the 2D encoder: ``slice_stack``.
"""

from __future__ import annotations

from monai_ng.transforms.dicom_headers import (
    HEADER_TAGS,
    HeaderScan,
    SeriesGeometry,
    SliceHeader,
    analyze_series_geometry,
    group_by_series,
    header_from_dataset,
    lenient_value_reading,
    list_dicom_files,
    order_series,
    read_slice_header,
    scan_headers,
)
from monai_ng.transforms.series_loader import (
    LoadCTSeries,
    LoadCTSeriesd,
    decode_slice_hu,
    dicom_affine,
    fix_rsna_ich_wrap,
    sign_extend,
)
from monai_ng.transforms.slice_stack import (
    PER_SLICE_META_KEYS,
    CTSliceStack,
    CTSliceStackd,
    map_slice_labels,
    pad_to_square_min,
    resample_slices,
    slice_resampling_weights,
)
from monai_ng.transforms.windowing import (
    NAMED_WINDOWS,
    WINDOW_PRESETS,
    CTWindows,
    CTWindowsd,
    HUZScore,
    HUZScored,
    apply_windows,
    resolve_windows,
    zscore_hu,
)

__all__ = [
    "CTSliceStack",
    "CTSliceStackd",
    "CTWindows",
    "CTWindowsd",
    "HEADER_TAGS",
    "HUZScore",
    "HUZScored",
    "HeaderScan",
    "LoadCTSeries",
    "LoadCTSeriesd",
    "NAMED_WINDOWS",
    "PER_SLICE_META_KEYS",
    "SeriesGeometry",
    "SliceHeader",
    "WINDOW_PRESETS",
    "analyze_series_geometry",
    "apply_windows",
    "decode_slice_hu",
    "dicom_affine",
    "fix_rsna_ich_wrap",
    "group_by_series",
    "header_from_dataset",
    "lenient_value_reading",
    "list_dicom_files",
    "map_slice_labels",
    "order_series",
    "pad_to_square_min",
    "read_slice_header",
    "resample_slices",
    "resolve_windows",
    "scan_headers",
    "sign_extend",
    "slice_resampling_weights",
    "zscore_hu",
]
