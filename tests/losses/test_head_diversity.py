"""Head similarity (mean pairwise cosine of the heads' attention) and its term in MILObjective: hand values,
gradients, padding, one head."""

from __future__ import annotations

import math

import pytest
import torch

from monai_ng.losses import MILObjective, head_similarity


def _heads(*columns: list[float]) -> torch.Tensor:
    """``[1, N, H]`` attention with one column per head."""
    return torch.tensor(columns, dtype=torch.float64).T.unsqueeze(0)


def test_hand_computed_values():
    half_a, half_b, flat = [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.25] * 4
    assert head_similarity(_heads(half_a, half_a)).item() == pytest.approx(1.0, abs=1e-15)  # identical heads
    assert head_similarity(_heads(half_a, half_b)).item() == 0.0  # disjoint slices
    # <a, u> = 0.25, ||a|| = sqrt(0.5), ||u|| = 0.5 -> 1 / sqrt(2)
    assert head_similarity(_heads(half_a, flat)).item() == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    # three heads: pairs (a, b) = 0, (a, u) = (b, u) = 1/sqrt(2) -> mean sqrt(2) / 3
    assert head_similarity(_heads(half_a, half_b, flat)).item() == pytest.approx(math.sqrt(2) / 3, abs=1e-15)
    # one head: 0, per bag
    assert head_similarity(torch.rand(3, 5)).tolist() == [0.0, 0.0, 0.0]


def test_padding_is_ignored_and_each_bag_is_scored():
    a = _heads([0.5, 0.5, 0.0, 0.0], [0.25] * 4)
    b = _heads([0.2, 0.8], [0.8, 0.2])  # 0.32 / 0.68 = 8/17
    garbage = torch.tensor([[[7.0, -3.0], [1e3, 2.0]]], dtype=torch.float64)
    batch = torch.cat([a, torch.cat([b, garbage], dim=1)])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    got = head_similarity(batch, mask)
    torch.testing.assert_close(got, torch.tensor([1 / math.sqrt(2), 8 / 17], dtype=torch.float64), rtol=0, atol=1e-15)


def test_gradient_matches_the_formula():
    # d cos(a, b) / d a = b / (|a||b|) - cos * a / |a|^2
    a = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    head_similarity(torch.stack([a, b], dim=-1).unsqueeze(0)).sum().backward()
    ad = a.detach()
    cos = ad @ b / (ad.norm() * b.norm())
    expected = b / (ad.norm() * b.norm()) - cos * ad / ad.norm() ** 2
    torch.testing.assert_close(a.grad, expected, rtol=0, atol=1e-14)


def test_objective_adds_the_weighted_similarity_and_trains_the_attention():
    scores = torch.zeros(2, 4, 2, requires_grad=True)  # uniform heads: similarity 1
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    attention = torch.softmax(scores.masked_fill(~mask.unsqueeze(-1), float("-inf")), dim=1)
    logits = torch.zeros(2)
    target = {"label": torch.tensor([1.0, 0.0]), "mask": mask}
    plain_objective = MILObjective(ng_weight=0.0)
    plain = plain_objective((logits, attention), target)
    assert "head_similarity" not in plain_objective.last_terms  # off by default
    obj = MILObjective(ng_weight=0.0, head_diversity_weight=0.5)
    total = obj((logits, attention), target)
    assert total.item() == pytest.approx(plain.item() + 0.5 * 1.0, abs=1e-6)
    assert obj.last_terms["head_similarity"] == pytest.approx(1.0, abs=1e-6)
    total.backward()
    # identical uniform heads are a stationary point of the cosine (b / (|a||b|) - cos a / |a|^2 = 0)
    torch.testing.assert_close(scores.grad, torch.zeros_like(scores), rtol=0, atol=1e-7)
    scores2 = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 2.0]]]).requires_grad_()
    att2 = torch.softmax(scores2, dim=1)
    MILObjective(ng_weight=0.0, head_diversity_weight=1.0)(
        (torch.zeros(1), att2), {"label": torch.ones(1), "mask": torch.ones(1, 4, dtype=torch.bool)}
    ).backward()
    # gradient descent lowers head 0 on slice 4 (head 1's focus) and head 1 on slice 1
    assert scores2.grad[0, 3, 0] > 0 and scores2.grad[0, 0, 1] > 0
    with pytest.raises(ValueError, match="head_diversity_weight must be >= 0, got -1"):
        MILObjective(head_diversity_weight=-1)
