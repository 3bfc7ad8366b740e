"""Mean pooling MIL: every valid slice weighs the same (the standard MIL pooling, e.g. Ilse et al., ICML 2018, 2.3)."""

from __future__ import annotations

from torch import Tensor, nn

from monai_ng.networks.bag_inputs import masked_mean
from monai_ng.networks.mil_network import MILNetwork, MILOutput

__all__ = ["MeanPoolMIL"]


class MeanPoolMIL(MILNetwork):
    """Mean pooling: uniform attention ``1 / S`` over the valid slices, scan logit ``Linear(D -> 1)`` of the mean.

    Args:
        in_features: slice feature width ``D``.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool -> ``MILOutput(logits [B], attention [B, N, 1])``.
    """

    def __init__(self, in_features: int = 768) -> None:
        super().__init__(in_features)
        self.classifier = nn.Linear(in_features, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Average the valid slices of each bag.

        Args:
            x: ``[B, N, D]`` slice features (cast to the parameter dtype).
            mask: ``[B, N]`` bool, True = valid slice; ``None`` = all valid.

        Returns:
            ``MILOutput(logits [B], attention [B, N, 1])`` with attention ``1 / S`` on valid slices.
        """
        x, mask = self.prepare(x, mask)
        weights = mask.to(x.dtype)
        attention = weights / weights.sum(dim=1, keepdim=True)
        logits = self.classifier(masked_mean(x, mask)).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices (2 per multiply-add): the mean and the classifier."""
        n, d = int(n_slices), self.in_features
        return 2 * n * d + 2 * d
