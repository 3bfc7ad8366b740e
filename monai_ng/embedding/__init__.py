"""Slice embedding extraction: manifest -> CT slice stacks -> frozen ViT -> embedding store."""

from __future__ import annotations

from monai_ng.embedding.extraction import (
    ConfigMismatchError,
    ExtractionConfig,
    ExtractionResult,
    ScanRecord,
    ScanStackDataset,
    extract_embeddings,
    records_from_manifest,
    work_dir_for,
)
from monai_ng.embedding.stack_loading import CTSliceStackLoader, make_stack_loader, read_manifest_file

__all__ = [
    "CTSliceStackLoader",
    "ConfigMismatchError",
    "ExtractionConfig",
    "ExtractionResult",
    "ScanRecord",
    "ScanStackDataset",
    "extract_embeddings",
    "make_stack_loader",
    "read_manifest_file",
    "records_from_manifest",
    "work_dir_for",
]
