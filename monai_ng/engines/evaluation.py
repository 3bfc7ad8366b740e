"""Evaluation of MIL networks with MONAI's ``SupervisedEvaluator``: scan and localization metrics, per-slice scores."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from monai.engines import SupervisedEvaluator
from torch import nn
from torch.utils.data import DataLoader

from monai_ng.engines.bag_batch import prepare_bag_batch
from monai_ng.engines.handlers import SliceScoreCollector, numeric_metrics
from monai_ng.metrics import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    ScanAUPRC,
    ScanAUROC,
)

__all__ = ["evaluation_metrics", "build_evaluator", "evaluate_mil"]


def evaluation_metrics(with_localization: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(key metric, additional metrics)`` for a MONAI evaluator: scan AUROC as key, the rest additional."""
    key = {"scan_auroc": ScanAUROC()}
    extra: dict[str, Any] = {"scan_auprc": ScanAUPRC()}
    if with_localization:
        extra.update(
            loc_auroc=LocalizationAUROC(),
            loc_auprc=LocalizationAUPRC(),
            pooled_loc_auroc=PooledLocalizationAUROC(),
            positive_attention_mass=PositiveAttentionMass(),
        )
    return key, extra


def build_evaluator(
    network: nn.Module,
    loader: DataLoader,
    device: str | torch.device = "cpu",
    with_localization: bool = True,
    handlers: list | None = None,
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator`` over bag batches with scan and localization metrics."""
    key, extra = evaluation_metrics(with_localization)
    device = torch.device(device)
    return SupervisedEvaluator(
        device=device,
        val_data_loader=loader,
        network=network,
        prepare_batch=prepare_bag_batch,
        non_blocking=device.type == "cuda",  # asynchronous when the loader pins its batches; synchronous otherwise
        key_val_metric=key,
        additional_metrics=extra,
        val_handlers=handlers,
        decollate=False,
    )


def evaluate_mil(
    network: nn.Module, loader: DataLoader, device: str | torch.device = "cpu"
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Evaluate a MIL network with a MONAI evaluator.

    Returns:
        ``(metrics, scan_scores, slice_scores)``: the metric values (scan and localization, with skipped counts), one
        row per scan and one row per valid slice (see :class:`SliceScoreCollector`).
    """
    collector = SliceScoreCollector()
    evaluator = build_evaluator(network.to(torch.device(device)), loader, device, handlers=[collector])
    evaluator.run()
    metrics = numeric_metrics(evaluator.state.metrics)
    return metrics, collector.scan_frame(), collector.slice_frame()
