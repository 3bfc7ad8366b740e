"""Slice embedding extraction: manifest -> CT slice stacks -> frozen ViT -> embedding store."""

from __future__ import annotations

from monai_ng.embedding.encoder import FrozenSliceEncoder
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
from monai_ng.embedding.stack_loading import CTSliceStackLoader, make_stack_loader
from monai_ng.embedding.weights import torchvision_vit_to_timm

__all__ = [
    "CTSliceStackLoader",
    "ConfigMismatchError",
    "ExtractionConfig",
    "ExtractionResult",
    "FrozenSliceEncoder",
    "ScanRecord",
    "ScanStackDataset",
    "extract_embeddings",
    "make_stack_loader",
    "records_from_manifest",
    "torchvision_vit_to_timm",
    "work_dir_for",
]
