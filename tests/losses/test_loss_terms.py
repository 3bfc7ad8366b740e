"""``LossTerms``: the objective's logged terms are converted to floats only when read, once."""

from __future__ import annotations

import pytest
import torch

from monai_ng.losses.mil_objective import LossTerms, MILObjective


class _CountingScalar:
    """Stands in for a 0-d tensor and counts its conversions to float (each one would be a GPU wait)."""

    def __init__(self, value: float) -> None:
        self.value, self.calls = value, 0

    def __float__(self) -> float:
        self.calls += 1
        return self.value


def test_terms_convert_lazily_and_once():
    a, b = _CountingScalar(1.5), _CountingScalar(-2.0)
    terms = LossTerms({"bce": a, "ng": b})
    assert (a.calls, b.calls) == (0, 0)  # building the mapping reads nothing
    assert list(terms) == ["bce", "ng"] and len(terms) == 2 and "l1" not in terms
    assert (a.calls, b.calls) == (0, 0)  # nor do keys, length and membership
    assert terms["bce"] == 1.5 and terms["bce"] == 1.5
    assert (a.calls, b.calls) == (1, 0)  # one conversion, cached; the other term untouched
    assert dict(terms) == {"bce": 1.5, "ng": -2.0}
    assert b.calls == 1
    with pytest.raises(KeyError):
        terms["l1"]


def test_objective_last_terms_match_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, requires_grad=True)
    attention = torch.softmax(torch.randn(3, 5), dim=1)
    mask = torch.ones(3, 5, dtype=torch.bool)
    labels = torch.tensor([1.0, 0.0, 1.0])
    obj = MILObjective(ng_weight=0.5)
    loss = obj((logits, attention), {"label": labels, "mask": mask})
    terms = obj.last_terms
    assert isinstance(terms, LossTerms) and set(terms) == {"bce", "ng", "total"}
    assert all(isinstance(v, float) for v in terms.values())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert terms["bce"] == pytest.approx(float(bce.detach()), rel=1e-6)
    assert terms["total"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert terms["total"] == pytest.approx(terms["bce"] + 0.5 * terms["ng"], rel=1e-6)
    assert MILObjective().last_terms == {}  # nothing before the first call
