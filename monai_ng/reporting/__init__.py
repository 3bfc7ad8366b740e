"""Outputs of inference for people and for the PACS: per-scan JSON, one CSV, the attention figure, DICOM documents.

Everything is written from one validated :class:`ScanResult` per scan. Patient identifiers appear only in the DICOM
documents' Patient/Study modules, copied from the source study as the standard requires.
"""

from __future__ import annotations

from monai_ng.reporting.atomic_file import write_atomic
from monai_ng.reporting.attention_figure import encode_png, render_attention_figure, write_attention_png
from monai_ng.reporting.dicom_documents import (
    build_attention_secondary_capture,
    build_key_object_selection,
    write_dicom_documents,
)
from monai_ng.reporting.result_files import read_results_csv, read_scan_json, write_results_csv, write_scan_json
from monai_ng.reporting.scan_result import ScanResult, SliceScore, check_scan_id, fit_normal_reference

__all__ = [
    "ScanResult",
    "SliceScore",
    "check_scan_id",
    "fit_normal_reference",
    "write_atomic",
    "write_scan_json",
    "read_scan_json",
    "write_results_csv",
    "read_results_csv",
    "render_attention_figure",
    "encode_png",
    "write_attention_png",
    "build_key_object_selection",
    "build_attention_secondary_capture",
    "write_dicom_documents",
]
