"""Max pooling of per-slice scores: the scan logit is the largest slice score (instance-level max, e.g. Ilse et al.).

This was this project's ``max_pool`` before the paper's embedding-level max pooling
(:class:`~monai_ng.networks.max_pool.MaxPoolMIL`) became the default; it is kept as ``"max_score_pool"``.
"""

from __future__ import annotations

from torch import Tensor

from monai_ng.networks.mil_network import LinearHeadMIL, MILOutput

__all__ = ["MaxScorePoolMIL"]


class MaxScorePoolMIL(LinearHeadMIL):
    """Max pooling of per-slice scores: ``s_j = Linear(D -> 1)(x_j)``, scan logit ``max_j s_j`` over valid slices.

    The attention reported for localization is the per-slice score normalised over the bag, ``softmax_j(s_j)`` over
    the valid slices: it ranks slices exactly as the scores do, but it does not weight the pooling (the pooling is a
    hard max).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Score every slice and take the maximum over each bag's valid slices (see :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        scores = self.classifier(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # [B, N]
        logits = scores.max(dim=1).values
        attention = scores.softmax(dim=1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices (2 per multiply-add): the per-slice classifier."""
        return 2 * int(n_slices) * self.in_features
