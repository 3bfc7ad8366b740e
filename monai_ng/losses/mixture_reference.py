"""Multi-focus Normal Guidance reference: a mixture of normals over slice index fitted to the attention by EM.

Beyond Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs" (2026), whose reference is one discrete
normal per bag and head. With two or more lesions per scan, that normal sits between the lesions and its guidance
pulls attention into the gap. Here the reference is a ``K``-component mixture of normals fitted to the attention
``a_j`` over the slice indices ``j = 1..S`` by expectation-maximisation (Dempster, Laird & Rubin, JRSS-B 1977), the
attention acting as weights of the points ``j``::

    L(theta)  = sum_j a_j log sum_k pi_k N(j; mu_k, sigma_k^2)          (a normalised to sum 1)
    E-step:     g_jk = pi_k N(j; mu_k, sigma_k^2) / sum_l pi_l N(j; mu_l, sigma_l^2)
    M-step:     pi_k = sum_j a_j g_jk,  mu_k = sum_j a_j g_jk j / pi_k,
                sigma_k^2 = max(sum_j a_j g_jk (j - mu_k)^2 / pi_k, eps)
    r_j       = sum_k pi_k N(j; mu_k, sigma_k^2) / sum_{valid i} sum_k pi_k N(i; mu_k, sigma_k^2)

Deterministic start: the attention's cumulative mass over the valid slices is cut into ``K`` bands of equal mass
(band ``k`` holds the mass with cumulative value in ``[(k - 1) / K, k / K]``, a slice straddling a cut is split), and
each component starts as its band's weight, mean and variance (``pi_k = 1/K``; ``mu_k`` lies near the ``(k - 0.5)/K``
quantile). With ``K = 1`` the band is the whole attention, so the start and every EM step give the moment-matched
normal of :func:`~monai_ng.losses.normal_guidance.normal_reference`. Each EM step does not decrease ``L``; the
variance floor keeps the M-step a maximiser over ``sigma^2 >= eps``, so the floor keeps that property.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from monai_ng.losses.attention_inputs import check_attention, check_count

__all__ = ["SliceMixtureFit", "fit_slice_mixture", "mixture_reference"]


class SliceMixtureFit(NamedTuple):
    """A mixture of normals over slice index per bag and head, fitted by :func:`fit_slice_mixture`.

    Attributes:
        weights: ``[B, H, K]`` mixing weights ``pi_k`` (sum 1 over ``K``).
        means: ``[B, H, K]`` component means ``mu_k`` in 1-based slice index.
        variances: ``[B, H, K]`` component variances ``sigma_k^2`` (``>= eps``).
        log_likelihood: ``[em_steps + 1, B, H]`` the weighted log-likelihood ``L`` at the start and after each step.
    """

    weights: Tensor
    means: Tensor
    variances: Tensor
    log_likelihood: Tensor


def _log_components(j: Tensor, weights: Tensor, means: Tensor, variances: Tensor) -> Tensor:
    """``log pi_k N(j; mu_k, sigma_k^2)`` ``[B, N, H, K]`` for ``j`` ``[1, N, 1, 1]`` and parameters ``[B, H, K]``."""
    w, m, v = weights.unsqueeze(1), means.unsqueeze(1), variances.unsqueeze(1)
    return torch.log(w) - 0.5 * torch.log(2.0 * math.pi * v) - (j - m) ** 2 / (2.0 * v)


def _m_step(w: Tensor, j: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, means, variances ``[B, H, K]`` from the mass ``w = a_j g_jk`` ``[B, N, H, K]`` of slice j in k."""
    mass = w.sum(dim=1)  # [B, H, K]
    safe = mass.clamp_min(eps)
    means = (w * j).sum(dim=1) / safe
    variances = (w * (j - means.unsqueeze(1)) ** 2).sum(dim=1) / safe
    return mass.clamp_min(torch.finfo(w.dtype).tiny), means, variances.clamp_min(eps)


