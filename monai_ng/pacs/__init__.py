"""Exchange with a hospital PACS: pull CT studies and push result documents back over DICOMweb."""

from __future__ import annotations

from .dicomweb import (
    DEFAULT_TIMEOUT,
    DicomWebError,
    NoCTSeriesError,
    PacsUnreachableError,
    StoreRejectedError,
    StudyNotFoundError,
    connect,
    fetch_ct_series,
    store_instances,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DicomWebError",
    "NoCTSeriesError",
    "PacsUnreachableError",
    "StoreRejectedError",
    "StudyNotFoundError",
    "connect",
    "fetch_ct_series",
    "store_instances",
]
