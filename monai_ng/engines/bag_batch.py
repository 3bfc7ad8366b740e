"""MONAI ``prepare_batch`` for collated MIL bags (padded or packed): the network gets the mask, the loss a target dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from monai_ng.data.bag_dataset import BagKeys

__all__ = ["prepare_bag_batch"]


def prepare_bag_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, Any], tuple, dict[str, torch.Tensor]]:
    """MONAI ``prepare_batch`` for collated bags (:func:`monai_ng.data.collate_bags` or
    :func:`monai_ng.data.collate_packed_bags`); the embeddings are moved as they are, in either layout.

    Returns:
        ``(embeddings, target, (), {"mask": mask [B, N]})`` with ``embeddings`` ``[B, N, D]`` (padded) or ``[T, D]``
        (packed: the valid slices of ``mask``, row-major), which every network accepts; ``target`` holds ``label`` ``[B]``,
        ``mask``, ``slice_labels`` ``[B, N]``, ``scan_id`` (list) and ``index`` ``[B]``; MONAI's iteration then calls
        ``network(embeddings, mask=mask)`` and ``loss(pred, target)``.
    """
    if not isinstance(batchdata, Mapping) or BagKeys.EMBEDDINGS not in batchdata or BagKeys.MASK not in batchdata:
        raise TypeError(
            "prepare_bag_batch expects a dict from collate_bags or collate_packed_bags with 'embeddings' and 'mask'"
        )

    def _to(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, non_blocking=non_blocking, **kwargs)

    mask = _to(batchdata[BagKeys.MASK])
    target = {
        BagKeys.LABEL: _to(batchdata[BagKeys.LABEL]),
        BagKeys.MASK: mask,
        BagKeys.SLICE_LABELS: _to(batchdata[BagKeys.SLICE_LABELS]),
        BagKeys.SCAN_ID: batchdata.get(BagKeys.SCAN_ID),
        BagKeys.INDEX: batchdata.get(BagKeys.INDEX),
    }
    return _to(batchdata[BagKeys.EMBEDDINGS]), target, (), {"mask": mask}