def fit_slice_mixture(
    attention: Tensor, mask: Tensor | None = None, components: int = 2, em_steps: int = 5, eps: float = 1e-6
) -> SliceMixtureFit:
    """Fit a ``K``-component mixture of normals over slice index to each bag's and head's attention (no gradient).

    Args:
        attention: ``[B, N]`` or ``[B, N, H]`` non-negative attention; padded slices are ignored.
        mask: ``[B, N]`` bool, True = valid slice. None = all valid.
        components: ``K >= 1``.
        em_steps: EM iterations after the equal-mass-band start (``>= 0``).
        eps: floor of the variances and of the attention mass.

    Returns:
        :class:`SliceMixtureFit` (float32 or wider).

    Raises:
        TypeError / ValueError: ``components < 1``, ``em_steps < 0``, ``eps <= 0``, or bad attention / mask (see
            :class:`~monai_ng.losses.NormalGuidanceLoss`).
    """
    components = check_count("components", components, 1)
    em_steps = check_count("em_steps", em_steps, 0)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    attention, mask = check_attention(attention, mask)
    with torch.no_grad():
        dtype = torch.promote_types(attention.dtype, torch.float32)
        valid = mask.unsqueeze(-1)
        a = torch.where(valid, attention.detach().to(dtype), torch.zeros((), dtype=dtype, device=attention.device))
        a = a / a.sum(dim=1, keepdim=True).clamp_min(eps)  # [B, N, H], sums to 1 over the valid slices
        j = torch.arange(1, a.shape[1] + 1, dtype=dtype, device=a.device).view(1, -1, 1, 1)
        # start: equal-mass bands of the cumulative attention; overlap = mass of slice j inside band k
        upper = a.cumsum(dim=1).unsqueeze(-1)  # [B, N, H, 1]
        lower = upper - a.unsqueeze(-1)
        cuts = torch.arange(components + 1, dtype=dtype, device=a.device) / components
        cuts[0], cuts[-1] = -math.inf, math.inf  # the ends take any rounding of the cumulative sum
        overlap = (torch.minimum(upper, cuts[1:]) - torch.maximum(lower, cuts[:-1])).clamp_min(0.0)  # [B, N, H, K]
        weights, means, variances = _m_step(overlap, j, eps)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        a4 = a.unsqueeze(-1)  # [B, N, H, 1]
        pad = ~valid.unsqueeze(-1)  # [B, N, 1, 1]
        trace = []
        for step in range(em_steps + 1):
            log_joint = _log_components(j, weights, means, variances)  # [B, N, H, K]
            log_mix = torch.logsumexp(log_joint, dim=-1, keepdim=True)  # [B, N, H, 1]
            trace.append(torch.where(pad, 0.0, a4 * log_mix).sum(dim=(1, 3)))
            if step == em_steps:
                break
            weights, means, variances = _m_step(a4 * torch.exp(log_joint - log_mix), j, eps)
        return SliceMixtureFit(weights, means, variances, torch.stack(trace))


def mixture_reference(
    attention: Tensor, mask: Tensor | None = None, components: int = 2, em_steps: int = 5, eps: float = 1e-6
) -> Tensor:
    """The multi-focus NG reference: the fitted mixture of normals, normalised over each bag's valid slices.

    Args:
        attention: ``[B, N]`` or ``[B, N, H]`` non-negative attention; padded slices are ignored.
        mask: ``[B, N]`` bool, True = valid slice. None = all valid.
        components: mixture components ``K >= 1`` (``K = 1`` is :func:`normal_reference`).
        em_steps: EM iterations (``>= 0``).
        eps: floor of the variances and of the attention mass.

    Returns:
        ``[B, N, H]`` reference ``r`` in the dtype of ``attention``, computed without gradient: zero on padded slices,
        summing to 1 over each bag's valid slices.
    """
    fit = fit_slice_mixture(attention, mask, components, em_steps, eps)
    attention, mask = check_attention(attention, mask)
    with torch.no_grad():
        dtype = fit.means.dtype
        j = torch.arange(1, attention.shape[1] + 1, dtype=dtype, device=attention.device).view(1, -1, 1, 1)
        log_r = torch.logsumexp(_log_components(j, fit.weights, fit.means, fit.variances), dim=-1)  # [B, N, H]
        log_r = log_r.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.softmax(log_r, dim=1).to(attention.dtype)
