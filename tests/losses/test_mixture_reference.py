"""Multi-focus NG reference (mixture of normals by EM): K=1 is the paper's normal, two bumps get two foci, EM is
monotone, padding is ignored, no gradient, bad arguments refused."""

from __future__ import annotations

import math

import pytest
import torch

from monai_ng.losses import NormalGuidanceLoss, fit_slice_mixture, mixture_reference, normal_reference

J = torch.arange(1, 61, dtype=torch.float64)


def _two_bumps(n: int = 60, centres: tuple[float, float] = (12.0, 45.0), var: float = 4.0) -> torch.Tensor:
    """``[1, n]`` attention: two equal normal bumps (variance ``var``) at ``centres``, normalised."""
    j = torch.arange(1, n + 1, dtype=torch.float64)
    a = sum(torch.exp(-((j - c) ** 2) / (2 * var)) for c in centres)
    return (a / a.sum())[None]


def _random_attention(b: int, n: int, h: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(b, n, h, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("em_steps", [0, 1, 4])
def test_one_component_is_the_normal_reference(em_steps):
    att = _random_attention(3, 25, 2, seed=0)
    mask = torch.arange(25)[None, :] < torch.tensor([25, 17, 1])[:, None]
    got = mixture_reference(att, mask, components=1, em_steps=em_steps)
    torch.testing.assert_close(got, normal_reference(att, mask), rtol=0, atol=1e-12)
    # and so is the loss
    mixture = NormalGuidanceLoss(reference="mixture", components=1, em_steps=em_steps)(att, mask)
    assert mixture.item() == pytest.approx(NormalGuidanceLoss()(att, mask).item(), rel=1e-10)


def test_two_bumps_get_two_foci_where_one_normal_fills_the_gap():
    a = _two_bumps()
    bumps = ((J - 12).abs() <= 6) | ((J - 45).abs() <= 6)  # 26 of 60 slices
    gap = (J >= 19) & (J <= 38)
    mix = mixture_reference(a, components=2, em_steps=5)[0, :, 0]
    one = normal_reference(a)[0, :, 0]
    assert mix[bumps].sum() >= 0.99
    # the single normal sits between the lesions: its peak is in the 20-slice gap, which holds more of its mass than
    # the 26 slices of the two bumps (0.49 vs 0.41)
    assert gap[one.argmax()] and one[gap].sum() > one[bumps].sum()
    assert one[bumps].sum() < 0.45
    # the fit recovers the bumps: weights 1/2, means 12 and 45, variance 4 (the bumps barely overlap)
    fit = fit_slice_mixture(a, components=2, em_steps=5)
    torch.testing.assert_close(fit.weights[0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(fit.means[0, 0], torch.tensor([12.0, 45.0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(fit.variances[0, 0], torch.tensor([4.0, 4.0], dtype=torch.float64), atol=1e-4, rtol=0)


def test_band_start_by_hand():
    # attention [0.5, 0, 0, 0.5] with K = 2: band 1 is slice 1, band 2 is slice 4 -> means 1 and 4, variances at the
    # floor eps, weights 1/2; log-likelihood = sum_j a_j log(0.5 N(j; mu, eps)) = log 0.5 - 0.5 log(2 pi eps)
    a = torch.tensor([[0.5, 0.0, 0.0, 0.5]], dtype=torch.float64)
    fit = fit_slice_mixture(a, components=2, em_steps=0, eps=1e-6)
    assert fit.means[0, 0].tolist() == [1.0, 4.0]
    assert fit.variances[0, 0].tolist() == [1e-6, 1e-6] and fit.weights[0, 0].tolist() == [0.5, 0.5]
    expected = math.log(0.5) - 0.5 * math.log(2 * math.pi * 1e-6)
    assert fit.log_likelihood[0, 0, 0].item() == pytest.approx(expected, rel=1e-12)
    # a slice straddling a cut is split: uniform over 3 slices, K = 2 -> band 1 = slice 1 + half of slice 2
    u = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    fit = fit_slice_mixture(u, components=2, em_steps=0)
    # band 1 mass 1/3 at j=1 and 1/6 at j=2: mean (1/3 + 2/6) / (1/2) = 4/3; variance 2/9
    torch.testing.assert_close(fit.means[0, 0], torch.tensor([4 / 3, 8 / 3], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        fit.variances[0, 0], torch.tensor([2 / 9, 2 / 9], dtype=torch.float64), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(("components", "seed"), [(2, 1), (3, 2), (4, 3)])
def test_em_log_likelihood_never_decreases(components, seed):
    att = _random_attention(4, 40, 3, seed)
    # make the start poor: unequal bumps so the equal-mass bands cut through a bump
    att = att + 3 * _two_bumps(40, (8.0, 30.0), 6.0).unsqueeze(-1) * torch.tensor([1.0, 0.2, 3.0])
    att = att / att.sum(dim=1, keepdim=True)
    mask = torch.arange(40)[None, :] < torch.tensor([40, 33, 12, 5])[:, None]
    trace = fit_slice_mixture(att, mask, components=components, em_steps=15).log_likelihood  # [16, B, H]
    assert trace.shape == (16, 4, 3)
    assert (trace.diff(dim=0) >= -1e-10).all()
    assert (trace[-1] - trace[0] > 1e-3).any()  # EM did move


def test_padding_is_ignored():
    att = _random_attention(1, 9, 2, seed=4)
    ref = mixture_reference(att, components=2, em_steps=3)
    padded = torch.cat([att, 100 * torch.rand(1, 6, 2, dtype=torch.float64)], dim=1)  # garbage, longer N
    mask = torch.tensor([[True] * 9 + [False] * 6])
    got = mixture_reference(padded, mask, components=2, em_steps=3)
    torch.testing.assert_close(got[:, :9], ref, rtol=0, atol=1e-14)
    assert torch.all(got[:, 9:] == 0)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, 2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_no_gradient_through_the_reference():
    att = _random_attention(2, 10, 1, seed=5).requires_grad_()
    ref = mixture_reference(att, components=2)
    assert not ref.requires_grad
    # squared error with r held constant: d/da sum (r - a)^2 = -2 (r - a)
    loss = NormalGuidanceLoss("squared_error", reference="mixture", components=2, reduction="sum")
    loss(att).backward()
    torch.testing.assert_close(att.grad, -2 * (ref - att.detach()), rtol=0, atol=1e-12)


def test_bad_arguments():
    att = torch.rand(2, 5)
    with pytest.raises(ValueError, match="components must be >= 1, got 0"):
        mixture_reference(att, components=0)
    with pytest.raises(ValueError, match="em_steps must be >= 0, got -1"):
        mixture_reference(att, em_steps=-1)
    with pytest.raises(TypeError, match="components must be an int, got 2.0"):
        fit_slice_mixture(att, components=2.0)
    with pytest.raises(ValueError, match="components must be >= 1, got 0"):
        NormalGuidanceLoss(reference="mixture", components=0)
    with pytest.raises(ValueError, match="em_steps must be >= 0, got -2"):
        NormalGuidanceLoss(reference="mixture", em_steps=-2)
    with pytest.raises(ValueError, match=r"reference must be one of \('normal', 'mixture'\), got 'gmm'"):
        NormalGuidanceLoss(reference="gmm")
    with pytest.raises(ValueError, match="eps must be positive"):
        mixture_reference(att, eps=0.0)
    with pytest.raises(ValueError, match="bag 1 of the batch has no valid slice"):
        mixture_reference(att, torch.tensor([[True] * 5, [False] * 5]))
