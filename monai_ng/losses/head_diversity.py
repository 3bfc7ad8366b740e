"""Head similarity: how alike the attention heads of a multi-head MIL network are, as a penalty against collapse.

Beyond Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs" (2026). With per-head Normal Guidance on
scans holding several lesions, TransMIL's heads can collapse onto one broad bump (each head's normal sits between the
lesions). Penalising the similarity of the heads' attention keeps them apart, so that different heads can take
different foci. For bag ``i`` with heads ``h = 1..H`` and attention ``a^h`` over its valid slices::

    cos(a^g, a^h) = <a^g, a^h> / (||a^g|| ||a^h||)
    s_i           = 2 / (H (H - 1)) sum_{g < h} cos(a^g, a^h)          (0 when H = 1)

Why cosine similarity rather than Pearson correlation: attention is a probability vector over the slices, so
``||a|| >= S^{-1/2} > 0`` and the cosine is defined for every attention (Pearson's correlation is 0/0 for a uniform
head, which is where attention starts), lies in ``[0, 1]`` (1 for identical heads, 0 exactly when two heads attend to
disjoint slices), and its gradient stays bounded (Pearson's grows as 1 / std of a nearly flat head). Pearson's
correlation is the cosine of the mean-centred vectors; it remains the diagnostic reported for head collapse.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monai_ng.losses.attention_inputs import check_attention

__all__ = ["head_similarity"]


def head_similarity(attention: Tensor, mask: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Mean pairwise cosine similarity of the attention heads of each bag, over its valid slices.

    Args:
        attention: ``[B, N, H]`` (or ``[B, N]`` for one head) attention; padded slices are ignored.
        mask: ``[B, N]`` bool, True = valid slice; ``None`` = all valid.
        eps: lower clamp of a head's squared norm (only reached by an all-zero head).

    Returns:
        ``[B]`` similarity in ``[0, 1]`` for non-negative attention; zeros (still differentiable) when ``H = 1``.
    """
    attention, mask = check_attention(attention, mask)
    a = torch.where(mask.unsqueeze(-1), attention, torch.zeros((), dtype=attention.dtype, device=attention.device))
    heads = a.shape[-1]
    if heads == 1:
        return a.sum(dim=(1, 2)) * 0.0
    gram = torch.einsum("bng,bnh->bgh", a, a)  # [B, H, H] inner products over the valid slices
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(eps).sqrt()  # [B, H]
    cos = gram / (norms.unsqueeze(-1) * norms.unsqueeze(-2))
    upper = torch.triu(torch.ones(heads, heads, dtype=torch.bool, device=a.device), diagonal=1)
    return cos[:, upper].mean(dim=-1)
