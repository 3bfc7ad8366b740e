"""ScanResult / SliceScore validation, ranking, JSON round trip, and the NG reference fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from monai_ng.losses.normal_guidance import normal_reference
from monai_ng.reporting.scan_result import SCHEMA, ScanResult, SliceScore, check_scan_id, fit_normal_reference


def _slices(scores, z=None, uids=None):
    return tuple(
        SliceScore(i, s, None if z is None else z[i], None if uids is None else uids[i]) for i, s in enumerate(scores)
    )


def test_top_k_orders_by_score_then_lower_index(scan_result):
    # scores (0.02, 0.05, 0.30, 0.20, 0.20, 0.12, 0.08, 0.03): slices 3 and 4 tie at 0.20 -> 3 first
    assert [s.index for s in scan_result.top_k(5)] == [2, 3, 4, 5, 6]
    assert [s.index for s in scan_result.top_k(2)] == [2, 3]
    assert [s.index for s in scan_result.top_k(100)] == [2, 3, 4, 5, 6, 1, 7, 0]  # k > N: every slice


def test_all_equal_scores_rank_by_index():
    r = ScanResult("s", 0.1, _slices([0.25] * 4))
    assert [s.index for s in r.top_k(3)] == [0, 1, 2]


@pytest.mark.parametrize("k, exc", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_top_k_rejects_bad_k(scan_result, k, exc):
    with pytest.raises(exc, match="k must be"):
        scan_result.top_k(k)


def test_finding_uses_threshold_inclusively():
    s = _slices([1.0])
    assert ScanResult("s", 0.5, s, threshold=0.5).finding is True
    assert ScanResult("s", 0.4999, s, threshold=0.5).finding is False
    assert ScanResult("s", 0.2, s, threshold=0.2).finding is True


def test_json_round_trip_is_exact(scan_result):
    data = scan_result.to_json_dict(top_k=3)
    assert data["schema"] == SCHEMA
    assert data["finding"] is True and data["num_slices"] == 8
    assert data["top_k"] == {"k": 3, "indices": [2, 3, 4]}
    assert data["slices"][2] == {
        "index": 2,
        "score": 0.30,
        "z_mm": -30.0,
        "sop_instance_uid": scan_result.slices[2].sop_instance_uid,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
    }
    back = ScanResult.from_json_dict(json.loads(json.dumps(data)))
    assert back == scan_result
    assert back.slices == scan_result.slices


def test_json_round_trip_keeps_awkward_floats_bit_exact():
    scores = [1 / 3, 2 / 3 * 1e-300, 0.1 + 0.2, 5e-324]
    r = ScanResult("s", 1 / 7, _slices(scores, z=[-0.1, 0.0, 1e-9, 123.456789012345678]))
    back = ScanResult.from_json_dict(json.loads(json.dumps(r.to_json_dict())))
    assert [s.score for s in back.slices] == scores
    assert back.scan_probability == 1 / 7
    assert back == r


def test_from_json_rejects_tampered_derived_fields(scan_result):
    data = scan_result.to_json_dict(top_k=2)
    with pytest.raises(ValueError, match="finding=False disagrees"):
        ScanResult.from_json_dict({**data, "finding": False})
    with pytest.raises(ValueError, match="top_k indices \\[3, 2\\] disagree"):
        ScanResult.from_json_dict({**data, "top_k": {"k": 2, "indices": [3, 2]}})
    with pytest.raises(ValueError, match="num_slices=7"):
        ScanResult.from_json_dict({**data, "num_slices": 7})
    with pytest.raises(ValueError, match="unknown scan result schema"):
        ScanResult.from_json_dict({**data, "schema": "other/9"})
    with pytest.raises(ValueError, match="lacks slices"):
        ScanResult.from_json_dict({k: v for k, v in data.items() if k != "slices"})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_is_refused(bad):
    with pytest.raises(ValueError, match="score of slice 1 must be finite"):
        ScanResult("s", 0.5, _slices([0.1, bad, 0.2]))


def test_negative_score_is_refused():
    with pytest.raises(ValueError, match="score of slice 0 must be >= 0"):
        SliceScore(0, -0.01)


def test_unsorted_indices_are_refused():
    slices = (SliceScore(0, 0.1), SliceScore(2, 0.1), SliceScore(1, 0.1))
    with pytest.raises(ValueError, match=r"indices must be 0\.\.2 .* slices\[1\]\.index is 2"):
        ScanResult("s", 0.5, slices)
    with pytest.raises(ValueError, match=r"slices\[0\]\.index is 1"):
        ScanResult("s", 0.5, (SliceScore(1, 0.1),))


def test_z_must_increase_inferior_to_superior():
    with pytest.raises(ValueError, match="z_mm must increase strictly .* slice 2 is at 5.0 mm after slice 1 at 5.0"):
        ScanResult("s", 0.5, _slices([0.1, 0.1, 0.1], z=[0.0, 5.0, 5.0]))
    with pytest.raises(ValueError, match="z_mm must be given for every slice or for none"):
        ScanResult("s", 0.5, (SliceScore(0, 0.1, 1.0), SliceScore(1, 0.1)))


def test_uids_all_or_none_unique_and_wellformed():
    with pytest.raises(ValueError, match="sop_instance_uid must be given for every slice or for none"):
        ScanResult("s", 0.5, (SliceScore(0, 0.1, sop_instance_uid="1.2.3"), SliceScore(1, 0.1)))
    with pytest.raises(ValueError, match="slices 0 and 1 share SOPInstanceUID 1.2.3"):
        ScanResult("s", 0.5, _slices([0.1, 0.1], uids=["1.2.3", "1.2.3"]))
    with pytest.raises(ValueError, match="is not a DICOM UID"):
        SliceScore(0, 0.1, sop_instance_uid="1.02.3")
    with pytest.raises(ValueError, match="study_instance_uid 'abc' is not a DICOM UID"):
        ScanResult("s", 0.5, _slices([0.1]), study_instance_uid="abc")


@pytest.mark.parametrize("p", [-0.01, 1.01, math.nan])
def test_probability_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError, match=r"scan_probability must be in \[0, 1\]"):
        ScanResult("s", p, _slices([0.1]))


def test_empty_and_wrongly_typed_slices_are_refused():
    with pytest.raises(ValueError, match="slices must not be empty"):
        ScanResult("s", 0.5, ())
    with pytest.raises(TypeError, match=r"slices\[0\] must be a SliceScore, got dict"):
        ScanResult("s", 0.5, ({"index": 0, "score": 0.1},))


@pytest.mark.parametrize(
    "scan_id, message",
    [
        ("a/b", "contains /"),
        ("..", "must not start with '.'"),
        ("../x", "contains /"),
        ("a\\b", "contains \\\\"),
        (".hidden", "must not start with '.'"),
        ("", "must not be empty"),
        ("x" * 129, "at most 128"),
        ("a\nb", "control character"),
        (" a", "whitespace"),
        ("a:b", "contains :"),
    ],
)
def test_unsafe_scan_ids_are_refused(scan_id, message):
    with pytest.raises(ValueError, match=message):
        check_scan_id(scan_id)
    with pytest.raises(ValueError, match=message):
        ScanResult(scan_id, 0.5, _slices([0.1]))


def test_safe_scan_ids_pass():
    for scan_id in ("ID_0a1b2c3d", "scan-001", "a..b", "CQ500 CT1"):
        assert check_scan_id(scan_id) == scan_id
    with pytest.raises(TypeError, match="scan_id must be a str"):
        check_scan_id(7)


def test_fit_normal_reference_hand_computed():
    # a = (1, 0, 1): mu = 1, var = ((0-1)^2 + (2-1)^2) / 2 = 1 -> r ∝ (e^-1/2, 1, e^-1/2)
    mu, sigma, r = fit_normal_reference([1.0, 0.0, 1.0])
    e = math.exp(-0.5)
    assert mu == 1.0 and sigma == 1.0
    np.testing.assert_allclose(r, [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)], rtol=1e-15)
    # all mass on one slice: variance clamped to eps -> the reference is that slice
    mu, sigma, r = fit_normal_reference([0.0, 0.0, 2.0, 0.0])
    assert mu == 2.0 and sigma == pytest.approx(1e-3)
    np.testing.assert_allclose(r, [0.0, 0.0, 1.0, 0.0], atol=1e-300)
    # un-normalised attention gives the same fit as normalised
    a = np.array([0.2, 0.5, 0.9, 0.4])
    for x, y in zip(fit_normal_reference(a)[:2], fit_normal_reference(a / a.sum())[:2], strict=True):
        assert x == pytest.approx(y, rel=1e-14)


def test_fit_normal_reference_matches_the_loss_reference():
    rng = np.random.default_rng(2026)
    for n in (1, 2, 7, 40, 300):
        logits = rng.normal(scale=2.0, size=n)
        a = np.exp(logits) / np.exp(logits).sum()
        mu, sigma, r = fit_normal_reference(a)
        ref = normal_reference(torch.tensor(a, dtype=torch.float64).view(1, n)).view(n).numpy()
        np.testing.assert_allclose(r, ref, rtol=1e-10, atol=1e-300)
        assert r.sum() == pytest.approx(1.0, abs=1e-12)
        # the loss indexes slices from 1: same reference, mean shifted by one
        j1 = np.arange(1, n + 1)
        assert mu == pytest.approx(float((j1 * a).sum() / a.sum()) - 1.0, abs=1e-9)
        assert sigma == pytest.approx(math.sqrt(max(float(((j1 - (mu + 1)) ** 2 * a).sum() / a.sum()), 1e-6)))


@pytest.mark.parametrize(
    "scores, message",
    [
        ([], "non-empty 1-D"),
        ([[0.1, 0.2]], "non-empty 1-D"),
        ([0.1, math.nan], "must be finite"),
        ([0.1, -0.2], "must be >= 0"),
        ([0.0, 0.0], "sum to 0"),
    ],
)
def test_fit_normal_reference_bad_inputs(scores, message):
    with pytest.raises(ValueError, match=message):
        fit_normal_reference(scores)
