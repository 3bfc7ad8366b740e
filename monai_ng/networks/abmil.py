"""Attention-based deep MIL (ABMIL) over the slices of a CT scan.

Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018. As run in Harvey, Loevlie &
Hughes, "Normal Guidance is what Attention Needs" (2026): ungated ``D -> 128 -> tanh -> 1`` scores, softmax over the
slices, attention-pooled embedding, then ``Linear(D -> 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monai_ng.networks.bag_inputs import masked_softmax
from monai_ng.networks.mil_network import MILNetwork, MILOutput

__all__ = ["ABMIL"]


class ABMIL(MILNetwork):
    """Single-head attention MIL pooling with a linear scan classifier.

    Score per slice ``s_j = w^T h_j + c`` with ``h_j = tanh(V x_j + b_V)`` (ungated) or
    ``h_j = tanh(V x_j + b_V) * sigmoid(U x_j + b_U)`` (gated); attention ``a = softmax(s)`` over the valid slices of
    each bag; scan logit ``Linear(D -> 1)(sum_j a_j x_j)``.

    Args:
        in_features: slice feature width ``D``.
        hidden: attention hidden width (128 in the paper).
        gated: use the gated attention of Ilse et al. (Eq. 10) instead of the plain tanh attention (Eq. 9).
        dropout: dropout probability on the attention hidden activations ``h_j`` (training only).

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool -> ``MILOutput(logits [B], attention [B, N, 1])``.
    """

    def __init__(self, in_features: int = 768, hidden: int = 128, gated: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_features, hidden=hidden, gated=gated, dropout=dropout)
        self.check_int("hidden", hidden)
        self.check_dropout(dropout)
        self.hidden = hidden
        self.gated = gated
        self.attention_v = nn.Linear(in_features, hidden)
        self.attention_u = nn.Linear(in_features, hidden) if gated else None
        self.attention_w = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_features, 1)

    def attention_scores(self, x: Tensor) -> Tensor:
        """Unnormalised attention scores ``[B, N]`` for features ``x`` ``[B, N, D]`` (already cast and masked)."""
        h = torch.tanh(self.attention_v(x))
        if self.attention_u is not None:
            h = h * torch.sigmoid(self.attention_u(x))
        return self.attention_w(self.dropout(h)).squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Pool the slices of each bag (arguments and shapes: :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        attention = masked_softmax(self.attention_scores(x), mask, dim=1)  # [B, N]
        return self.attention_pool(attention, x)

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices, counting 2 per multiply-add.

        Counts the matrix products (attention MLP, pooling, classifier); element-wise work (tanh, sigmoid, softmax,
        the gate product) is ignored, being ``O(N * hidden)`` against the ``O(N * D * hidden)`` matmuls.
        """
        n, d, h = int(n_slices), self.in_features, self.hidden
        projections = 2 if self.gated else 1
        return 2 * n * d * h * projections + 2 * n * h + 2 * n * d + 2 * d
