"""Tests of the phantom lesion benchmark (monai_ng.data.phantom.lesion_benchmark)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from monai_ng.data.phantom import (
    HEAD_SLICES,
    MULTI_LESION,
    SINGLE_LESION,
    LesionRanges,
    head_skull_ellipse,
    insert_lesions,
    make_phantom_volume,
    place_lesion_blocks,
    write_lesion_benchmark,
)
from monai_ng.data.synthetic import REGION_PRESETS


def test_head_slices_are_the_ct_regime_head_preset():
    assert HEAD_SLICES == (REGION_PRESETS["head"]["min_len"], REGION_PRESETS["head"]["max_len"])
    assert SINGLE_LESION.extent == REGION_PRESETS["head"]["r"]
    assert SINGLE_LESION.centre_sd_frac == REGION_PRESETS["head"]["centre_sd_frac"]
    assert MULTI_LESION.min_slices() == 3 * 7 + 2 <= HEAD_SLICES[0]


def test_skull_ellipse_matches_the_head_phantom():
    vol = make_phantom_volume("head", 20, size=64, seed=1, lesion=False, noise_hu=0.0)
    z = (np.arange(20) + 0.5) / 20
    cy, ry, rx = head_skull_ellipse(z)
    axis = (np.arange(64) + 0.5) / 64 * 2 - 1
    yy, xx = axis[:, None], axis[None, :]
    for k in (0, 10, 19):
        outside = ((yy - cy[k]) / ry[k]) ** 2 + (xx / rx[k]) ** 2 > 1.0
        assert (vol.hu[k][outside] == -1000).all()  # air outside the skull
        assert (vol.hu[k][~outside] > -1000).all()
        centre = int(round((cy[k] + 1) * 32 - 0.5)), 32
        assert 0 <= vol.hu[k][centre] <= 40  # brain / CSF in the middle


def test_uniform_placement_visits_every_disjoint_placement_equally():
    # 5 slices, two 1-slice blocks, gap >= 1: the 6 placements (0,2) (0,3) (0,4) (1,3) (1,4) (2,4)
    rng = np.random.default_rng(0)
    draws = Counter(tuple(s for s, _ in place_lesion_blocks(5, [1, 1], rng, None, 1)) for _ in range(6000))
    assert set(draws) == {(0, 2), (0, 3), (0, 4), (1, 3), (1, 4), (2, 4)}
    assert all(abs(c / 6000 - 1 / 6) < 0.025 for c in draws.values())


def test_placement_keeps_lengths_order_and_gaps():
    rng = np.random.default_rng(1)
    for _ in range(300):
        lengths = [int(v) for v in rng.integers(2, 8, size=int(rng.integers(2, 4)))]
        blocks = place_lesion_blocks(24, lengths, rng, None, 1)
        assert [b - a for a, b in blocks] == lengths
        assert blocks[0][0] >= 0 and blocks[-1][1] <= 24
        assert all(blocks[i + 1][0] - blocks[i][1] >= 1 for i in range(len(blocks) - 1))
    # exactly full: no freedom left
    assert place_lesion_blocks(7, [3, 3], rng, None, 1) == [(0, 3), (4, 7)]


def test_single_block_is_centre_biased():
    rng = np.random.default_rng(2)
    centres = [np.mean(place_lesion_blocks(100, [5], rng, 0.1)[0]) - 0.5 for _ in range(3000)]
    assert abs(np.mean(centres) - 49.5) < 0.5 and abs(np.std(centres) - 10.0) < 0.6


@pytest.mark.parametrize(
    "args, match",
    [
        ((5, [3, 3], None, 1), "do not fit in 5 slices"),
        ((20, [3, 3], 0.1, 1), "places one block; got 2"),
        ((20, [], None, 1), "non-empty list"),
    ],
)
def test_placement_bad_arguments(args, match):
    n, lengths, sd, gap = args
    with pytest.raises(ValueError, match=match):
        place_lesion_blocks(n, lengths, np.random.default_rng(0), sd, gap)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"count": (3, 2)}, r"count must be a \(low, high\) pair"),
        ({"extent": (0, 3)}, "must be >= 1"),
        ({"radius_mm": (0.0, 3.0)}, "radius_mm must be positive"),
        ({"lesion_hu": (50.0, 3000.0)}, r"lesion_hu must lie in \[-1000, 2000\]"),
        ({"centre_sd_frac": 0.0}, "positive or None"),
        ({"min_gap": -1}, "min_gap must be >= 0"),
    ],
)
def test_lesion_ranges_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LesionRanges(**kwargs)


@pytest.mark.parametrize("ranges", [SINGLE_LESION, MULTI_LESION])
def test_insert_lesions_changes_exactly_the_labelled_slices_inside_the_brain(ranges):
    rng = np.random.default_rng(3)
    for _ in range(8):
        clean = make_phantom_volume("head", 30, size=64, lesion=False, rng=rng)
        vol, lesions = insert_lesions(clean, ranges, rng)
        assert ranges.count[0] <= len(lesions) <= ranges.count[1] and vol.label == 1
        changed = vol.hu != clean.hu
        assert np.array_equal(changed.any(axis=(1, 2)), vol.lesion_slices)
        assert (changed.sum(axis=(1, 2))[vol.lesion_slices] >= 5).all()  # visible on every labelled slice
        assert (clean.hu[changed] < 100).all()  # painted over brain / CSF, never skull or air
        for les in lesions:
            assert ranges.extent[0] <= les["stop"] - les["start"] <= ranges.extent[1]
            assert ranges.lesion_hu[0] <= les["lesion_hu"] <= ranges.lesion_hu[1]
            block = vol.hu[les["start"] : les["stop"]][changed[les["start"] : les["stop"]]]
            assert abs(block.mean() - les["lesion_hu"]) < 3.0  # the drawn contrast, N(0, 6 HU) noise
            assert les["radius_mm"] <= ranges.radius_mm[1] + 1e-6
        labels = vol.lesion_slices.astype(int)
        runs = int((np.diff(np.concatenate([[0], labels])) == 1).sum())
        assert runs == len(lesions)  # disjoint blocks separated by a negative slice


def test_insert_lesions_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="lesion-free volume"):
        insert_lesions(make_phantom_volume("head", 30, size=32, seed=0), SINGLE_LESION, rng)
    with pytest.raises(ValueError, match="needs a head PhantomVolume"):
        insert_lesions(make_phantom_volume("chest", 30, size=32, seed=0, lesion=False), SINGLE_LESION, rng)
    with pytest.raises(ValueError, match="cannot hold 3 lesions"):
        insert_lesions(make_phantom_volume("head", 20, size=32, seed=0, lesion=False), MULTI_LESION, rng)


def test_write_lesion_benchmark_files_labels_and_reproducibility(tmp_path):
    truth = write_lesion_benchmark(tmp_path / "a", 7, seed=5, lesions=MULTI_LESION, size=16)
    again = write_lesion_benchmark(tmp_path / "b", 7, seed=5, lesions=MULTI_LESION, size=16)
    assert list(truth["scan_id"]) == list(again["scan_id"]) and list(truth["patient_id"]) == list(again["patient_id"])
    assert truth["label"].sum() == 4  # round(0.5 * 7)
    labels = pd.read_csv(tmp_path / "a" / "labels.csv", dtype=str)
    assert list(labels.columns) == ["SeriesInstanceUID", "label", "patient_id", "slice_labels"]
    for row, t in zip(labels.itertuples(), truth.itertuples(), strict=True):
        assert row.SeriesInstanceUID == t.scan_id and int(row.label) == t.label
        sl = json.loads(row.slice_labels)
        assert sl == t.slice_labels and len(sl) == t.n_slices and HEAD_SLICES[0] <= t.n_slices <= HEAD_SLICES[1]
        assert (max(sl) == 1) == bool(t.label) and (len(t.lesions) > 0) == bool(t.label)
        # the DICOM files: one per slice, one patient, no name
        files = sorted(Path(tmp_path / "a" / "scans" / t.scan_id).glob("*.dcm"))
        assert len(files) == t.n_slices
        ds = [pydicom.dcmread(f) for f in files]
        ds.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        assert {d.PatientID for d in ds} == {t.patient_id} and not any("PatientName" in d for d in ds)
    stored = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert stored["settings"]["lesions"]["count"] == [2, 3] and len(stored["scans"]) == 7


def test_write_lesion_benchmark_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_scans must be an integer >= 2"):
        write_lesion_benchmark(tmp_path, 1)
    with pytest.raises(ValueError, match="positive_rate"):
        write_lesion_benchmark(tmp_path, 4, positive_rate=1.0)
    with pytest.raises(ValueError, match=r"the shortest scan \(20\) cannot hold 3 lesions"):
        write_lesion_benchmark(tmp_path, 4, lesions=MULTI_LESION, slices=(20, 30))
