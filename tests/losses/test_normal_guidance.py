"""Normal Guidance loss: hand-computed values, invariances, gradients, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.modules.loss import _Loss

from monai_ng.losses import MILObjective, NormalGuidanceLoss, centre_reference, normal_reference
from monai_ng.networks import CentreGaussianMIL

# attention [0.2, 0.5, 0.3] on slices j = 1, 2, 3:
# mu = 0.2 + 1.0 + 0.9 = 2.1; E[j^2] = 0.2 + 2.0 + 2.7 = 4.9; var = 4.9 - 2.1^2 = 0.49 (sigma = 0.7)
# r_j = exp(-(j - 2.1)^2 / 0.98) / sum  ->  [0.169305507, 0.576050087, 0.254644405]
A3 = [0.2, 0.5, 0.3]
R3 = [0.16930550725041202, 0.5760500873177355, 0.2546444054318524]
EXPECTED = {
    "squared_error": 0.00878289762481989,
    "forward_kl": 0.011612619987130104,
    "reverse_kl": 0.011703569220724623,
}


def _scalar_ng(a: list[float], divergence: str) -> float:
    """Independent scalar implementation with the paper's formulas (j^2 form of the variance)."""
    js = range(1, len(a) + 1)
    s = sum(a)
    mu = sum(j * x for j, x in zip(js, a, strict=True)) / s
    var = max(sum(j * j * x for j, x in zip(js, a, strict=True)) / s - mu * mu, 1e-6)
    w = [math.exp(-((j - mu) ** 2) / (2 * var)) for j in js]
    r = [x / sum(w) for x in w]
    if divergence == "squared_error":
        return sum((ri - ai) ** 2 for ri, ai in zip(r, a, strict=True))
    if divergence == "forward_kl":
        return sum(ri * math.log(max(ri, 1e-6) / max(ai, 1e-6)) for ri, ai in zip(r, a, strict=True))
    return sum(ai * math.log(max(ai, 1e-6) / max(ri, 1e-6)) for ri, ai in zip(r, a, strict=True))


