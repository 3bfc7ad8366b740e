"""Tests of the ``ct_regime`` synthetic kind: AR(rho) nuisance along slices, anatomical distractors, region presets."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from monai_ng.cli import main as cli_main
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.synthetic import (
    REGION_PRESETS,
    CTRegimeParams,
    bayes_scan_posterior,
    generate_synthetic,
    make_params,
    write_synthetic_store,
)

# no distractors, no lesion: the nuisance alone
PLAIN = {"dim": 32, "anatomy_rank": 0, "distractor_positions": (), "distractor_widths": (), "delta": 0.0}


def _lag1(x: np.ndarray, offsets: np.ndarray) -> float:
    """Pooled lag-1 autocorrelation of zero-mean unit-variance rows within bags."""
    x = x.astype(np.float64)
    inner = np.ones(x.shape[0], dtype=bool)
    inner[offsets] = False  # row j pairs with j - 1 only inside a bag
    return float((x[1:][inner[1:]] * x[:-1][inner[1:]]).mean() / (x * x).mean())


@pytest.mark.parametrize("rho", [0.3, 0.9])
def test_ar_noise_has_the_requested_lag1_correlation_and_unit_variance(rho):
    d = generate_synthetic("ct_regime", 60, 1, region=None, min_len=200, max_len=200, r=5, noise_ar=rho, **PLAIN)
    assert abs(_lag1(d.embeddings, d.offsets) - rho) < 0.01
    assert abs(d.embeddings.var() - 1.0) < 0.03
    # stationary: the first slice of each bag has the same variance as the rest
    assert abs(d.embeddings[d.offsets].var() - 1.0) < 0.1
    # independent across bags: the last row of a bag does not predict the first of the next
    ends, starts = d.offsets[1:] - 1, d.offsets[1:]
    assert abs(float((d.embeddings[ends] * d.embeddings[starts]).mean())) < 0.1


def test_rho_zero_without_distractors_is_ct_like_bit_for_bit():
    same = {"min_len": 20, "max_len": 60, "r": (3, 10), "centre_sd_frac": 1 / 6, "dim": 16, "anatomy_rank": 4}
    a = generate_synthetic("ct_like", 300, 7, **same)
    b = generate_synthetic(
        "ct_regime", 300, 7, region=None, noise_ar=0.0, distractor_positions=(), distractor_widths=(), **same
    )
    for name in ("embeddings", "n_slices", "labels", "slice_labels", "block_starts", "block_lengths"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.lesion_direction, b.lesion_direction)


# sha256 (first 16 hex) of the embedding bytes written by the generator before ct_regime existed (300 bags, seed 7);
# anatomy_rank=0 keeps BLAS out of the bytes, so they are the same on every machine
OLD_BYTES = {
    ("shifted_mean", 0): "17eeee36a5bc5506",
    ("ct_like", 0): "7ba77b188d8316bf",
    ("multi_lesion", 0): "ca26050613ed07ec",
}


@pytest.mark.parametrize(("kind", "rank"), list(OLD_BYTES))
def test_existing_kinds_store_bytes_unchanged(tmp_path, kind, rank):
    kw = {"dim": 16} if kind == "shifted_mean" else {"dim": 16, "anatomy_rank": rank}
    d = generate_synthetic(kind, 300, 7, **kw)
    assert hashlib.sha256(d.embeddings.tobytes()).hexdigest()[:16] == OLD_BYTES[(kind, rank)]
    store = write_synthetic_store(kind, tmp_path / "s", 300, seed=7, **kw)
    assert hashlib.sha256(np.asarray(store.embeddings).tobytes()).hexdigest()[:16] == OLD_BYTES[(kind, rank)]
    assert "noise_ar" not in store.metadata["synthetic"]


def test_distractors_sit_at_their_sites_in_negative_scans_too():
    p = {"dim": 32, "anatomy_rank": 4, "noise_std": 0.0, "delta": 0.0, "position_jitter": 0.0, "noise_ar": 0.0}
    d = generate_synthetic("ct_regime", 40, 3, region="head", distractor_amp_sd=0.0, **p)
    pos, wid = REGION_PRESETS["head"]["distractor_positions"], REGION_PRESETS["head"]["distractor_widths"]
    assert d.distractor_weight.shape == (d.embeddings.shape[0], len(pos))
    dirs = d.distractor_directions
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(len(pos)) * 0.64 + 0.36, atol=1e-9)  # cos 0.6 with the lesion
    np.testing.assert_allclose(dirs @ d.lesion_direction, 0.6, atol=1e-9)
    for i in np.flatnonzero(d.labels == 0)[:10]:
        x, sl = d.bag(i)
        assert sl.sum() == 0
        s = len(sl)
        u = (np.arange(s) + 0.5) / s
        o = int(d.offsets[i])
        for k, (c, w) in enumerate(zip(pos, wid, strict=True)):
            inside = np.abs(u - c) < w / 2
            np.testing.assert_array_equal(d.distractor_weight[o : o + s, k] > 0, inside)
            peak = int(np.argmin(np.abs(u - c)))
            assert d.distractor_weight[o + peak, k] > 0.5 * 2.5  # nearest slice centre within half a slice
        # the embedding is anatomy + distractors only: the lesion direction is hit exactly at the sites
        proj = x.astype(np.float64) @ d.lesion_direction
        on_site = d.distractor_weight[o : o + s].sum(axis=1) > 0
        assert (proj[on_site] > 0).all() and np.allclose(proj[~on_site], 0.0, atol=1e-5)


@pytest.mark.parametrize("region", ["head", "chest", "abdomen"])
def test_region_lengths_and_labels(region):
    d = generate_synthetic("ct_regime", 120, 2, region=region, dim=8, anatomy_rank=2)
    target = {"head": 752_803 / 21_744, "chest": 1_790_594 / 7_279, "abdomen": 1_500_653 / 4_711}[region]
    pre = REGION_PRESETS[region]
    assert d.n_slices.min() >= pre["min_len"] and d.n_slices.max() <= pre["max_len"]
    assert (pre["min_len"] + pre["max_len"]) / 2 == pytest.approx(target, rel=0.01)  # the paper's mean scan length
    assert abs(d.n_slices.mean() - target) < 0.15 * target
    assert d.params.region == region and d.params.noise_ar == pre["noise_ar"]
    for i in range(len(d)):
        _, sl = d.bag(i)
        assert bool(sl.any()) == bool(d.labels[i])
        if d.labels[i]:
            s0, n = int(d.block_starts[i, 0]), int(d.block_lengths[i, 0])
            assert pre["r"][0] <= n <= pre["r"][1] and sl[s0 : s0 + n].all() and sl.sum() == n
    assert d.scan_ids[0].startswith("cr-")


def test_presets_are_overridable_and_round_trip_through_the_store(tmp_path):
    store = write_synthetic_store(
        "ct_regime", tmp_path / "s", 12, seed=1, region="head", dim=16, anatomy_rank=2, noise_ar=0.5, max_len=30
    )
    meta = json.loads((tmp_path / "s" / "store.json").read_text())["synthetic"]
    assert meta["region"] == "head" and meta["noise_ar"] == 0.5 and meta["max_len"] == 30
    assert meta["distractor_positions"] == list(REGION_PRESETS["head"]["distractor_positions"])
    rebuilt = make_params("ct_regime", **{k: v for k, v in meta.items() if k not in ("kind", "seed", "n_bags")})
    assert rebuilt == store_params(store)
    again = generate_synthetic(
        "ct_regime", 12, 1, **{k: v for k, v in meta.items() if k not in ("kind", "seed", "n_bags")}
    )
    np.testing.assert_array_equal(np.asarray(store.embeddings), again.embeddings)


def store_params(store: EmbeddingStore) -> CTRegimeParams:
    meta = dict(store.metadata["synthetic"])
    for k in ("kind", "seed", "n_bags"):
        meta.pop(k)
    return make_params("ct_regime", **meta)


def test_bayes_refuses_ct_regime_clearly(tmp_path):
    d = generate_synthetic("ct_regime", 6, 1, region="head", dim=16, anatomy_rank=2)
    with pytest.raises(ValueError, match="ShiftedMean bags only"):
        bayes_scan_posterior(d)
    store = write_synthetic_store("ct_regime", tmp_path / "s", 6, seed=1, region="head", dim=16, anatomy_rank=2)
    with pytest.raises(ValueError, match="ct_regime"):
        bayes_scan_posterior(store)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"region": "knee"}, "region"),
        ({"noise_ar": 1.0}, "noise_ar"),
        ({"noise_ar": -0.1}, "noise_ar"),
        ({"distractor_positions": (0.5,), "distractor_widths": (0.1, 0.2)}, "differ in length"),
        ({"distractor_widths": (0.0, 0.1, 0.1)}, "distractor_widths"),
        ({"distractor_cosine": 1.0}, "distractor_cosine"),
        ({"centre_frac": 1.5}, "centre_frac"),
        ({"direction": "first_k"}, "direction='random'"),
        ({"dim": 8, "anatomy_rank": 6}, "distractors must be <= dim"),
    ],
)
def test_bad_regime_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        make_params("ct_regime", **params)


def test_cli_region_and_overrides(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["synthetic", "--kind", "ct_regime", "--region", "abdomen", "--out", str(out), "--n-bags", "6"]
    argv += ["--dim", "16", "--anatomy-rank", "2", "--noise-ar", "0.7", "--distractor-positions", "0.2,0.8"]
    argv += ["--distractor-widths", "0.1,0.1", "--min-len", "200", "--max-len", "210"]
    assert cli_main(argv) == 0
    meta = EmbeddingStore(out).metadata["synthetic"]
    assert meta["region"] == "abdomen" and meta["noise_ar"] == 0.7 and meta["distractor_positions"] == [0.2, 0.8]
    assert meta["r"] == list(REGION_PRESETS["abdomen"]["r"]) and meta["max_len"] == 210
    assert "kind=ct_regime" in capsys.readouterr().out
    bad = ["synthetic", "--kind", "ct_like", "--region", "head", "--out", str(tmp_path / "t"), "--n-bags", "4"]
    assert cli_main(bad) == 2
    assert "region" in capsys.readouterr().err
