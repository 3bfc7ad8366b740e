"""Metrics: scan AUROC/AUPRC and slice localization (per-bag mean and pooled) as ignite metrics."""

from __future__ import annotations

from monai_ng.metrics.mil_metrics import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    ScanAUPRC,
    ScanAUROC,
    mil_output_transform,
    per_bag_localization,
)

__all__ = [
    "LocalizationAUPRC",
    "LocalizationAUROC",
    "PooledLocalizationAUROC",
    "PositiveAttentionMass",
    "ScanAUPRC",
    "ScanAUROC",
    "mil_output_transform",
    "per_bag_localization",
]
