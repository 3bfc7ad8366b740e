"""Tests for slicing / resampling a CT volume into a slice stack (monai_ng.transforms.slice_stack)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_ng.transforms.slice_stack import (
    CTSliceStack,
    CTSliceStackd,
    map_slice_labels,
    pad_to_square_min,
    resample_slices,
    slice_resampling_weights,
)
from monai_ng.transforms.windowing import CTWindowsd


def _volume(x: int = 6, y: int = 4, z: int = 5, dz: float = 2.0) -> MetaTensor:
    """[1, X, Y, Z] volume whose value encodes (slice, row, col): 1000 * k + 10 * j + i, RAS-like affine."""
    i, j, k = np.meshgrid(np.arange(x), np.arange(y), np.arange(z), indexing="ij")
    data = torch.as_tensor((1000 * k + 10 * j + i)[None], dtype=torch.float32)
    affine = torch.diag(torch.tensor([-0.5, -0.5, dz, 1.0], dtype=torch.float64))
    meta = {
        "slice_positions": [10.0 + dz * n for n in range(z)],
        "slice_sop_uids": [f"1.2.{n}" for n in range(z)],
        "slice_files": [f"f{n}.dcm" for n in range(z)],
        "filename_or_obj": "phantom",
    }
    return MetaTensor(data, affine=affine, meta=meta)


def test_stack_order_orientation_and_meta():
    vol = _volume()
    stack = CTSliceStack(spatial_size=(6, 6), pad_value=-5.0)(vol)
    assert stack.shape == (5, 1, 6, 6)
    # no resize needed after padding 6x4 -> 6x6; H runs over rows (Y), W over columns (X); Y padded 1 each side
    for k in range(5):
        assert torch.all(stack[k, 0, 0, :] == -5.0) and torch.all(stack[k, 0, 5, :] == -5.0)
        expected = 1000 * k + 10 * np.arange(4)[:, None] + np.arange(6)[None, :]
        assert np.array_equal(stack[k, 0, 1:5, :].numpy(), expected)
    assert stack.meta["slice_sop_uids"] == [f"1.2.{n}" for n in range(5)]
    assert stack.meta["slice_positions"] == [10.0, 12.0, 14.0, 16.0, 18.0]
    assert stack.meta["stack_layout"] == "NCHW" and stack.meta["slice_spacing_mm"] == 2.0


def test_pad_with_slice_minimum_and_resize_shape():
    vol = _volume()
    padded = pad_to_square_min(vol.as_tensor())
    assert padded.shape == (1, 6, 6, 5)
    for k in range(5):
        assert torch.all(padded[0, :, 0, k] == 1000 * k) and torch.all(padded[0, :, 5, k] == 1000 * k)
    assert torch.all(pad_to_square_min(vol.as_tensor(), per_slice=False)[0, :, 0, :] == 0)
    stack = CTSliceStack(spatial_size=224)(vol)
    assert stack.shape == (5, 1, 224, 224)
    for k in range(5):  # in-plane resize stays within each slice's range (no mixing across slices, up to fp error)
        assert 1000 * k - 1e-3 <= float(stack[k].min()) and float(stack[k].max()) <= 1000 * k + 35 + 1e-3


def test_z_weights_by_hand():
    # 4 slices of 2 mm -> 4 mm slabs: pairs averaged
    w, centres = slice_resampling_weights(4, 2.0, 4.0)
    np.testing.assert_allclose(w, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(centres, [0.5, 2.5])
    # 3 slices of 2 mm (6 mm) -> 3 mm slabs: [0,3) covers slice0 (2 mm) + slice1 (1 mm)
    w, _ = slice_resampling_weights(3, 2.0, 3.0)
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    # upsampling 2 slices of 4 mm -> 2 mm: each source slice split in two
    w, centres = slice_resampling_weights(2, 4.0, 2.0)
    np.testing.assert_allclose(w, [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(centres, [-0.25, 0.25, 0.75, 1.25])


def test_label_mapping_any_rule_by_hand():
    w, _ = slice_resampling_weights(6, 1.0, 2.5)  # 6 mm -> round(2.4) = 2 slabs of 2.5 mm: [0,2.5) and [2.5,5)
    np.testing.assert_allclose(w[0], [0.4, 0.4, 0.2, 0, 0, 0])
    np.testing.assert_allclose(w[1], [0, 0, 0.2, 0.4, 0.4, 0])
    assert map_slice_labels([0, 0, 1, 0, 0, 0], w).tolist() == [1, 1]  # slice 2 straddles both slabs
    assert map_slice_labels([0, 0, 0, 0, 0, 1], w).tolist() == [0, 0]  # slice 5 lies beyond the last slab
    assert map_slice_labels([1, 0, 0, 0, 0, 0], w).tolist() == [1, 0]
    with pytest.raises(ValueError, match="labels"):
        map_slice_labels([0, 1], w)


def test_z_resampling_values_positions_and_affine():
    vol = _volume(z=6, dz=2.0)
    stack, labels = CTSliceStack(spatial_size=(6, 6), slice_thickness=4.0, pad_value=0.0).with_labels(
        vol, np.array([0, 0, 0, 1, 0, 0])
    )
    assert stack.shape == (3, 1, 6, 6) and labels.tolist() == [0, 1, 0]
    # slab j averages source slices 2j, 2j+1: value 1000 * (2j + 0.5) + ...
    np.testing.assert_allclose(stack[:, 0, 1, 0].numpy(), [500.0, 2500.0, 4500.0])
    assert stack.meta["slice_positions"] == [11.0, 15.0, 19.0]
    assert stack.meta["slice_source_indices"] == [[0, 1], [2, 3], [4, 5]]
    assert stack.meta["slice_sop_uids"] == ["1.2.0", "1.2.2", "1.2.4"]
    affine = stack.meta["volume_affine"]
    assert float(affine[2, 2]) == pytest.approx(4.0) and float(affine[2, 3]) == pytest.approx(1.0)  # z of slab 0


def test_resample_slices_matches_dense_matmul():
    rng = np.random.default_rng(0)
    vol = torch.as_tensor(rng.normal(size=(2, 3, 3, 11)), dtype=torch.float32)
    for t in (0.7, 1.0, 2.5, 4.0):
        w, _ = slice_resampling_weights(11, 1.25, t)
        dense = torch.einsum("cxyn,mn->cxym", vol.double(), torch.as_tensor(w))
        assert torch.allclose(resample_slices(vol, w).double(), dense, atol=1e-5)


def test_in_plane_spacing_uses_monai_spacing():
    vol = _volume(x=8, y=8, z=2)  # 0.5 mm pixels
    stack = CTSliceStack(spatial_size=(4, 4), pixel_spacing=1.0)(vol)
    assert stack.shape == (2, 1, 4, 4)
    assert torch.allclose(stack.meta["volume_affine"][:2, :2].abs(), torch.eye(2, dtype=torch.float64))


def test_composes_with_monai_compose_and_windows():
    pipe = Compose(
        [
            CTSliceStackd("image", label_key="slice_labels", spatial_size=8, slice_thickness=4.0),
            CTWindowsd("image", windows="head", channel_dim=1),
        ]
    )
    vol = _volume(z=6)
    vol = vol - 3000.0  # bring some values into the head windows
    out = pipe({"image": vol, "slice_labels": [1, 0, 0, 0, 0, 0]})
    assert out["image"].shape == (3, 3, 8, 8) and out["slice_labels"].tolist() == [1, 0, 0]
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0


def test_composes_with_project_loader(tmp_path):
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series
    from monai_ng.transforms import LoadCTSeries

    vol = make_phantom_volume("head", 6, size=20, seed=0)
    write_dicom_series(vol, tmp_path, patient_id="P", seed=0)
    stack = CTSliceStack(spatial_size=20)(LoadCTSeries()(str(tmp_path)))
    assert np.array_equal(stack[:, 0].numpy(), vol.hu.astype(np.float32))  # same orientation as pixel_array


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_size": 0}, "spatial_size"),
        ({"pixel_spacing": -1.0}, "pixel_spacing"),
        ({"slice_thickness": 0.0}, "slice_thickness"),
        ({"pad_value": "median"}, "pad_value"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CTSliceStack(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[C, X, Y, Z\]"):
        CTSliceStack()(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="phantom: 2 slice labels for a volume of 5 slices"):
        CTSliceStack().with_labels(_volume(), [0, 1])


def test_slice_major_and_slice_fastest_layouts_agree():
    rng = np.random.default_rng(1)
    slice_major = torch.as_tensor(rng.normal(size=(7, 10, 12)), dtype=torch.float32)  # [Z, Y, X] in memory
    affine = torch.tensor([[-0.7, 0, 0, 5.0], [0, -0.7, 0, 3.0], [0, 0, 2.0, -40.0], [0, 0, 0, 1]], dtype=torch.float64)
    view = MetaTensor(slice_major.permute(2, 1, 0)[None], affine=affine)  # [1, X, Y, Z] view, no copy
    dense = MetaTensor(view.as_tensor().contiguous(), affine=affine)  # slice axis fastest
    assert view.as_tensor().permute(3, 0, 2, 1).is_contiguous() and not dense.permute(3, 0, 2, 1).is_contiguous()
    transform = CTSliceStack(spatial_size=(12, 12), pad_value="volume_min")
    a, b = transform(view), transform(dense)
    assert a.shape == b.shape == (7, 1, 12, 12)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.meta["volume_affine"], b.meta["volume_affine"], atol=1e-9)
    transform = CTSliceStack(spatial_size=(5, 5))
    a, b = transform(view), transform(dense)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.meta["volume_affine"], b.meta["volume_affine"], atol=1e-9)
    square = MetaTensor(view.as_tensor()[:, :10], affine=affine)  # 10 x 10 slices: no padding
    a, b = transform(square), transform(MetaTensor(square.as_tensor().contiguous(), affine=affine))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.meta["volume_affine"], b.meta["volume_affine"], atol=1e-9)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "area", "bicubic"])
def test_slice_major_resize_equals_monai_resize(mode):
    from monai.transforms import Resize

    rng = np.random.default_rng(2)
    slice_major = torch.as_tensor(rng.normal(size=(3, 20, 20)) * 300, dtype=torch.float32)  # [Z, Y, X]
    view = MetaTensor(slice_major.permute(2, 1, 0)[None], affine=torch.eye(4, dtype=torch.float64))
    stack = CTSliceStack(spatial_size=(9, 7), mode=mode)(view)
    expected = Resize(spatial_size=(9, 7), mode=mode)(MetaTensor(slice_major)).as_tensor()  # slices as channels
    assert stack.shape == (3, 1, 9, 7)
    assert torch.equal(stack[:, 0].as_tensor(), expected)  # bit-identical