def test_reference_hand_computed():
    r = normal_reference(torch.tensor([A3], dtype=torch.float64))
    assert r.shape == (1, 3, 1)
    torch.testing.assert_close(r[0, :, 0], torch.tensor(R3, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("divergence", sorted(EXPECTED))
def test_hand_computed_values(divergence):
    loss = NormalGuidanceLoss(divergence)(torch.tensor([A3], dtype=torch.float64))
    assert loss.item() == pytest.approx(EXPECTED[divergence], abs=1e-12)


@pytest.mark.parametrize("divergence", sorted(EXPECTED))
def test_matches_independent_formula_on_random_bags(divergence):
    g = torch.Generator().manual_seed(0)
    lengths = [1, 2, 5, 17, 40]
    n = max(lengths)
    logits = torch.randn(len(lengths), n, generator=g, dtype=torch.float64) * 2
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    att = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    per_bag = NormalGuidanceLoss(divergence, reduction="none")(att, mask)
    assert per_bag.shape == (len(lengths),)
    for b, s in enumerate(lengths):
        assert per_bag[b].item() == pytest.approx(_scalar_ng(att[b, :s].tolist(), divergence), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("divergence", sorted(EXPECTED))
def test_zero_when_attention_is_its_own_normal(divergence):
    # a discrete normal far from the bag ends with sigma = 3 has (to ~1e-15) mean and variance mu, sigma^2, so it is
    # its own reference: truncation ~exp(-48), discretisation error ~exp(-2 pi^2 sigma^2)
    j = torch.arange(1, 61, dtype=torch.float64)
    a = torch.softmax(-((j - 30.5) ** 2) / (2 * 9.0), dim=0)[None]
    assert NormalGuidanceLoss(divergence)(a).item() == pytest.approx(0.0, abs=1e-12)
    # and strictly positive for an attention that is not a normal (bimodal)
    bimodal = torch.zeros(1, 30, dtype=torch.float64)
    bimodal[0, [3, 25]] = 0.5
    assert NormalGuidanceLoss(divergence)(bimodal + 1e-9).item() > 1e-2


def test_no_gradient_through_reference():
    att = torch.tensor([A3], dtype=torch.float64, requires_grad=True)
    NormalGuidanceLoss("squared_error")(att).backward()
    # d/da sum (r - a)^2 with r held constant = -2 (r - a)
    expected = -2 * (torch.tensor([R3], dtype=torch.float64) - torch.tensor([A3], dtype=torch.float64))
    torch.testing.assert_close(att.grad, expected, rtol=0, atol=1e-12)
    att.grad = None
    NormalGuidanceLoss("forward_kl")(att).backward()
    # d/da sum r log(r/a) = -r / a
    torch.testing.assert_close(att.grad, -torch.tensor([R3], dtype=torch.float64) / att.detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("divergence", sorted(EXPECTED))
def test_padding_contributes_nothing(divergence):
    loss = NormalGuidanceLoss(divergence)
    alone = loss(torch.tensor([A3], dtype=torch.float64))
    padded = torch.tensor([A3 + [0.7, 123.0]], dtype=torch.float64, requires_grad=True)  # garbage in the padding
    mask = torch.tensor([[True, True, True, False, False]])
    value = loss(padded, mask)
    assert value.item() == pytest.approx(alone.item(), abs=1e-14)
    value.backward()
    assert torch.all(padded.grad[0, 3:] == 0)


@pytest.mark.parametrize("divergence", sorted(EXPECTED))
def test_multi_head_is_mean_of_single_heads(divergence):
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    heads = [
        torch.softmax(torch.randn(2, 9, generator=g, dtype=torch.float64).masked_fill(~mask, -1e30), 1)
        for _ in range(4)
    ]
    loss = NormalGuidanceLoss(divergence)
    multi = loss(torch.stack(heads, dim=-1), mask)
    single = torch.stack([loss(h, mask) for h in heads]).mean()
    assert multi.item() == pytest.approx(single.item(), rel=1e-12)


def _two_bags() -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """``(attention [2, 3], labels [2], loss of bag 0, loss of bag 1)``: a positive bag ``A3`` and a negative one, with
    their single-bag squared-error losses."""
    a1 = torch.tensor([A3], dtype=torch.float64)
    a2 = torch.tensor([[0.6, 0.1, 0.3]], dtype=torch.float64)
    f = NormalGuidanceLoss("squared_error")
    return torch.cat([a1, a2]), torch.tensor([1.0, 0.0]), f(a1).item(), f(a2).item()


def test_mean_over_bags_and_guide_modes():
    both, labels, l1, l2 = _two_bags()
    assert NormalGuidanceLoss("squared_error")(both).item() == pytest.approx((l1 + l2) / 2, abs=1e-14)
    assert NormalGuidanceLoss("squared_error", guide="positive")(both, labels=labels).item() == pytest.approx(l1)
    # no positive bag: zero, still differentiable
    z = NormalGuidanceLoss("squared_error", guide="positive")(both.requires_grad_(), labels=torch.zeros(2))
    assert z.item() == 0.0 and z.requires_grad
    # negatives toward uniform: (0.6-1/3)^2 + (0.1-1/3)^2 + (0.3-1/3)^2
    unif = (0.6 - 1 / 3) ** 2 + (0.1 - 1 / 3) ** 2 + (0.3 - 1 / 3) ** 2
    got = NormalGuidanceLoss("squared_error", guide="positive_uniform_negative")(both.detach(), labels=labels)
    assert got.item() == pytest.approx((l1 + unif) / 2, abs=1e-14)


def test_reductions_over_bags():
    both, labels, l1, l2 = _two_bags()
    none = NormalGuidanceLoss("squared_error", reduction="none")(both)
    torch.testing.assert_close(none, torch.tensor([l1, l2], dtype=torch.float64), rtol=0, atol=1e-14)
    assert NormalGuidanceLoss("squared_error", reduction="sum")(both).item() == pytest.approx(l1 + l2, abs=1e-14)
    # guide="positive": unguided bags are 0 under "none" and left out of "sum" and "mean"
    positive = {r: NormalGuidanceLoss("squared_error", guide="positive", reduction=r) for r in ("none", "sum", "mean")}
    torch.testing.assert_close(positive["none"](both, labels=labels), torch.tensor([l1, 0.0], dtype=torch.float64))
    assert positive["sum"](both, labels=labels).item() == pytest.approx(l1, abs=1e-14)
    assert positive["mean"](both, labels=labels).item() == pytest.approx(l1, abs=1e-14)
    assert positive["sum"](both, labels=torch.zeros(2)).item() == 0.0
    with pytest.raises(ValueError, match="reduction must be one of"):
        NormalGuidanceLoss(reduction="average")


def test_bad_inputs():
    with pytest.raises(ValueError, match="divergence"):
        NormalGuidanceLoss("kl")
    with pytest.raises(ValueError, match="guide"):
        NormalGuidanceLoss(guide="some")
    assert isinstance(NormalGuidanceLoss(), _Loss)
    loss = NormalGuidanceLoss()
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        loss(torch.rand(3))
    with pytest.raises(ValueError, match="mask"):
        loss(torch.rand(2, 4), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        loss(torch.rand(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="bag 1"):
        loss(torch.rand(2, 4), torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="labels"):
        NormalGuidanceLoss(guide="positive")(torch.rand(2, 4))


def test_objective_terms():
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
        net.bias.fill_(0.5)
    att = torch.tensor([A3], dtype=torch.float32)
    logits = torch.tensor([0.3])
    target = {"label": torch.tensor([1.0]), "mask": torch.ones(1, 3, dtype=torch.bool)}
    obj = MILObjective(ng_weight=2.0, divergence="forward_kl", l1_weight=0.1, network=net)
    total = obj((logits, att), target)
    bce = math.log(1 + math.exp(-0.3))
    expected = bce + 2.0 * EXPECTED["forward_kl"] + 0.5 * 0.1 * 3.5
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert obj.last_terms["l1"] == pytest.approx(3.5)
    with pytest.raises(ValueError, match="network"):
        MILObjective(l1_weight=1.0)


def test_ceiling_objective_slice_bce_only_by_scan_weight():
    """The paper's ceiling objective is the slice BCE alone (scan_weight=0); scan_weight=1 is the earlier scan + slice
    BCE. Hand values: slice logits [0, ln 3] with labels [0, 1] (slice 3 unknown, slice 4 padding), scan logit 0.3."""
    logits = torch.tensor([0.3], requires_grad=True)
    instance = torch.tensor([[0.0, math.log(3.0), 5.0, 9.0]], requires_grad=True)
    att = torch.full((1, 4, 1), 1 / 3).masked_fill(torch.tensor([[[False], [False], [False], [True]]]), 0.0)
    target = {
        "label": torch.tensor([1.0]),
        "mask": torch.tensor([[True, True, True, False]]),
        "slice_labels": torch.tensor([[0, 1, -1, 1]]),
    }
    slice_bce = (math.log(2.0) + math.log(4.0 / 3.0)) / 2  # -log(1/2), -log(3/4)
    scan_bce = math.log(1 + math.exp(-0.3))
    paper = MILObjective(ng_weight=0.0, instance_weight=1.0, scan_weight=0.0)
    total = paper((logits, att, instance), target)
    assert total.item() == pytest.approx(slice_bce, rel=1e-6)
    assert paper.last_terms["bce"] == pytest.approx(scan_bce, rel=1e-6)  # still logged
    total.backward()
    assert logits.grad is None or float(logits.grad.abs().sum()) == 0.0  # the scan logit is not trained
    both = MILObjective(ng_weight=0.0, instance_weight=1.0, scan_weight=1.0)
    assert both((logits, att, instance), target).item() == pytest.approx(scan_bce + slice_bce, rel=1e-6)
    half = MILObjective(ng_weight=0.0, scan_weight=0.5)
    assert half((logits, att), target).item() == pytest.approx(0.5 * scan_bce, rel=1e-6)
    zero = MILObjective(ng_weight=0.0, scan_weight=0.0)
    assert zero((logits, att), target).item() == 0.0
    with pytest.raises(ValueError, match="scan_weight must be >= 0"):
        MILObjective(scan_weight=-1.0)


def test_centre_reference_for_negative_bags():
    both, labels, l1, _ = _two_bags()
    # S = 3: c = (S + 1) / 2 = 2, sigma = S / 4 = 0.75 -> r ~ [exp(-1 / 1.125), 1, exp(-1 / 1.125)]
    w = math.exp(-1 / 1.125)
    r = [w / (1 + 2 * w), 1 / (1 + 2 * w), w / (1 + 2 * w)]
    centre = sum((ri - ai) ** 2 for ri, ai in zip(r, [0.6, 0.1, 0.3], strict=True))
    loss = NormalGuidanceLoss("squared_error", guide="positive_centre_negative", reduction="none")
    got = loss(both, labels=labels)
    torch.testing.assert_close(got, torch.tensor([l1, centre], dtype=torch.float64), rtol=0, atol=1e-14)
    ref = loss.reference_of(both, labels=labels)
    torch.testing.assert_close(ref[1, :, 0], torch.tensor(r, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(ref[0, :, 0], torch.tensor(R3, dtype=torch.float64), rtol=0, atol=1e-12)  # positive
    with pytest.raises(ValueError, match="needs the bag labels"):
        loss(both)


def test_centre_reference_is_the_centre_baselines_attention():
    mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 1, 6])[:, None]
    net = CentreGaussianMIL(in_features=2).double()
    expected = net(torch.randn(4, 9, 2, dtype=torch.float64), mask).attention
    torch.testing.assert_close(centre_reference(mask, torch.float64), expected, rtol=0, atol=1e-15)
    # multi-head attention: every head of a negative bag gets the same centred reference; a positive keeps its own
    att = torch.softmax(torch.randn(4, 9, 3, dtype=torch.float64).masked_fill(~mask.unsqueeze(-1), -1e30), dim=1)
    labels = torch.tensor([0.0, 1.0, 0.0, 0.0])
    ref = NormalGuidanceLoss(guide="positive_centre_negative").reference_of(att, mask, labels)
    torch.testing.assert_close(ref[[0, 2, 3]], expected[[0, 2, 3]].expand(-1, -1, 3), rtol=0, atol=1e-15)
    torch.testing.assert_close(ref[1], normal_reference(att, mask)[1], rtol=0, atol=0)


def test_objective_passes_the_options_to_the_loss():
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    att = torch.softmax(torch.randn(2, 8, 2, generator=g).masked_fill(~mask.unsqueeze(-1), -1e30), dim=1)
    target = {"label": torch.tensor([1.0, 0.0]), "mask": mask}
    logits = torch.zeros(2)
    bce = math.log(2.0)
    for kwargs in (
        {"guide": "positive_centre_negative"},
        {"guide": "positive", "reference": "mixture", "components": 3, "em_steps": 2},
    ):
        ng = NormalGuidanceLoss("forward_kl", **kwargs)(att, mask, target["label"])
        total = MILObjective(ng_weight=2.0, **kwargs)((logits, att), target)
        assert total.item() == pytest.approx(bce + 2.0 * ng.item(), rel=1e-6)
