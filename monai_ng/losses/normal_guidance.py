"""Normal Guidance: pull a bag's attention over slice index toward a discrete normal with its own mean and variance.

Reference: E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs" (2026).
For bag ``i`` with ``S`` valid slices and attention ``a_j`` (per head), ``j = 1..S``::

    mu      = sum_j j a_j / sum_j a_j
    sigma^2 = sum_j j^2 a_j / sum_j a_j - mu^2          (clamped >= eps)
    r_j     = N(j; mu, sigma) / sum_k N(k; mu, sigma)  (no gradient)
    D(r, a) = sum_j (r_j - a_j)^2  |  sum_j r_j log(r_j / a_j)  |  sum_j a_j log(a_j / r_j)

averaged over heads, then reduced over the guided bags (``reduction``).

Beyond the paper (options of :class:`NormalGuidanceLoss`, see ``docs/method.md``, "Beyond the paper"): a mixture of
normals fitted by EM as the reference (``reference="mixture"``, :mod:`monai_ng.losses.mixture_reference`), and guidance
of negative scans toward a uniform or a centred reference (``guide``).
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch import Tensor
from torch.nn.modules.loss import _Loss

from monai_ng.losses.attention_inputs import check_attention, check_count
from monai_ng.losses.mixture_reference import mixture_reference
from monai_ng.networks.centre_gaussian import centre_offsets

__all__ = [
    "NormalGuidanceLoss",
    "normal_reference",
    "centre_reference",
    "DIVERGENCES",
    "GUIDE_MODES",
    "REFERENCES",
]

DIVERGENCES = ("forward_kl", "reverse_kl", "squared_error")
GUIDE_MODES = ("all", "positive", "positive_uniform_negative", "positive_centre_negative")
REFERENCES = ("normal", "mixture")


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
    attention, mask = check_attention(attention, mask)
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


def centre_reference(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The centre baseline's prior as a reference: a discrete normal centred on each bag, ``[B, N, 1]``.

    ``r_j = N(j; c, sigma) / sum_valid N`` with ``c = (S + 1) / 2`` and ``sigma = S / 4`` over the ``S`` valid slices
    (valid slices first), exactly the attention of :class:`~monai_ng.networks.CentreGaussianMIL` with its default
    ``sigma=None`` (see :func:`~monai_ng.networks.centre_offsets`). Zero on padded slices.

    Args:
        mask: ``[B, N]`` bool, True = valid slice, valid slices first.
        dtype: floating dtype of the result.
    """
    offset, lengths = centre_offsets(mask, dtype)
    log_r = -(offset**2) / (2.0 * (lengths / 4.0) ** 2)
    return torch.softmax(log_r.masked_fill(~mask, float("-inf")), dim=1).unsqueeze(-1)


class NormalGuidanceLoss(_Loss):
    """Normal Guidance penalty on MIL attention (Harvey, Loevlie & Hughes, 2026), a MONAI-style loss.

    Args:
        divergence: ``"forward_kl"`` (sum r log(r/a), the paper's best), ``"reverse_kl"`` (sum a log(a/r)) or
            ``"squared_error"`` (sum (r - a)^2).
        eps: clamp for the variance and inside the logarithms.
        guide: which bags are guided, and toward what. ``"all"`` (the paper: every bag toward its own reference),
            ``"positive"`` (label-conditioned: label-1 bags only, negative bags unguided), and, for the paper's first
            open problem (negative scans are unregularised), ``"positive_uniform_negative"`` (positive bags toward
            their reference, negative bags toward the uniform ``1/S`` over their valid slices) and
            ``"positive_centre_negative"`` (negative bags toward the centre baseline's prior, :func:`centre_reference`:
            a discrete normal with ``c = (S + 1)/2``, ``sigma = S/4``).
        reduction: over the bags, as in MONAI losses: ``"mean"`` (the paper: mean over the guided bags, 0 when none
            is guided), ``"sum"`` (sum over the guided bags) or ``"none"`` (the ``[B]`` penalty of every bag, 0 for
            a bag that is not guided).
        reference: the reference of a guided bag. ``"normal"`` (the paper: one discrete normal with the attention's
            mean and variance, :func:`normal_reference`) or ``"mixture"`` (beyond the paper: a ``components``-normal
            mixture fitted to the attention by ``em_steps`` EM steps, :func:`~monai_ng.losses.mixture_reference`;
            several foci per head).
        components: mixture components ``K >= 1`` (``reference="mixture"``; ``K = 1`` is the paper's normal).
        em_steps: EM steps ``>= 0`` after the equal-mass-band start (``reference="mixture"``).

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
        reference: str = "normal",
        components: int = 2,
        em_steps: int = 5,
    ) -> None:
        reductions = (LossReduction.MEAN.value, LossReduction.SUM.value, LossReduction.NONE.value)
        if str(getattr(reduction, "value", reduction)) not in reductions:
            raise ValueError(f"reduction must be one of {reductions}, got {reduction!r}")
        super().__init__(reduction=LossReduction(reduction).value)
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if guide not in GUIDE_MODES:
            raise ValueError(f"guide must be one of {GUIDE_MODES}, got {guide!r}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.divergence = divergence
        self.eps = float(eps)
        self.guide = guide
        self.reference = reference
        self.components = check_count("components", components, 1)
        self.em_steps = check_count("em_steps", em_steps, 0)

    def reference_of(self, attention: Tensor, mask: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """The reference ``r`` ``[B, N, H]`` every bag is compared with (no gradient; 0 on padded slices).

        Positive bags (every bag for ``guide="all"`` / ``"positive"``) get the ``reference`` fitted to their own
        attention; under ``"positive_uniform_negative"`` / ``"positive_centre_negative"`` negative bags get the uniform
        / centred reference instead.
        """
        attention, mask = check_attention(attention, mask)
        if self.reference == "mixture":
            ref = mixture_reference(attention, mask, self.components, self.em_steps, self.eps)
        else:
            ref = normal_reference(attention, mask, self.eps)
        if self.guide in ("positive_uniform_negative", "positive_centre_negative"):
            labels = self._check_labels(labels, attention.shape[0]).to(ref.device)
            if self.guide == "positive_uniform_negative":
                negative = mask.unsqueeze(-1).to(ref.dtype) / mask.sum(dim=1).view(-1, 1, 1).to(ref.dtype)
            else:
                negative = centre_reference(mask, ref.dtype)
            ref = torch.where((labels > 0.5).view(-1, 1, 1), ref, negative.expand_as(ref))
        return ref

    def _every_bag(self, attention: Tensor, mask: Tensor | None, labels: Tensor | None) -> Tensor:
        """The penalty of every bag, ``[B]`` (mean over heads), before selecting guided bags."""
        attention, mask = check_attention(attention, mask)
        ref = self.reference_of(attention, mask, labels)
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
