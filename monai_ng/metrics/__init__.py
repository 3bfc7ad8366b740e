"""Metrics as ignite metrics: scan AUROC/AUPRC (ignite ``ROC_AUC`` / ``AveragePrecision``) and slice localization
(per-bag mean and pooled)."""

from __future__ import annotations

from monai_ng.metrics.localization import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    binary_auroc,
    binary_average_precision,
    mil_output_transform,
    per_bag_localization,
)
from monai_ng.metrics.scan_metrics import ScanAUPRC, ScanAUROC, scan_output_transform

__all__ = [
    "LocalizationAUPRC",
    "LocalizationAUROC",
    "PooledLocalizationAUROC",
    "PositiveAttentionMass",
    "ScanAUPRC",
    "ScanAUROC",
    "binary_auroc",
    "binary_average_precision",
    "mil_output_transform",
    "per_bag_localization",
    "scan_output_transform",
]
