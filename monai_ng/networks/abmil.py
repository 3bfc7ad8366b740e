"""Attention-based deep MIL (ABMIL) over the slices of a CT scan.

Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018. As run in Harvey, Loevlie &
Hughes, "Normal Guidance is what Attention Needs" (2026): ungated ``D -> 128 -> tanh -> 1`` scores, softmax over the
slices, attention-pooled embedding, then ``Linear(D -> 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monai_ng.networks.bag_inputs import masked_softmax
from monai_ng.networks.fused_linear import fused_linear
from monai_ng.networks.mil_network import MILNetwork, MILOutput, use_packed_path

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

    Attributes:
        packed: (default ``"auto"``: True on the CPU, False on other devices, see
            :func:`~monai_ng.networks.mil_network.use_packed_path`) True: run the per-slice layers on the packed valid
            slices ``[T, D]`` only (no work on padding) and pool with one attention-weighted segment sum; set
            False to run them on the padded ``[B, N, D]`` batch (the earlier path, kept for comparison and tests). Both
            give the same outputs (to float rounding) and draw the same dropout masks. An execution option, not an
            architecture argument, so it is an attribute rather than a constructor argument (not in
            :attr:`build_arguments` or checkpoints). Under ``torch.jit.trace`` (bundle ``ckpt_export``) the padded path
            is always used, as it traces to a graph valid for any scan length.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool -> ``MILOutput(logits [B], attention [B, N, 1])``.
    """

    packed: bool | str = "auto"  # see monai_ng.networks.mil_network.use_packed_path

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

    def attention_hidden(self, x: Tensor) -> Tensor:
        """Attention hidden activations ``h`` ``[..., hidden]`` (before dropout) for features ``x`` ``[..., D]``."""
        h = fused_linear(x, self.attention_v.weight, self.attention_v.bias, "tanh")
        if self.attention_u is not None:
            h = h * torch.sigmoid(fused_linear(x, self.attention_u.weight, self.attention_u.bias))
        return h

    def attention_scores(self, x: Tensor) -> Tensor:
        """Unnormalised attention scores ``[B, N]`` for features ``x`` ``[B, N, D]`` (already cast and masked)."""
        return self.attention_w(self.dropout(self.attention_hidden(x))).squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Pool the slices of each bag (arguments and shapes: :meth:`MILNetwork.forward`)."""
        if not use_packed_path(self.packed, x):
            # The padded path is shape-generic when traced (TorchScript export); the packed one loops over bags.
            x, mask = self.prepare(x, mask)
            attention = masked_softmax(self.attention_scores(x), mask, dim=1)  # [B, N]
            return self.attention_pool(attention, x)
        bags = self.prepare_packed(x, mask)  # [T, D]; x may be padded [B, N, D] or packed [T, D]
        h = self.attention_hidden(bags.x)  # [T, hidden]
        if self.training and self.dropout.p > 0:
            # Draw the mask on the padded [B, N, hidden] shape, as the padded path does, so both consume the same
            # random numbers and drop the same units of the valid slices.
            keep = self.dropout(h.new_ones(bags.shape[0] * bags.shape[1], h.shape[-1]))
            h = h * keep.index_select(0, bags.index)
        scores = self.attention_w(h).squeeze(-1)  # [T]
        attention = bags.scatter(scores, float("-inf")).softmax(dim=1)  # [B, N], exactly 0 on padding
        pooled = bags.weighted_sum(bags.gather(attention))  # [B, D]
        logits = self.classifier(pooled).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices, counting 2 per multiply-add.

        Counts the matrix products (attention MLP, pooling, classifier); element-wise work (tanh, sigmoid, softmax,
        the gate product) is ignored, being ``O(N * hidden)`` against the ``O(N * D * hidden)`` matmuls.
        """
        n, d, h = int(n_slices), self.in_features, self.hidden
        projections = 2 if self.gated else 1
        return 2 * n * d * h * projections + 2 * n * h + 2 * n * d + 2 * d
