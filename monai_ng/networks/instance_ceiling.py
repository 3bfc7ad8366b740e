"""Instance-level ceiling: a per-slice classifier trained with slice labels, used as an upper reference.

Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs" (2026): a depthwise ``Conv1d`` over the slice
axis (kernel 12 for head CT, 35 for chest CT, 29 for abdomen CT: :data:`CEILING_KERNELS`) followed by a per-slice
``Linear(D -> 1)``, trained on slice labels only (the public code's ceiling objective; see
:class:`monai_ng.losses.MILObjective`'s ``scan_weight``).
It produces ``instance_logits`` (trained against slice labels by the engine) and, for interface parity with the
attention models, an attention map and a scan logit derived from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_ng.networks.bag_inputs import masked_softmax
from monai_ng.networks.mil_network import MILNetwork, MILOutput

__all__ = ["CEILING_KERNELS", "InstanceCeiling"]

#: the paper's depthwise kernel length per dataset (RSNA ICH head, RSNA PE chest, RSNA 2023 abdominal trauma CT)
CEILING_KERNELS: dict[str, int] = {"head": 12, "chest": 35, "abdomen": 29}

_SCAN_POOLINGS = ("max", "logsumexp")


class InstanceCeiling(MILNetwork):
    """Depthwise slice convolution + per-slice linear classifier.

    ``z = DepthwiseConv1d_k(X)`` along the slices with "same" zero padding, ``instance_logits_j = Linear(D -> 1)(z_j)``.
    For an even ``kernel_size`` the ``k - 1`` padding is split as PyTorch's ``padding="same"`` does:
    ``(k - 1) // 2`` slices before and ``k // 2`` after (kernel 12: 5 before, 6 after), so output ``j`` sees input
    slices ``j - 5 .. j + 6``. Padded slices are zeroed before the convolution, so a bag padded at its end sees exactly
    the zeros of the convolution's own padding when alone.

    Attention ``[B, N, 1]`` = ``softmax_j(instance_logits_j)`` over the valid slices (ranks slices like the
    instance logits). Scan logit: ``scan_pooling="max"`` (default) takes the largest valid instance logit, i.e. the
    scan probability is the largest slice probability; ``"logsumexp"`` is a smooth max (``>= max``, and biased up by
    up to ``log S`` for long scans).

    Args:
        in_features: slice feature width ``D``.
        kernel_size: depthwise kernel length over slices (:data:`CEILING_KERNELS`: 12 head, 35 chest, 29 abdomen CT).
        scan_pooling: ``"max"`` or ``"logsumexp"``.
        dropout: dropout on the convolved features before the linear classifier.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool (valid slices first) -> ``MILOutput(logits [B], attention
        [B, N, 1], instance_logits [B, N])`` with ``instance_logits`` ``-inf``-free and exactly 0 on padding.
    """

    uses_slice_order = True

    def __init__(
        self, in_features: int = 768, kernel_size: int = 12, scan_pooling: str = "max", dropout: float = 0.0
    ) -> None:
        super().__init__(in_features, kernel_size=kernel_size, scan_pooling=scan_pooling, dropout=dropout)
        self.check_int("kernel_size", kernel_size)
        if scan_pooling not in _SCAN_POOLINGS:
            raise ValueError(f"InstanceCeiling: scan_pooling must be one of {_SCAN_POOLINGS}, got {scan_pooling!r}.")
        self.check_dropout(dropout)
        self.kernel_size = kernel_size
        self.scan_pooling = scan_pooling
        self.pad_before = (kernel_size - 1) // 2
        self.pad_after = kernel_size - 1 - self.pad_before
        self.conv = nn.Conv1d(in_features, in_features, kernel_size, groups=in_features)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_features, 1)

    def slice_features(self, x: Tensor, mask: Tensor) -> Tensor:
        """Depthwise convolution over slices of zero-padded ``x`` ``[B, N, D]``; returns ``[B, N, D]``."""
        z = x.masked_fill(~mask.unsqueeze(-1), 0.0).transpose(1, 2)  # [B, D, N]
        z = F.conv1d(F.pad(z, (self.pad_before, self.pad_after)), self.conv.weight, self.conv.bias, groups=z.shape[1])
        return z.transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Score every slice; the output also holds ``instance_logits [B, N]`` (see :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        instance_logits = self.classifier(self.dropout(self.slice_features(x, mask))).squeeze(-1)
        instance_logits = instance_logits.masked_fill(~mask, 0.0)
        masked_logits = instance_logits.masked_fill(~mask, float("-inf"))
        if self.scan_pooling == "max":
            logits = masked_logits.max(dim=1).values
        else:
            logits = torch.logsumexp(masked_logits, dim=1)
        attention = masked_softmax(instance_logits, mask, dim=1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1), instance_logits=instance_logits)

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices (2 per multiply-add).

        Counts the depthwise convolution (``kernel_size`` taps per slice and channel) and the per-slice classifier.
        """
        n, d = int(n_slices), self.in_features
        return 2 * n * d * self.kernel_size + 2 * n * d
