"""Tests for CT windowing and the paper's HU z-score (monai_ng.transforms.windowing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_ng.transforms.windowing import (
    NAMED_WINDOWS,
    WINDOW_PRESETS,
    CTWindows,
    CTWindowsd,
    HUZScore,
    HUZScored,
    apply_windows,
    resolve_windows,
    zscore_hu,
)


def test_single_window_hand_values():
    # brain window 40/80: [0, 80] HU -> [0, 1]
    hu = np.array([[-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 3000.0]])
    out = apply_windows(hu, "brain")
    assert out.dtype == np.float32 and out.shape == (1, 7)
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-7)
    # lung -600/1500: lower = -1350, upper = 150; -1000 -> 350/1500
    np.testing.assert_allclose(apply_windows(np.array([[-1000.0]]), (-600, 1500))[0, 0], 350 / 1500, rtol=1e-6)


def test_presets_are_the_documented_windows():
    assert resolve_windows("head") == ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))
    assert resolve_windows("chest") == ((100.0, 700.0), (-600.0, 1500.0), (40.0, 400.0))
    assert resolve_windows("abdomen")[0] == (50.0, 400.0)
    assert all(len(resolve_windows(p)) == 3 for p in WINDOW_PRESETS)
    assert resolve_windows(["lung", (10, 20)]) == (NAMED_WINDOWS["lung"], (10.0, 20.0))
    assert resolve_windows((10, 20)) == ((10.0, 20.0),)


def test_multi_window_stacks_channels_and_keeps_meta():
    hu = MetaTensor(torch.tensor([[[[-100.0, 0.0], [40.0, 300.0]]]]), meta={"series_uid": "1.2.3"})  # [1, 1, 2, 2]
    out = CTWindows("head")(hu)
    assert isinstance(out, MetaTensor) and out.shape == (3, 1, 2, 2) and out.meta["series_uid"] == "1.2.3"
    # channel 1: subdural 80/200 -> lower -20: (hu + 20) / 200
    expected = np.clip((np.array([-100.0, 0.0, 40.0, 300.0]) + 20.0) / 200.0, 0, 1)
    np.testing.assert_allclose(out[1].reshape(-1).numpy(), expected, atol=1e-7)
    # channel 2: soft tissue 40/380 -> lower -150: (hu + 150) / 380
    expected = np.clip((np.array([-100.0, 0.0, 40.0, 300.0]) + 150.0) / 380.0, 0, 1)
    np.testing.assert_allclose(out[2].reshape(-1).numpy(), expected, atol=1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_stack_layout_channel_dim_and_equivalence():
    rng = np.random.default_rng(0)
    vol = torch.as_tensor(rng.uniform(-1100, 1500, size=(1, 5, 6, 4)), dtype=torch.float32)  # [1, X, Y, Z]
    a = CTWindows("chest")(vol)  # [3, X, Y, Z]
    stack = vol.permute(3, 0, 2, 1)  # [N, 1, H, W]
    b = CTWindows("chest", channel_dim=1)(stack)  # [N, 3, H, W]
    assert torch.equal(a.permute(3, 0, 2, 1), b)


def test_integer_input_and_dict_version():
    d = {"img": np.array([[[-24, 76]]], dtype=np.int16), "other": 1}
    out = CTWindowsd("img", windows=[(26, 100)])(d)
    np.testing.assert_allclose(out["img"], [[[0.0, 1.0]]])
    assert out["other"] == 1


def test_zscore_hand_values_and_compose():
    hu = np.array([[-1000.0, 0.0, 50.0]])
    np.testing.assert_allclose(zscore_hu(hu, mean=-500.0, std=250.0), [[-2.0, 2.0, 2.2]], rtol=1e-6)
    pipe = Compose([HUZScored("img", mean=10.0, std=2.0)])
    out = pipe({"img": torch.tensor([[10.0, 14.0, 6.0]])})["img"]
    assert torch.allclose(out, torch.tensor([[0.0, 2.0, -2.0]]))
    assert HUZScore(0.0, 1.0)(torch.zeros(1, 2, 2, 2)).shape == (1, 2, 2, 2)  # one channel in, one out


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: resolve_windows("kidney_bean"), "unknown window"),
        (lambda: resolve_windows([]), "empty"),
        (lambda: resolve_windows([(40, 0)]), "width"),
        (lambda: resolve_windows([(1, 2, 3)]), "center, width"),
        (lambda: apply_windows(np.zeros((2, 3, 3)), "brain"), "single HU channel"),
        (lambda: HUZScore(0.0, 0.0), "std"),
        (lambda: zscore_hu(np.zeros(3), 0.0, -1.0), "std"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
