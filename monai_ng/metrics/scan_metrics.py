"""Scan-level AUROC and AUPRC of MIL networks: ignite's ``ROC_AUC`` / ``AveragePrecision`` on the scan logits.

Both read the engine output of :mod:`monai_ng.engines` (``output["pred"]`` the network's ``MILOutput``,
``output["label"]["label"]`` the scan labels) through :func:`scan_output_transform`, accumulate the epoch as ignite's
``EpochMetric`` does and score it with scikit-learn (``roc_auc_score`` / ``average_precision_score``). An epoch with a
single scan class has no AUROC/AUPRC: it gives NaN with a warning instead of an exception.

Under torch.distributed (e.g. a bundle's ``multi_gpu_train.json``) every rank's scores are gathered with MONAI's
``evenly_divisible_all_gather`` before scoring, so ranks holding different numbers of scans (a validation
``DistributedSampler`` with ``even_divisible=False``) give the metric of the whole epoch, the same on every rank and the
same as one process. (ignite's own ``EpochMetric.compute`` gathers with ``idist.all_gather``, which needs equal sizes.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import ROC_AUC, AveragePrecision
from monai.utils import evenly_divisible_all_gather

from monai_ng.networks.mil_network import unpack_mil_output

__all__ = ["scan_output_transform", "ScanAUROC", "ScanAUPRC"]


def scan_output_transform(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Engine output -> ``(logits [B] float32, scan labels [B] float32)``."""
    logits, _, _ = unpack_mil_output(output["pred"])
    return logits.detach().float().reshape(-1), output["label"]["label"].detach().float().reshape(-1)


class _SingleClassNaN:
    """What both scan metrics add to their ignite ``EpochMetric``: the scan output transform, and NaN with a warning
    (instead of scikit-learn's exception) when the epoch's scan labels hold one class only."""

    _targets: list[torch.Tensor]

    def __init__(self, output_transform: Callable = scan_output_transform, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)  # type: ignore[call-arg]

    _predictions: list[torch.Tensor]
    compute_fn: Callable

    def compute(self) -> float:
        preds = torch.cat(self._predictions) if self._predictions else torch.empty(0)
        targets = torch.cat(self._targets) if self._targets else torch.empty(0)
        if idist.get_world_size() > 1:  # every rank takes part, also one that saw no scan
            preds = evenly_divisible_all_gather(preds.float(), concat=True)
            targets = evenly_divisible_all_gather(targets.float(), concat=True)
        if targets.numel() == 0:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed.")
        if torch.unique(targets).numel() < 2:
            warnings.warn(f"{type(self).__name__}: only one class present; returning NaN", stacklevel=2)
            return float("nan")
        return float(self.compute_fn(preds, targets))


class ScanAUROC(_SingleClassNaN, ROC_AUC):
    """AUROC of the scan logits against the scan labels over the epoch (NaN with a warning if one class only).

    Args:
        output_transform: engine output -> ``(logits [B], labels [B])``.
        device: where the epoch's scores are stored.
    """


class ScanAUPRC(_SingleClassNaN, AveragePrecision):
    """Average precision of the scan logits against the scan labels over the epoch (NaN if one class only).

    Args:
        output_transform: engine output -> ``(logits [B], labels [B])``.
        device: where the epoch's scores are stored.
    """
