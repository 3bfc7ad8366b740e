"""Normal Guidance: pull a bag's attention over slice index toward a discrete normal with its own mean and variance.

Reference: E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs" (2026).
For bag ``i`` with ``S`` valid slices and attention ``a_j`` (per head), ``j = 1..S``::

    mu      = sum_j j a_j / sum_j a_j
    sigma^2 = sum_j j^2 a_j / sum_j a_j - mu^2          (clamped >= eps)
    r_j     = N(j; mu, sigma) / sum_k N(k; mu, sigma)  (no gradient)
    D(r, a) = sum_j (r_j - a_j)^2  |  sum_j r_j log(r_j / a_j)  |  sum_j a_j log(a_j / r_j)

averaged over heads, then reduced over the guided bags (``reduction``).
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch import Tensor
from torch.nn.modules.loss import _Loss

__all__ = ["NormalGuidanceLoss", "normal_reference", "DIVERGENCES", "GUIDE_MODES"]

DIVERGENCES = ("forward_kl", "reverse_kl", "squared_error")
GUIDE_MODES = ("all", "positive", "positive_uniform_negative")


def _check_inputs(attention: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if not isinstance(attention, Tensor):
        raise TypeError(f"attention must be a torch.Tensor, got {type(attention).__name__}")
    if attention.dim() == 2:
        attention = attention.unsqueeze(-1)
    if attention.dim() != 3:
        raise ValueError(f"attention must be [B, N] or [B, N, H], got shape {tuple(attention.shape)}")
    b, n, _ = attention.shape
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=attention.device)
    if mask.shape != (b, n):
        raise ValueError(f"mask must be [B, N] = {(b, n)} to match attention, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid slice), got {mask.dtype}")
    empty = ~mask.any(dim=1)
    if empty.any():
        raise ValueError(f"bag {int(torch.nonzero(empty)[0])} of the batch has no valid slice")
    return attention, mask


def normal_reference(attention: Tensor, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """The discrete normal matched to each bag's and head's attention (computed without gradient).

    Args:
        attention: ``[B, N]`` or ``[B, N, H]`` non-negative attention; padded slices are ignored.
        mask: ``[B, N]`` bool, True = valid slice. None = all valid.
        eps: lower clamp of the variance and of the attention mass.

    Returns:
        ``[B, N, H]`` reference ``r``: zero on padded slices, summing to 1 over each bag's valid slices.

    Note:
        The variance is computed as ``sum (j - mu)^2 a / sum a``, algebraically equal to the paper's
        ``sum j^2 a / sum a - mu^2`` but free of cancellation for long bags.
    """
    attention, mask = _check_inputs(attention, mask)
    with torch.no_grad():
        a = attention.detach().to(torch.promote_types(attention.dtype, torch.float32))
        valid = mask.unsqueeze(-1)
        a = torch.where(valid, a, torch.zeros((), dtype=a.dtype, device=a.device))
        j = torch.arange(1, a.shape[1] + 1, dtype=a.dtype, device=a.device).view(1, -1, 1)
        mass = a.sum(dim=1, keepdim=True).clamp_min(eps)
        mu = (j * a).sum(dim=1, keepdim=True) / mass
        var = (((j - mu) ** 2) * a).sum(dim=1, keepdim=True) / mass
        var = var.clamp_min(eps)
        log_r = -((j - mu) ** 2) / (2.0 * var)
        log_r = log_r.masked_fill(~valid, float("-inf"))
        return torch.softmax(log_r, dim=1).to(attention.dtype)


class NormalGuidanceLoss(_Loss):
    """Normal Guidance penalty on MIL attention (Harvey, Loevlie & Hughes, 2026), a MONAI-style loss.

    Args:
        divergence: ``"forward_kl"`` (sum r log(r/a), the paper's best), ``"reverse_kl"`` (sum a log(a/r)) or
            ``"squared_error"`` (sum (r - a)^2).
        eps: clamp for the variance and inside the logarithms.
        guide: which bags are guided. ``"all"`` (the paper), ``"positive"`` (label-1 bags only) or
            ``"positive_uniform_negative"`` (beyond the paper, one of its open problems: positive bags toward their
            normal, negative bags toward a uniform reference over their slices).
        reduction: over the bags, as in MONAI losses: ``"mean"`` (the paper: mean over the guided bags, 0 when none
            is guided), ``"sum"`` (sum over the guided bags) or ``"none"`` (the ``[B]`` penalty of every bag, 0 for
            a bag that is not guided).

    Call as ``loss(attention, mask, labels=None)`` with ``attention`` ``[B, N]`` or ``[B, N, H]``, ``mask``
    ``[B, N]`` bool and ``labels`` ``[B]`` (needed unless ``guide="all"``). The penalty of a bag is, per head, the
    divergence summed over its valid slices, then the mean over heads. The weight lambda is applied by the training
    objective, :class:`monai_ng.losses.MILObjective`.
    """

    def __init__(
        self,
        divergence: str = "forward_kl",
        eps: float = 1e-6,
        guide: str = "all",
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        reductions = (LossReduction.MEAN.value, LossReduction.SUM.value, LossReduction.NONE.value)
        if str(getattr(reduction, "value", reduction)) not in reductions:
            raise ValueError(f"reduction must be one of {reductions}, got {reduction!r}")
        super().__init__(reduction=LossReduction(reduction).value)
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if guide not in GUIDE_MODES:
            raise ValueError(f"guide must be one of {GUIDE_MODES}, got {guide!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.divergence = divergence
        self.eps = float(eps)
        self.guide = guide

    def _every_bag(self, attention: Tensor, mask: Tensor | None, labels: Tensor | None) -> Tensor:
        """The penalty of every bag, ``[B]`` (mean over heads), before selecting guided bags."""
        attention, mask = _check_inputs(attention, mask)
        ref = normal_reference(attention, mask, self.eps)
        if self.guide == "positive_uniform_negative":
            labels = self._check_labels(labels, attention.shape[0])
            uniform = mask.unsqueeze(-1).to(ref.dtype) / mask.sum(dim=1).view(-1, 1, 1).to(ref.dtype)
            ref = torch.where((labels > 0.5).view(-1, 1, 1), ref, uniform.expand_as(ref))
        valid = mask.unsqueeze(-1)
        a = attention
        if self.divergence == "squared_error":
            term = (ref - a) ** 2
        elif self.divergence == "forward_kl":
            term = ref * (torch.log(ref.clamp_min(self.eps)) - torch.log(a.clamp_min(self.eps)))
        else:
            term = a * (torch.log(a.clamp_min(self.eps)) - torch.log(ref.clamp_min(self.eps)))
        term = torch.where(valid, term, torch.zeros((), dtype=term.dtype, device=term.device))
        return term.sum(dim=1).mean(dim=-1)

    def _check_labels(self, labels: Tensor | None, batch: int) -> Tensor:
        if labels is None:
            raise ValueError(f"guide={self.guide!r} needs the bag labels: call loss(attention, mask, labels)")
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.shape[0] != batch:
            raise ValueError(f"labels must have one value per bag ({batch}), got {labels.shape[0]}")
        return labels

    def forward(self, attention: Tensor, mask: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """The penalty reduced over the bags.

        Args:
            attention: ``[B, N]`` or ``[B, N, H]`` non-negative attention, summing to 1 over each bag's valid slices.
            mask: ``[B, N]`` bool, True = valid slice; ``None`` = all valid.
            labels: ``[B]`` bag labels (needed unless ``guide="all"``).

        Returns:
            A scalar for ``reduction="mean"`` / ``"sum"``; ``[B]`` for ``"none"``.
        """
        per_bag = self._every_bag(attention, mask, labels)
        if self.guide == "positive":
            selected = self._check_labels(labels, per_bag.shape[0]).to(per_bag.device) > 0.5
            if self.reduction == LossReduction.NONE.value:
                return torch.where(selected, per_bag, torch.zeros((), dtype=per_bag.dtype, device=per_bag.device))
            if not selected.any():
                return per_bag.sum() * 0.0
            per_bag = per_bag[selected]
        if self.reduction == LossReduction.SUM.value:
            return per_bag.sum()
        if self.reduction == LossReduction.NONE.value:
            return per_bag
        return per_bag.mean()
