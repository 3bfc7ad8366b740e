"""Slice-localization metrics for MIL, as ignite metrics usable from MONAI engines and bundle configs.

Localization follows Harvey, Loevlie & Hughes (2026): for each positive scan, the AUROC of its head-averaged attention
against its slice labels, then the mean over positive scans (not a pooled AUROC). Scans with no negative (or no
positive) labelled slice have no AUROC; they are skipped and counted (``engine.state.metrics[name + "_skipped"]``).

Every metric reads the engine output of :mod:`monai_ng.engines` (``output["pred"]`` the network's ``MILOutput``,
``output["label"]`` the target dict with ``label``, ``mask``, ``slice_labels``) through :func:`mil_output_transform`.

Under torch.distributed (e.g. a bundle's ``multi_gpu_train.json``, one validation ``DistributedSampler`` shard per
rank) the bags of every rank are gathered (ignite's ``idist.all_gather`` of Python objects) before they are reduced, so
each rank reports the metric, and the scored / skipped counts, of the whole epoch -- as one process does.

The per-bag AUROC and average precision are computed by :func:`binary_auroc` / :func:`binary_average_precision`
(equal to scikit-learn's to 1e-12, tested) rather than scikit-learn, whose input validation dominates the cost when
called once per bag; ``docs/performance.md`` gives the measurement.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from monai_ng.networks.mil_network import unpack_mil_output

__all__ = [
    "mil_output_transform",
    "LocalizationAUROC",
    "LocalizationAUPRC",
    "PooledLocalizationAUROC",
    "PositiveAttentionMass",
    "per_bag_localization",
    "binary_auroc",
    "binary_average_precision",
]


def mil_output_transform(output: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Engine output -> ``{"logits" [B], "attention" [B, N] (head-averaged), "mask", "label", "slice_labels"}``."""
    logits, attention, _ = unpack_mil_output(output["pred"])
    target = output["label"]
    att = attention.mean(dim=-1) if attention.dim() == 3 else attention
    return {
        "logits": logits.detach(),
        "attention": att.detach(),
        "mask": target["mask"],
        "label": target["label"],
        "slice_labels": target.get("slice_labels"),
    }


_OUTPUT_KEYS = ("logits", "attention", "mask", "label", "slice_labels")


class _Collector(Metric):
    """Collects per-bag arrays (attention, slice labels, scan label) over an epoch; subclasses reduce them."""

    # ignite turns the transformed mapping into a tuple in this order before update()
    required_output_keys = _OUTPUT_KEYS

    def __init__(self, output_transform: Callable = mil_output_transform, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._bags: list[tuple[np.ndarray, np.ndarray, int]] = []  # (attention [S], slice labels [S], scan label)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, ...] | dict[str, torch.Tensor]) -> None:
        if isinstance(output, dict):
            output = tuple(output.get(k) for k in _OUTPUT_KEYS)
        _, attention, mask, label, slice_labels = output
        labels = label.float().cpu().numpy().reshape(-1)
        if slice_labels is not None:
            att = attention.float().cpu().numpy()
            mask = mask.cpu().numpy()
            sl = slice_labels.cpu().numpy()
            for b in range(att.shape[0]):
                valid = mask[b]
                self._bags.append((att[b][valid], sl[b][valid].astype(np.int64), int(labels[b])))

    def _all_bags(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """This epoch's bags of every rank (rank order) under torch.distributed, else this process's bags."""
        if idist.get_world_size() <= 1:
            return self._bags
        return [bag for rank_bags in idist.all_gather(self._bags) for bag in rank_bags]


def _binary_score(fn: Callable, labels: np.ndarray, scores: np.ndarray, name: str) -> float:
    if len(np.unique(labels)) < 2:
        warnings.warn(f"{name}: only one class present; returning NaN", stacklevel=3)
        return float("nan")
    return float(fn(labels, scores))


def binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of ``scores`` for binary ``labels`` (both classes present), ties counted 1/2 (Mann-Whitney U).

    Equal to scikit-learn's ``roc_auc_score`` without its input validation, which dominates the cost when called
    once per bag.
    """
    pos = labels == 1
    n_pos = int(pos.sum())
    n_neg = labels.size - n_pos
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as scikit-learn's ``average_precision_score`` defines it (steps at distinct scores)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_bag_localization(
    bags: list[tuple[np.ndarray, np.ndarray, int]], score: Callable = binary_auroc
) -> tuple[np.ndarray, int]:
    """Per positive bag, ``score(slice_labels, attention)`` over its labelled slices.

    Args:
        bags: ``(attention [S], slice_labels [S] in {1, 0, -1}, scan_label)`` per bag.
        score: a binary ranking metric ``score(labels, scores)`` (e.g. :func:`binary_auroc`).

    Returns:
        ``(values [n_scored], n_skipped)``: positive bags without both a positive and a negative labelled slice are
        skipped and counted.
    """
    values, skipped = [], 0
    for att, sl, label in bags:
        if label != 1:
            continue
        known = sl >= 0
        y = sl[known]
        if y.size == 0 or y.min() == y.max():
            skipped += 1
            continue
        values.append(float(score(y, att[known])))
    return np.asarray(values, dtype=np.float64), skipped


class _Localization(_Collector):
    _score: Callable = staticmethod(binary_auroc)

    def __init__(self, output_transform: Callable = mil_output_transform, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform, device)
        self.n_skipped = 0
        self.n_scored = 0

    def compute(self) -> float:
        values, skipped = per_bag_localization(self._all_bags(), type(self)._score)
        self.n_skipped, self.n_scored = skipped, len(values)
        if len(values) == 0:
            warnings.warn(
                f"{type(self).__name__}: no positive bag with both slice classes; returning NaN", stacklevel=2
            )
            return float("nan")
        return float(values.mean())

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics[f"{name}_skipped"] = self.n_skipped
        engine.state.metrics[f"{name}_scored"] = self.n_scored


class LocalizationAUROC(_Localization):
    """Mean over positive bags of the per-bag AUROC of head-averaged attention vs slice labels (the paper's metric)."""

    _score = staticmethod(binary_auroc)


class LocalizationAUPRC(_Localization):
    """Mean over positive bags of the per-bag average precision of head-averaged attention vs slice labels."""

    _score = staticmethod(binary_average_precision)


class PooledLocalizationAUROC(_Collector):
    """One AUROC over every labelled slice of every positive bag, scoring each slice by ``S * a_j``.

    Attention sums to 1 per bag, so it is rescaled by the bag length ``S`` (1 = uniform) to be comparable across bags.
    """

    def compute(self) -> float:
        ys, ss = [], []
        for att, sl, label in self._all_bags():
            if label != 1:
                continue
            known = sl >= 0
            ys.append(sl[known])
            ss.append(att[known] * att.shape[0])
        if not ys:
            return float("nan")
        return _binary_score(roc_auc_score, np.concatenate(ys), np.concatenate(ss), "PooledLocalizationAUROC")


class PositiveAttentionMass(_Collector):
    """Mean over positive bags (with at least one positive slice) of the attention mass on positive slices."""

    def compute(self) -> float:
        masses = [float(att[sl == 1].sum()) for att, sl, label in self._all_bags() if label == 1 and (sl == 1).any()]
        return float(np.mean(masses)) if masses else float("nan")
