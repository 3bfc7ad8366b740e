"""Mean pooling MIL: every valid slice weighs the same (the standard MIL pooling, e.g. Ilse et al., ICML 2018, 2.3)."""

from __future__ import annotations

from torch import Tensor

from monai_ng.networks.bag_inputs import masked_mean
from monai_ng.networks.mil_network import LinearHeadMIL, MILOutput

__all__ = ["MeanPoolMIL"]


class MeanPoolMIL(LinearHeadMIL):
    """Mean pooling: uniform attention ``1 / S`` over the valid slices, scan logit ``Linear(D -> 1)`` of the mean."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Average the valid slices of each bag, attention ``1 / S`` on them (see :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        weights = mask.to(x.dtype)
        attention = weights / weights.sum(dim=1, keepdim=True)
        logits = self.classifier(masked_mean(x, mask)).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices (2 per multiply-add): the mean and the classifier."""
        n, d = int(n_slices), self.in_features
        return 2 * n * d + 2 * d
