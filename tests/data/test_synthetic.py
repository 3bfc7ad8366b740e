"""Tests of the synthetic MIL benchmarks (ShiftedMean, CT-like, multi-lesion) and the ShiftedMean Bayes ceiling."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.synthetic import (
    SYNTHETIC_KINDS,
    bayes_scan_posterior,
    bayes_slice_posterior,
    generate_synthetic,
    make_params,
    shifted_mean_posteriors,
    write_synthetic_store,
)

SMALL = {"dim": 16}
CT_SMALL = {"dim": 16, "anatomy_rank": 4}


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of ones in a 0/1 vector."""
    padded = np.concatenate([[0], mask.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _small(kind: str, n: int = 40, seed: int = 3, **kw):
    params = dict(SMALL if kind == "shifted_mean" else CT_SMALL)
    if kind == "ct_regime":  # the ct_like bag sizes and blocks, with the regime's AR noise and distractors
        params.update(region=None, min_len=20, max_len=60, r=(3, 10))
    params.update(kw)
    return generate_synthetic(kind, n, seed, **params)


# ------------------------------------------------------------------------------------------------ structure / seeds
@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_deterministic_under_seed_and_shapes(kind):
    a, b, c = _small(kind, seed=5), _small(kind, seed=5), _small(kind, seed=6)
    for name in ("embeddings", "offsets", "n_slices", "labels", "slice_labels", "block_starts", "block_lengths"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.patient_ids, b.patient_ids)
    assert not np.array_equal(a.n_slices, c.n_slices) or not np.allclose(a.embeddings, c.embeddings)
    t = int(a.n_slices.sum())
    assert a.embeddings.shape == (t, 16) and a.embeddings.dtype == np.float32
    assert a.slice_labels.shape == (t,) and a.slice_labels.dtype == np.int8
    np.testing.assert_array_equal(a.offsets, np.concatenate([[0], np.cumsum(a.n_slices)[:-1]]))
    assert a.n_slices.min() >= 20 and a.n_slices.max() <= 60
    assert a.labels.sum() == 20  # exact prevalence 0.5
    assert len(a.scan_ids) == len(set(a.scan_ids)) == 40
    assert np.isfinite(a.embeddings).all()


def test_shifted_mean_one_run_of_r_per_positive_bag():
    data = _small("shifted_mean", n=200, r=5)
    for i in range(len(data)):
        _, sl = data.bag(i)
        runs = _runs(sl)
        if data.labels[i]:
            assert len(runs) == 1 and runs[0][1] == 5
            assert runs[0][0] == data.block_starts[i, 0] and data.block_lengths[i, 0] == 5
        else:
            assert runs == [] and data.block_starts[i, 0] == -1


def test_shifted_mean_run_length_range_and_uniform_start():
    data = _small("shifted_mean", n=600, r=(2, 4), min_len=8, max_len=8, dim=2, k=1)
    pos = data.labels == 1
    lengths = data.block_lengths[pos, 0]
    assert set(lengths.tolist()) == {2, 3, 4}
    # start uniform on {0..S-r}: for r=2 the 7 starts are all used, none past S - r
    starts = data.block_starts[pos, 0]
    assert set(starts[lengths == 2].tolist()) == set(range(7))
    assert (starts + lengths <= 8).all()


def test_shifted_mean_signal_is_where_labels_say():
    data = _small("shifted_mean", n=600, k=4, delta=1.0, r=6)
    inside = data.slice_labels == 1
    x = data.embeddings
    assert inside.sum() == 300 * 6  # standard error of an inside mean ~ 1 / sqrt(1800) ~ 0.024
    np.testing.assert_allclose(x[inside, :4].mean(axis=0), 1.0, atol=0.1)
    np.testing.assert_allclose(x[~inside, :4].mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(x[inside, 4:].mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(x[~inside].std(axis=0), 1.0, atol=0.03)


def test_ct_like_profile_exact_without_noise():
    """noise 0, no anatomy, first_k direction: the embeddings are exactly delta * profile on feature 0."""
    for profile, expect3 in (
        ("cosine", [0.5, 1.0, 0.5]),  # sin^2(pi/4), sin^2(pi/2), sin^2(3pi/4)
        ("flat", [1.0, 1.0, 1.0]),
        ("gaussian", [math.exp(-0.5 * (1 / 0.75) ** 2), 1.0, math.exp(-0.5 * (1 / 0.75) ** 2)]),
    ):
        data = generate_synthetic(
            "ct_like",
            20,
            1,
            dim=3,
            anatomy_rank=0,
            noise_std=0.0,
            direction="first_k",
            k=1,
            delta=2.0,
            r=3,
            profile=profile,
        )
        for i in np.flatnonzero(data.labels):
            emb, sl = data.bag(i)
            (start, length) = _runs(sl)[0]
            np.testing.assert_allclose(emb[start : start + 3, 0], 2.0 * np.array(expect3), rtol=1e-6)
            assert length == 3
            assert np.count_nonzero(emb) == 3  # nothing outside the block, nothing on other features
        for i in np.flatnonzero(data.labels == 0):
            assert not data.bag(i)[0].any()


def test_ct_like_signal_fades_to_block_edges_along_lesion_direction():
    data = _small("ct_like", n=400, r=(7, 9), delta=2.0)
    proj = data.embeddings.astype(np.float64) @ data.lesion_direction
    assert math.isclose(np.linalg.norm(data.lesion_direction), 1.0, rel_tol=1e-9)
    centre, edge, outside = [], [], proj[data.slice_labels == 0]
    for i in np.flatnonzero(data.labels):
        o, s, n = data.offsets[i], data.block_starts[i, 0], data.block_lengths[i, 0]
        centre.append(proj[o + s + n // 2])
        edge.extend([proj[o + s], proj[o + s + n - 1]])
    assert abs(outside.mean()) < 0.05  # the direction is orthogonal to the anatomy subspace
    assert np.mean(centre) > 1.8  # peak of the raised cosine ~ delta
    assert 0.1 < np.mean(edge) < 0.8  # edges: delta * sin^2(pi / (r + 1)) ~ 0.3 .. 0.4
    assert np.mean(centre) - np.mean(edge) > 1.2


def test_ct_like_centre_bias():
    data = _small("ct_like", n=3000, seed=11)
    pos = data.labels == 1
    s = data.n_slices[pos]
    centre = data.block_starts[pos, 0] + data.block_lengths[pos, 0] / 2.0
    rel = (centre - s / 2.0) / s
    assert abs(rel.mean()) < 0.01
    # Normal(S/2, S/6) clipped: spread ~ 1/6; a uniform placement would give ~ 0.26
    assert 0.13 < rel.std() < 0.19
    uniform = _small("shifted_mean", n=3000, seed=11, r=6)
    pos_u = uniform.labels == 1
    rel_u = (uniform.block_starts[pos_u, 0] + 3.0 - uniform.n_slices[pos_u] / 2.0) / uniform.n_slices[pos_u]
    assert rel_u.std() > 0.22


def test_ct_like_anatomy_depends_on_position():
    data = _small("ct_like", n=300, anatomy_scale=2.0)
    rel = np.concatenate([(np.arange(n) + 0.5) / n for n in data.n_slices])
    neg = np.repeat(data.labels == 0, data.n_slices)
    low, high = data.embeddings[neg & (rel < 0.2)], data.embeddings[neg & (rel > 0.8)]
    gap = np.linalg.norm(low.mean(axis=0) - high.mean(axis=0))
    assert gap > 1.0  # noise alone would give ~ sqrt(2 * 16 / n_rows) ~ 0.1
    flat = _small("ct_like", n=300, anatomy_rank=0)
    neg = np.repeat(flat.labels == 0, flat.n_slices)
    low, high = flat.embeddings[neg & (rel < 0.2)], flat.embeddings[neg & (rel > 0.8)]
    assert np.linalg.norm(low.mean(axis=0) - high.mean(axis=0)) < 0.3


def test_ct_like_patients():
    data = _small("ct_like", n=300, repeat_scan_prob=1.0, max_scans_per_patient=3)
    _, counts = np.unique(data.patient_ids, return_counts=True)
    assert counts.max() <= 3 and (counts >= 2).sum() >= len(counts) - 1  # only the last patient may be cut short
    single = _small("ct_like", n=300, repeat_scan_prob=0.0)
    assert len(set(single.patient_ids)) == 300
    assert len(set(_small("shifted_mean", n=50).patient_ids)) == 50
    mixed = _small("ct_like", n=300)
    assert 150 < len(set(mixed.patient_ids)) < 300


def test_multi_lesion_blocks_disjoint_and_counted():
    data = generate_synthetic("multi_lesion", 400, 2, dim=16, anatomy_rank=4, lesions=(2, 3), r=(2, 6), min_gap=1)
    n_blocks = (data.block_lengths > 0).sum(axis=1)
    assert set(n_blocks[data.labels == 1].tolist()) == {2, 3}
    assert (n_blocks[data.labels == 0] == 0).all()
    for i in range(len(data)):
        _, sl = data.bag(i)
        m = int(n_blocks[i])
        blocks = list(zip(data.block_starts[i, :m].tolist(), data.block_lengths[i, :m].tolist(), strict=True))
        assert _runs(sl) == blocks  # disjoint, separated by >= 1 negative slice, sorted, exactly the labels
        for (s0, l0), (s1, _) in itertools.pairwise(blocks):
            assert s1 >= s0 + l0 + 1
        assert all(2 <= length <= 6 for _, length in blocks)


def test_multi_lesion_tight_fit_falls_back_to_uniform_placement():
    # 3 blocks of 6 with gaps of 1 need exactly 20 slices: only one arrangement exists
    data = generate_synthetic(
        "multi_lesion", 30, 0, dim=8, anatomy_rank=2, lesions=3, r=6, min_len=20, max_len=20, min_gap=1
    )
    for i in np.flatnonzero(data.labels):
        assert _runs(data.bag(i)[1]) == [(0, 6), (7, 6), (14, 6)]


# ------------------------------------------------------------------------------------------------------ Bayes ceiling
def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


def _brute_force(x: np.ndarray, runs: list[tuple[int, int, float]], k: int, delta: float, prior: float):
    """Direct density sums: runs = [(r, t, prior weight of (r, t) given y=1)]; returns (P(y=1|x), P(j in run|x))."""
    p0 = np.prod(_phi(x))
    joint = []
    for r, t, w in runs:
        mean = np.zeros_like(x)
        mean[t : t + r, :k] = delta
        joint.append(w * np.prod(_phi(x - mean)))
    p1 = sum(joint)
    evidence = prior * p1 + (1 - prior) * p0
    slice_post = np.zeros(x.shape[0])
    for (r, t, _), j in zip(runs, joint, strict=True):
        slice_post[t : t + r] += prior * j / evidence
    return prior * p1 / evidence, slice_post


def test_bayes_matches_brute_force_fixed_run():
    rng = np.random.default_rng(0)
    s, r, delta, prior = 4, 2, 1.3, 0.3
    bags = [rng.normal(size=(s, 1)) for _ in range(5)]
    bags[0][1:3, 0] += 2.0  # one clearly positive-looking bag
    emb = np.concatenate(bags).astype(np.float64)
    scan, slices = shifted_mean_posteriors(
        emb, np.arange(5) * s, np.full(5, s), r=r, k=1, delta=delta, prevalence=prior
    )
    runs = [(r, t, 1.0 / (s - r + 1)) for t in range(s - r + 1)]
    for i, x in enumerate(bags):
        p, sp = _brute_force(x, runs, 1, delta, prior)
        assert math.isclose(scan[i], p, rel_tol=1e-10)
        np.testing.assert_allclose(slices[i * s : (i + 1) * s], sp, rtol=1e-10, atol=1e-14)
    assert scan[0] > 0.9


def test_bayes_matches_brute_force_run_range_varying_bag_sizes():
    rng = np.random.default_rng(1)
    sizes, k, delta, prior = [3, 5, 4], 2, -0.8, 0.6
    bags = [rng.normal(size=(n, 3)) for n in sizes]
    emb = np.concatenate(bags)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    scan, slices = shifted_mean_posteriors(emb, offsets, np.array(sizes), r=(1, 3), k=k, delta=delta, prevalence=prior)
    for i, (x, n) in enumerate(zip(bags, sizes, strict=True)):
        runs = [(r, t, (1 / 3) / (n - r + 1)) for r in (1, 2, 3) for t in range(n - r + 1)]
        p, sp = _brute_force(x, runs, k, delta, prior)
        assert math.isclose(scan[i], p, rel_tol=1e-10)
        np.testing.assert_allclose(slices[offsets[i] : offsets[i] + n], sp, rtol=1e-10, atol=1e-14)


def test_bayes_is_stable_for_huge_likelihood_ratios():
    x = np.zeros((6, 1))
    x[2:4, 0] = 200.0  # log LR ~ 2 * 200 * 5: exp would overflow without log-space sums
    scan, slices = shifted_mean_posteriors(x, [0], [6], r=2, k=1, delta=5.0, prevalence=0.5)
    assert scan[0] == 1.0
    np.testing.assert_allclose(slices, [0, 0, 1, 1, 0, 0], atol=1e-12)
    # runs avoiding slices 2-3 (starts 0 and 4 of 5) have LR exp(-2 * 12.5); the others are ~ exp(-1000)
    scan, _ = shifted_mean_posteriors(-x, [0], [6], r=2, k=1, delta=5.0, prevalence=0.5)
    assert math.isclose(scan[0], 0.4 * math.exp(-25.0), rel_tol=1e-9)
    with np.errstate(over="raise", invalid="raise"):
        scan, slices = shifted_mean_posteriors(np.full((6, 1), -200.0), [0], [6], r=2, k=1, delta=5.0)
    assert scan[0] == 0.0 and np.isfinite(slices).all()


def test_bayes_calibrated_against_the_generator():
    """Monte Carlo: among bags / slices given posterior ~p, a fraction ~p are positive (same prior as generation)."""
    data = generate_synthetic(
        "shifted_mean", 20000, 4, dim=1, k=1, delta=1.0, r=(1, 3), min_len=4, max_len=6, prevalence=0.4
    )
    scan, slices = bayes_scan_posterior(data), bayes_slice_posterior(data)
    for post, truth in ((scan, data.labels), (slices, data.slice_labels)):
        edges = np.quantile(post, np.linspace(0, 1, 6))
        which = np.clip(np.searchsorted(edges, post, side="right") - 1, 0, 4)
        for b in range(5):
            sel = which == b
            assert abs(truth[sel].mean() - post[sel].mean()) < 0.025, (b, truth[sel].mean(), post[sel].mean())
    # per-slice posteriors add up to the expected number of run slices
    assert abs(slices.sum() - data.slice_labels.sum()) / data.slice_labels.sum() < 0.03


def test_bayes_prior_over_run_positions_is_the_generators():
    """At each slice position the mean posterior equals the empirical positive rate (exposes a start-prior mismatch)."""
    s, n = 6, 20000
    data = generate_synthetic(
        "shifted_mean", n, 5, dim=1, k=1, delta=1.0, r=(1, 3), min_len=s, max_len=s, prevalence=0.4
    )
    post = bayes_slice_posterior(data).reshape(n, s)
    freq = data.slice_labels.reshape(n, s).mean(axis=0)
    # prior coverage of position j: 0.4 * mean_r #{t covering j} / (s - r + 1); e.g. j=0: 0.4 * (1/6 + 1/5 + 1/4) / 3
    assert math.isclose(freq[0], 0.4 * (1 / 6 + 1 / 5 + 1 / 4) / 3, abs_tol=0.008)
    np.testing.assert_allclose(post.mean(axis=0), freq, atol=0.008)  # binomial s.e. ~ 0.002


def test_shifted_mean_start_is_uniform():
    data = generate_synthetic("shifted_mean", 4000, 6, dim=1, k=1, r=3, min_len=10, max_len=10)
    counts = np.bincount(data.block_starts[data.labels == 1, 0], minlength=8)
    assert counts.shape == (8,) and counts.sum() == 2000
    np.testing.assert_allclose(counts, 250, atol=60)  # 4 binomial standard deviations


def test_bayes_auroc_large_delta_and_zero_delta():
    strong = generate_synthetic("shifted_mean", 200, 8, dim=16, k=4, delta=3.0, r=3)
    assert roc_auc_score(strong.labels, bayes_scan_posterior(strong)) > 0.99
    sl = bayes_slice_posterior(strong)
    pos = np.flatnonzero(strong.labels)
    loc = [roc_auc_score(strong.bag(i)[1], sl[strong.offsets[i] : strong.offsets[i] + strong.n_slices[i]]) for i in pos]
    assert np.mean(loc) > 0.99
    null = generate_synthetic("shifted_mean", 200, 8, dim=16, k=4, delta=0.0, r=3, prevalence=0.3)
    post = bayes_scan_posterior(null)
    np.testing.assert_allclose(post, 0.3)
    assert roc_auc_score(null.labels, post) == 0.5
    # a mild shift sits in between, and a wrong delta gives a worse ranking of the same data
    mild = generate_synthetic("shifted_mean", 400, 9, dim=16, k=4, delta=0.6, r=3)
    auc = roc_auc_score(mild.labels, bayes_scan_posterior(mild))
    assert 0.6 < auc < 0.99
    assert roc_auc_score(mild.labels, bayes_scan_posterior(mild, delta=-0.6)) < auc


def test_bayes_rejects_non_shifted_mean(tmp_path):
    with pytest.raises(ValueError, match="ShiftedMean"):
        bayes_scan_posterior(_small("ct_like", n=4))
    store = write_synthetic_store("multi_lesion", tmp_path / "ml", 4, dim=8, anatomy_rank=2)
    with pytest.raises(ValueError, match="synthetic.kind='multi_lesion'"):
        bayes_slice_posterior(store)
    with pytest.raises(ValueError, match="unknown Bayes parameter"):
        bayes_scan_posterior(_small("shifted_mean", n=4), sigma=2)
    with pytest.raises(ValueError, match="fit every bag"):
        shifted_mean_posteriors(np.zeros((3, 1)), [0], [3], r=4, k=1, delta=1.0)


# ------------------------------------------------------------------------------------------------------ store + CLI
@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_store_round_trip(tmp_path, kind):
    n = 300  # more than one chunk of 256 bags: the streamed store equals the in-memory data
    params = {"dim": 4, "k": 2} if kind == "shifted_mean" else {"dim": 6, "anatomy_rank": 2}
    mem = generate_synthetic(kind, n, 7, **params)
    store = write_synthetic_store(kind, tmp_path / "s", n, seed=7, **params)
    assert isinstance(store, EmbeddingStore) and len(store) == n
    np.testing.assert_array_equal(np.asarray(store.embeddings), mem.embeddings)
    np.testing.assert_array_equal(np.asarray(store.slice_labels), mem.slice_labels)
    np.testing.assert_array_equal(store.labels, mem.labels)
    np.testing.assert_array_equal(store.n_slices, mem.n_slices)
    np.testing.assert_array_equal(store.index["offset"].to_numpy(), mem.offsets)
    assert store.scan_ids == mem.scan_ids.tolist() and store.patient_ids == mem.patient_ids.tolist()
    meta = json.loads((tmp_path / "s" / "store.json").read_text())["synthetic"]
    assert meta["kind"] == kind and meta["seed"] == 7 and meta["n_bags"] == n and meta["dim"] == params["dim"]
    assert meta == mem.metadata()["synthetic"]
    assert make_params(kind, **{k: v for k, v in meta.items() if k not in ("kind", "seed", "n_bags")}) == mem.params
    if kind == "shifted_mean":
        np.testing.assert_allclose(bayes_scan_posterior(store), bayes_scan_posterior(mem), rtol=1e-12)
        np.testing.assert_allclose(bayes_slice_posterior(store), bayes_slice_posterior(mem), rtol=1e-9, atol=1e-15)


def test_store_float16_and_overwrite(tmp_path):
    mem = generate_synthetic("shifted_mean", 30, 2, dim=8)
    store = write_synthetic_store("shifted_mean", tmp_path / "h", 30, seed=2, dtype="float16", dim=8)
    assert store.embeddings.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(store.embeddings), mem.embeddings.astype(np.float16))
    with pytest.raises(FileExistsError):
        write_synthetic_store("shifted_mean", tmp_path / "h", 30, seed=2, dim=8)
    store = write_synthetic_store("shifted_mean", tmp_path / "h", 10, seed=2, dim=8, overwrite=True)
    assert len(store) == 10 and store.embeddings.dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        write_synthetic_store("shifted_mean", tmp_path / "b", 10, dtype="float64")


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("nope", {}, "unknown synthetic kind"),
        ("shifted_mean", {"profile": "cosine"}, r"has no parameter\(s\) \['profile'\]"),
        ("shifted_mean", {"r": 25}, "must not exceed min_len"),
        ("shifted_mean", {"r": (5, 3)}, "exceeds maximum"),
        ("shifted_mean", {"k": 0}, "k must lie"),
        ("shifted_mean", {"prevalence": 1.0}, "prevalence"),
        ("shifted_mean", {"max_len": 10}, "max_len"),
        ("ct_like", {"lesions": 3, "r": 8}, "need 26 slices"),
        ("ct_like", {"profile": "box"}, "profile must be"),
        ("ct_like", {"dim": 8, "anatomy_rank": 8}, "anatomy_rank"),
        ("multi_lesion", {"noise_std": -1.0}, "noise_std"),
    ],
)
def test_bad_parameters(kind, params, message):
    with pytest.raises((ValueError, TypeError), match=message):
        generate_synthetic(kind, 5, 0, **params)


def test_bad_counts_and_seed():
    with pytest.raises(ValueError, match="n_bags"):
        generate_synthetic("shifted_mean", 0)
    with pytest.raises(ValueError, match="seed"):
        generate_synthetic("shifted_mean", 3, seed=-1)
    with pytest.raises(TypeError, match="pair of ints"):
        generate_synthetic("shifted_mean", 3, r=2.5)
