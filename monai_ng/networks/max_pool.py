"""Max pooling MIL at the embedding level, the paper's max-pooling baseline: element-wise max over slices, then Linear.

Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs" (2026), like their public code (``MaxPooling``):
``z_d = max_j x_jd`` over the valid slices, scan logit ``Linear(D -> 1)(z)``. Its localization score counts, per
slice, how many features take their maximum at that slice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monai_ng.networks.mil_network import LinearHeadMIL, MILOutput

__all__ = ["MaxPoolMIL", "max_pool_localization"]


def max_pool_localization(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Element-wise max over the valid slices and the share of features whose maximum each slice holds.

    Args:
        x: ``[B, N, D]`` slice features.
        mask: ``[B, N]`` bool, True = valid slice; every bag needs one.

    Returns:
        ``(pooled [B, D], share [B, N])``: ``pooled_d = max_j x_jd`` over valid ``j``; ``share_j = #{d : x_jd =
        pooled_d} / sum_k #{d : x_kd = pooled_d}`` (a slice tied at a feature's maximum counts for it too), exactly 0
        on padding, summing to 1 over each bag. ``share`` is a count: it carries no gradient.
    """
    masked = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    pooled = masked.max(dim=1).values  # [B, D]
    with torch.no_grad():
        counts = (masked == pooled.unsqueeze(1)).sum(dim=-1).to(x.dtype)  # [B, N]; padding is -inf, never a max
        share = counts / counts.sum(dim=1, keepdim=True)
    return pooled, share


class MaxPoolMIL(LinearHeadMIL):
    """Embedding-level max pooling: scan logit ``Linear(D -> 1)(max_j x_j)``, max element-wise over valid slices.

    The attention reported for localization is :func:`max_pool_localization`'s share: per slice, the number of
    features that take their maximum at that slice, normalised over the bag's slices. A slice that holds no feature's
    maximum gets 0. The per-slice-score variant (``max_j Linear(x_j)``) is
    :class:`~monai_ng.networks.max_score_pool.MaxScorePoolMIL` (``"max_score_pool"``).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Max-pool the valid slices of each bag feature by feature (see :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        pooled, share = max_pool_localization(x, mask)
        logits = self.classifier(pooled).squeeze(-1)
        return MILOutput(logits=logits, attention=share.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag (2 per multiply-add): the classifier (the max is comparisons, not counted)."""
        return 2 * self.in_features
