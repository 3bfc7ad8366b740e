"""Synthetic multiple-instance benchmarks written as embedding stores, with an exact Bayes ceiling for ShiftedMean.

Three generators share one representation (a bag is a contiguous block of rows of an ``[T, D]`` float32 array):

* ``"shifted_mean"`` -- the ShiftedMean task of Harvey, Loevlie & Hughes, "Synthetic Data Reveals Generalization Gaps
  in Correlated Multiple Instance Learning" (ML4H 2025): instances are ``N(0, I_D)``; a positive bag holds one run of
  ``r`` consecutive instances whose first ``k`` features are shifted by ``delta``. The run start is uniform over the
  ``S - r + 1`` positions, which makes the Bayes posterior available in closed form
  (:func:`bayes_scan_posterior`, :func:`bayes_slice_posterior`).
* ``"ct_like"`` -- a CT-flavoured variant: slice content drifts with the relative position along the scan (a smooth
  trajectory in a low-rank "anatomy" subspace, plus a per-patient offset and a per-scan shift of the field of view),
  one lesion block per positive scan whose centre is biased towards the middle of the scan, and a lesion signal that
  fades towards the block edges. Patients sometimes own several scans.
* ``"multi_lesion"`` -- the CT-like construction with two or more disjoint lesion blocks per positive scan (for
  multi-head Normal Guidance, Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs", 2026).

Randomness: ``seed`` drives a :class:`numpy.random.SeedSequence`; the bag structure (lengths, labels, blocks,
patients) is drawn first from one child stream, then the embeddings are drawn in fixed chunks of bags from further
child streams, so the in-memory arrays and a store written chunk by chunk are identical. For the CT-like kinds the
"world" (anatomy subspace, trajectory, lesion direction) is drawn from ``world_seed`` instead, so data sets generated
with different ``seed`` but the same ``world_seed`` come from the same distribution.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_ng.data.embedding_store import EmbeddingStore, EmbeddingStoreWriter

__all__ = [
    "SYNTHETIC_KINDS",
    "CTLikeParams",
    "MultiLesionParams",
    "ShiftedMeanParams",
    "SyntheticBags",
    "bayes_scan_posterior",
    "bayes_slice_posterior",
    "generate_ct_like",
    "generate_multi_lesion",
    "generate_shifted_mean",
    "generate_synthetic",
    "make_params",
    "shifted_mean_posteriors",
    "write_synthetic_store",
]

SYNTHETIC_KINDS = ("shifted_mean", "ct_like", "multi_lesion")
# bags per independently seeded chunk of embeddings; part of the data definition (changing it changes the data)
_CHUNK_BAGS = 256
_PROFILES = ("cosine", "gaussian", "flat")
_DIRECTIONS = ("random", "first_k")
_SCAN_PREFIX = {"shifted_mean": "sm", "ct_like": "ct", "multi_lesion": "ml"}
# candidate placements drawn at once per bag when placing several disjoint lesion blocks
_PLACEMENT_TRIES = 64


# ---------------------------------------------------------------------------------------------------------- params
def _int_range(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as an inclusive integer range ``(lo, hi)``; an int ``n`` means ``(n, n)``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        lo = hi = int(value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
        lo, hi = int(value[0]), int(value[1])
    else:
        raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name}: minimum {lo} exceeds maximum {hi}")
    return lo, hi


def _check_common(dim: int, min_len: int, max_len: int, prevalence: float) -> None:
    if int(dim) < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if int(min_len) < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    if int(max_len) < int(min_len):
        raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
    if not 0.0 < float(prevalence) < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")


@dataclass(frozen=True)
class ShiftedMeanParams:
    """Parameters of the ShiftedMean task (Harvey, Loevlie & Hughes, ML4H 2025).

    Attributes:
        dim: instance width D.
        min_len: smallest bag size; bag sizes are uniform on ``{min_len, ..., max_len}``.
        max_len: largest bag size.
        r: run length: an int, or an inclusive ``(r_min, r_max)`` range drawn uniformly per positive bag.
            ``r_max <= min_len`` so every bag can hold a run.
        k: number of leading features shifted inside the run (``1 <= k <= dim``).
        delta: the shift added to those features.
        prevalence: fraction of positive bags (``round(prevalence * n_bags)`` bags, at least one of each class when
            ``n_bags >= 2``); also the prior of the Bayes posterior.
    """

    dim: int = 768
    min_len: int = 20
    max_len: int = 60
    r: int | tuple[int, int] = 5
    k: int = 8
    delta: float = 0.5
    prevalence: float = 0.5

    def __post_init__(self) -> None:
        _check_common(self.dim, self.min_len, self.max_len, self.prevalence)
        lo, hi = _int_range("r", self.r)
        if lo < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if hi > self.min_len:
            raise ValueError(
                f"r ({hi}) must not exceed min_len ({self.min_len}): every bag must be able to hold the run"
            )
        object.__setattr__(self, "r", (lo, hi))
        if not 1 <= int(self.k) <= int(self.dim):
            raise ValueError(f"k must lie in [1, dim={self.dim}], got {self.k}")
        if not math.isfinite(float(self.delta)):
            raise ValueError(f"delta must be finite, got {self.delta}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ranges as ``[min, max]`` lists)."""
        return _params_dict(self)


@dataclass(frozen=True)
class CTLikeParams:
    """Parameters of the CT-like benchmark (one lesion block per positive scan by default).

    Attributes:
        dim: embedding width D.
        min_len: fewest slices per scan (uniform on ``{min_len, ..., max_len}``).
        max_len: most slices per scan.
        r: lesion block length: int or inclusive ``(r_min, r_max)`` range, uniform per block.
        lesions: number of disjoint lesion blocks per positive scan: int or ``(min, max)`` range, uniform per scan.
        min_gap: negative slices required between two lesion blocks of one scan.
        delta: peak lesion amplitude.
        direction: ``"random"`` -- the lesion adds ``delta * w_j * v`` along a fixed random unit vector ``v``
            orthogonal to the anatomy subspace; ``"first_k"`` -- it adds ``delta * w_j`` to each of the first ``k``
            features (the anatomy subspace then avoids those features).
        k: number of features used by ``direction="first_k"``.
        profile: lesion profile ``w`` over a block of length ``r`` (``i = 0 .. r-1``): ``"cosine"`` (raised cosine
            ``sin^2(pi (i+1) / (r+1))``), ``"gaussian"`` (``exp(-(i - (r-1)/2)^2 / (2 (r/4)^2))``) or ``"flat"`` (1).
        centre_sd_frac: block centres are ``Normal(S/2, centre_sd_frac * S)`` (``S`` slices), then clipped so the
            block fits.
        anatomy_rank: rank m of the anatomy subspace (0 disables the anatomy drift).
        anatomy_harmonics: number of cosine/sine harmonics of the anatomy trajectory over relative position.
        anatomy_scale: standard deviation of the trajectory coefficients (overall anatomy amplitude).
        position_jitter: standard deviation of the per-scan shift of relative slice positions (field of view).
        patient_offset_scale: standard deviation of the per-patient offset inside the anatomy subspace.
        noise_std: standard deviation of the isotropic Gaussian noise.
        prevalence: fraction of positive scans (exact count, as for ShiftedMean).
        repeat_scan_prob: probability that a patient owns more than one scan.
        max_scans_per_patient: most scans per patient (2 .. this, uniform, for repeat patients).
        world_seed: seed of the fixed "world" (anatomy subspace and trajectory, lesion direction).
    """

    dim: int = 768
    min_len: int = 20
    max_len: int = 60
    r: int | tuple[int, int] = (3, 10)
    lesions: int | tuple[int, int] = 1
    min_gap: int = 1
    delta: float = 2.5
    direction: str = "random"
    k: int = 8
    profile: str = "cosine"
    centre_sd_frac: float = 1.0 / 6.0
    anatomy_rank: int = 8
    anatomy_harmonics: int = 3
    anatomy_scale: float = 1.0
    position_jitter: float = 0.05
    patient_offset_scale: float = 0.5
    noise_std: float = 1.0
    prevalence: float = 0.5
    repeat_scan_prob: float = 0.3
    max_scans_per_patient: int = 3
    world_seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.dim, self.min_len, self.max_len, self.prevalence)
        r_lo, r_hi = _int_range("r", self.r)
        n_lo, n_hi = _int_range("lesions", self.lesions)
        if r_lo < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if n_lo < 1:
            raise ValueError(f"lesions must be >= 1, got {self.lesions}")
        if int(self.min_gap) < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        need = n_hi * r_hi + (n_hi - 1) * int(self.min_gap)
        if need > self.min_len:
            raise ValueError(
                f"{n_hi} lesion block(s) of up to {r_hi} slices with gaps of {self.min_gap} need {need} slices, "
                f"more than min_len={self.min_len}"
            )
        object.__setattr__(self, "r", (r_lo, r_hi))
        object.__setattr__(self, "lesions", (n_lo, n_hi))
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {self.direction!r}")
        if self.profile not in _PROFILES:
            raise ValueError(f"profile must be one of {_PROFILES}, got {self.profile!r}")
        if int(self.anatomy_rank) < 0 or int(self.anatomy_harmonics) < 1:
            raise ValueError(
                f"anatomy_rank must be >= 0 and anatomy_harmonics >= 1, got {self.anatomy_rank}, {self.anatomy_harmonics}"
            )
        if self.direction == "first_k":
            if not 1 <= int(self.k) <= int(self.dim):
                raise ValueError(f"k must lie in [1, dim={self.dim}], got {self.k}")
            if int(self.anatomy_rank) > int(self.dim) - int(self.k):
                raise ValueError(
                    f"anatomy_rank ({self.anatomy_rank}) must be <= dim - k ({self.dim} - {self.k}) with direction='first_k'"
                )
        elif int(self.anatomy_rank) + 1 > int(self.dim):
            raise ValueError(f"anatomy_rank ({self.anatomy_rank}) must be < dim ({self.dim}) with direction='random'")
        for name in (
            "delta",
            "centre_sd_frac",
            "anatomy_scale",
            "position_jitter",
            "patient_offset_scale",
            "noise_std",
        ):
            value = float(getattr(self, name))
            if not math.isfinite(value) or (name != "delta" and value < 0):
                raise ValueError(f"{name} must be finite{'' if name == 'delta' else ' and >= 0'}, got {value}")
        if float(self.noise_std) == 0.0 and float(self.delta) == 0.0 and int(self.anatomy_rank) == 0:
            raise ValueError("noise_std, delta and anatomy_rank are all 0: every embedding would be zero")
        if not 0.0 <= float(self.repeat_scan_prob) <= 1.0:
            raise ValueError(f"repeat_scan_prob must lie in [0, 1], got {self.repeat_scan_prob}")
        if int(self.max_scans_per_patient) < 1:
            raise ValueError(f"max_scans_per_patient must be >= 1, got {self.max_scans_per_patient}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ranges as ``[min, max]`` lists)."""
        return _params_dict(self)


@dataclass(frozen=True)
class MultiLesionParams(CTLikeParams):
    """:class:`CTLikeParams` with 2-3 disjoint lesion blocks per positive scan and a wider centre spread."""

    r: int | tuple[int, int] = (2, 6)
    lesions: int | tuple[int, int] = (2, 3)
    centre_sd_frac: float = 0.25


_PARAM_CLASSES: dict[str, type] = {
    "shifted_mean": ShiftedMeanParams,
    "ct_like": CTLikeParams,
    "multi_lesion": MultiLesionParams,
}


def _params_dict(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, tuple):
            value = [int(v) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out[f.name] = value
    return out


def make_params(kind: str, **params: Any) -> ShiftedMeanParams | CTLikeParams:
    """The parameter object of ``kind`` with ``params`` overriding its defaults.

    Raises:
        ValueError: unknown kind, or a parameter that ``kind`` does not have (named), or an invalid value.
    """
    if kind not in _PARAM_CLASSES:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {SYNTHETIC_KINDS}")
    cls = _PARAM_CLASSES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"synthetic kind {kind!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
    return cls(**params)


# ------------------------------------------------------------------------------------------------------- container
@dataclass
class SyntheticBags:
    """An in-memory synthetic data set (one row block per bag, like an embedding store).

    Attributes:
        kind: ``"shifted_mean"``, ``"ct_like"`` or ``"multi_lesion"``.
        seed: the sample seed.
        params: the generator parameters.
        embeddings: ``[T, D]`` float32, rows of bag ``i`` at ``offsets[i] .. offsets[i] + n_slices[i] - 1``.
        offsets: ``[B]`` int64 first row of each bag.
        n_slices: ``[B]`` int64 bag sizes S.
        labels: ``[B]`` int64 bag labels (1 = holds at least one lesion block).
        slice_labels: ``[T]`` int8, 1 inside a lesion block, 0 elsewhere.
        scan_ids: ``[B]`` str scan identifiers.
        patient_ids: ``[B]`` str patient identifiers (several scans may share one).
        block_starts: ``[B, L]`` int64 first slice (0-based, within the bag) of each block, -1 for no block.
        block_lengths: ``[B, L]`` int64 block lengths, 0 for no block.
        lesion_direction: ``[D]`` float64 vector the lesion adds, scaled by ``delta * w_j`` (ones on the first ``k``
            features for ShiftedMean and ``direction="first_k"``; a unit vector for ``direction="random"``).
    """

    kind: str
    seed: int
    params: ShiftedMeanParams | CTLikeParams
    embeddings: np.ndarray
    offsets: np.ndarray
    n_slices: np.ndarray
    labels: np.ndarray
    slice_labels: np.ndarray
    scan_ids: np.ndarray
    patient_ids: np.ndarray
    block_starts: np.ndarray
    block_lengths: np.ndarray
    lesion_direction: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def bag(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings [S, D], slice_labels [S])`` of bag ``index``."""
        o, n = int(self.offsets[index]), int(self.n_slices[index])
        return self.embeddings[o : o + n], self.slice_labels[o : o + n]

    def metadata(self) -> dict[str, Any]:
        """Store metadata ``{"synthetic": {"kind", "seed", "n_bags", params...}}``."""
        return _metadata(self.kind, self.seed, len(self), self.params)


def _metadata(kind: str, seed: int, n_bags: int, params: Any) -> dict[str, Any]:
    return {"synthetic": {"kind": kind, "seed": int(seed), "n_bags": int(n_bags), **params.to_dict()}}


# ------------------------------------------------------------------------------------------------------- structure
@dataclass
class _Structure:
    """Everything about a data set except the noise: drawn first, from its own stream."""

    offsets: np.ndarray  # [B]
    n_slices: np.ndarray  # [B]
    labels: np.ndarray  # [B]
    patient_index: np.ndarray  # [B]
    block_starts: np.ndarray  # [B, L]
    block_lengths: np.ndarray  # [B, L]
    slice_labels: np.ndarray  # [T] int8
    lesion_weight: np.ndarray  # [T] float32, 0 outside blocks
    position: np.ndarray | None = None  # [T] relative slice position (CT-like)
    scan_offset: np.ndarray | None = None  # [B, m] offset in the anatomy subspace (CT-like)


def _exact_labels(rng: np.random.Generator, n_bags: int, prevalence: float) -> np.ndarray:
    n_pos = int(round(prevalence * n_bags))
    if n_bags >= 2:
        n_pos = min(max(n_pos, 1), n_bags - 1)
    labels = np.zeros(n_bags, dtype=np.int64)
    labels[rng.permutation(n_bags)[:n_pos]] = 1
    return labels


def _offsets(n_slices: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(n_slices)[:-1]]).astype(np.int64)


def _profile(kind: str, i: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Lesion profile ``w`` at within-block index ``i`` (0-based) of a block of length ``r``; both ``[N]``."""
    if kind == "flat":
        return np.ones(i.shape, dtype=np.float64)
    if kind == "cosine":
        return np.sin(np.pi * (i + 1) / (r + 1)) ** 2
    sd = r / 4.0
    return np.exp(-0.5 * ((i - (r - 1) / 2.0) / sd) ** 2)


def _block_rows(
    offsets: np.ndarray, block_starts: np.ndarray, block_lengths: np.ndarray, total: int, profile: str
) -> tuple[np.ndarray, np.ndarray]:
    """Slice labels ``[T]`` int8 and lesion weights ``[T]`` float32 from per-bag blocks (vectorised)."""
    slice_labels = np.zeros(total, dtype=np.int8)
    weight = np.zeros(total, dtype=np.float32)
    valid = block_lengths > 0
    if not valid.any():
        return slice_labels, weight
    bag_of_block = np.broadcast_to(np.arange(block_starts.shape[0])[:, None], block_starts.shape)[valid]
    lengths = block_lengths[valid]
    first_row = offsets[bag_of_block] + block_starts[valid]
    n = int(lengths.sum())
    block_first = np.cumsum(lengths) - lengths
    within = np.arange(n) - np.repeat(block_first, lengths)
    rows = np.repeat(first_row, lengths) + within
    slice_labels[rows] = 1
    weight[rows] = _profile(profile, within.astype(np.float64), np.repeat(lengths, lengths).astype(np.float64))
    return slice_labels, weight


def _shifted_mean_structure(rng: np.random.Generator, n_bags: int, p: ShiftedMeanParams) -> _Structure:
    n_slices = rng.integers(p.min_len, p.max_len + 1, size=n_bags).astype(np.int64)
    labels = _exact_labels(rng, n_bags, p.prevalence)
    r_lo, r_hi = p.r
    r = rng.integers(r_lo, r_hi + 1, size=n_bags).astype(np.int64)
    # start uniform on {0, ..., S - r}: exactly the prior used by the Bayes posterior below
    start = np.floor(rng.random(n_bags) * (n_slices - r + 1)).astype(np.int64)
    start = np.minimum(start, n_slices - r)
    block_starts = np.where(labels == 1, start, -1)[:, None]
    block_lengths = np.where(labels == 1, r, 0)[:, None]
    offsets = _offsets(n_slices)
    sl, w = _block_rows(offsets, block_starts, block_lengths, int(n_slices.sum()), "flat")
    return _Structure(offsets, n_slices, labels, np.arange(n_bags), block_starts, block_lengths, sl, w)


def _patients(rng: np.random.Generator, n_bags: int, repeat_prob: float, max_scans: int) -> np.ndarray:
    """``[B]`` patient index per scan; a patient owns 1 scan, or 2..max_scans with probability ``repeat_prob``."""
    repeat = rng.random(n_bags) < repeat_prob
    sizes = np.where(repeat & (max_scans >= 2), rng.integers(2, max(max_scans, 2) + 1, size=n_bags), 1)
    ends = np.cumsum(sizes)
    n_patients = int(np.searchsorted(ends, n_bags) + 1)
    patient = np.repeat(np.arange(n_patients), sizes[:n_patients])[:n_bags]
    # shuffle so that one patient's scans are not always adjacent rows of the store
    return patient[rng.permutation(n_bags)].astype(np.int64)


def _place_blocks(
    rng: np.random.Generator, s: int, lengths: np.ndarray, sd_frac: float, min_gap: int
) -> np.ndarray | None:
    """Starts of ``len(lengths)`` disjoint blocks with centre-biased centres, or None if no candidate fitted."""
    n = lengths.shape[0]
    centres = rng.normal(s / 2.0, sd_frac * s, size=(_PLACEMENT_TRIES, n))
    starts = np.clip(np.rint(centres - lengths / 2.0), 0, s - lengths).astype(np.int64)
    if n == 1:
        return starts[0]
    order = np.argsort(starts, axis=1, kind="stable")
    s_sorted = np.take_along_axis(starts, order, axis=1)
    l_sorted = lengths[order]
    ok = (s_sorted[:, 1:] >= s_sorted[:, :-1] + l_sorted[:, :-1] + min_gap).all(axis=1)
    hit = np.flatnonzero(ok)
    return starts[hit[0]] if hit.size else None


def _uniform_blocks(rng: np.random.Generator, s: int, lengths: np.ndarray, min_gap: int) -> np.ndarray:
    """Starts of disjoint blocks (in the given order) with the free slices split uniformly at random."""
    n = lengths.shape[0]
    free = s - int(lengths.sum()) - (n - 1) * min_gap
    cuts = np.sort(rng.integers(0, free + 1, size=n))
    gaps = np.diff(np.concatenate([[0], cuts]))  # slack before each block
    starts = np.empty(n, dtype=np.int64)
    pos = 0
    for j in range(n):
        pos += int(gaps[j])
        starts[j] = pos
        pos += int(lengths[j]) + min_gap
    return starts


def _ct_structure(rng: np.random.Generator, n_bags: int, p: CTLikeParams) -> _Structure:
    n_slices = rng.integers(p.min_len, p.max_len + 1, size=n_bags).astype(np.int64)
    labels = _exact_labels(rng, n_bags, p.prevalence)
    patient = _patients(rng, n_bags, float(p.repeat_scan_prob), int(p.max_scans_per_patient))
    (r_lo, r_hi), (n_lo, n_hi) = p.r, p.lesions
    n_blocks = np.where(labels == 1, rng.integers(n_lo, n_hi + 1, size=n_bags), 0)
    block_starts = np.full((n_bags, n_hi), -1, dtype=np.int64)
    block_lengths = np.zeros((n_bags, n_hi), dtype=np.int64)
    lengths_all = rng.integers(r_lo, r_hi + 1, size=(n_bags, n_hi)).astype(np.int64)
    for b in np.flatnonzero(n_blocks):  # per positive bag; the placement itself is vectorised over candidates
        m, s = int(n_blocks[b]), int(n_slices[b])
        lengths = lengths_all[b, :m]
        starts = _place_blocks(rng, s, lengths, float(p.centre_sd_frac), int(p.min_gap))
        if starts is None:
            starts = _uniform_blocks(rng, s, lengths, int(p.min_gap))
        order = np.argsort(starts)
        block_starts[b, :m] = starts[order]
        block_lengths[b, :m] = lengths[order]
    offsets = _offsets(n_slices)
    total = int(n_slices.sum())
    sl, w = _block_rows(offsets, block_starts, block_lengths, total, p.profile)
    # relative position of each slice centre along the scan, shifted per scan (field of view)
    jitter = rng.normal(0.0, float(p.position_jitter), size=n_bags)
    bag_of_row = np.repeat(np.arange(n_bags), n_slices)
    within = np.arange(total) - offsets[bag_of_row]
    position = (within + 0.5) / n_slices[bag_of_row] + jitter[bag_of_row]
    m = int(p.anatomy_rank)
    patient_offset = rng.normal(0.0, float(p.patient_offset_scale), size=(int(patient.max()) + 1, m))
    return _Structure(
        offsets, n_slices, labels, patient, block_starts, block_lengths, sl, w, position, patient_offset[patient]
    )


# ----------------------------------------------------------------------------------------------------------- world
@dataclass
class _World:
    """Fixed, seed-independent parts of the CT-like distribution."""

    basis: np.ndarray  # [D, m] orthonormal columns: the anatomy subspace
    cos_coef: np.ndarray  # [H, m]
    sin_coef: np.ndarray  # [H, m]
    direction: np.ndarray | None  # [D] unit lesion direction (direction="random"), else None

    def trajectory(self, position: np.ndarray) -> np.ndarray:
        """Anatomy coordinates ``[N, m]`` at relative positions ``[N]``."""
        h = np.arange(1, self.cos_coef.shape[0] + 1, dtype=np.float64)
        phase = np.pi * position[:, None] * h[None, :]
        return np.cos(phase) @ self.cos_coef + np.sin(phase) @ self.sin_coef


def _make_world(p: CTLikeParams) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence([int(p.world_seed), 0x5EED]))
    d, m, h = int(p.dim), int(p.anatomy_rank), int(p.anatomy_harmonics)
    basis = np.zeros((d, m))
    direction = None
    if p.direction == "random":
        q, _ = np.linalg.qr(rng.standard_normal((d, m + 1)))
        basis, direction = q[:, :m], q[:, m]
    elif m:
        kk = int(p.k)
        q, _ = np.linalg.qr(rng.standard_normal((d - kk, m)))
        basis[kk:] = q
    scale = float(p.anatomy_scale) / math.sqrt(h)
    cos_coef = rng.normal(0.0, scale, size=(h, m))
    sin_coef = rng.normal(0.0, scale, size=(h, m))
    return _World(basis, cos_coef, sin_coef, direction)


# ------------------------------------------------------------------------------------------------------- rendering
def _chunk_rngs(seed: int, n_bags: int) -> tuple[np.random.Generator, list[np.random.Generator]]:
    root = np.random.SeedSequence(int(seed))
    structure_ss, noise_ss = root.spawn(2)
    n_chunks = max(1, -(-n_bags // _CHUNK_BAGS))
    return np.random.default_rng(structure_ss), [np.random.default_rng(s) for s in noise_ss.spawn(n_chunks)]


def _render(
    st: _Structure,
    p: ShiftedMeanParams | CTLikeParams,
    world: _World | None,
    b0: int,
    b1: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Embeddings ``[rows, D]`` float32 of bags ``b0 .. b1 - 1``."""
    r0 = int(st.offsets[b0])
    r1 = int(st.offsets[b1 - 1] + st.n_slices[b1 - 1])
    x = rng.standard_normal((r1 - r0, int(p.dim)), dtype=np.float32)
    delta = float(p.delta)
    if isinstance(p, CTLikeParams):
        if float(p.noise_std) != 1.0:
            x *= np.float32(p.noise_std)
        if world is not None and world.basis.shape[1]:
            z = world.trajectory(st.position[r0:r1])
            z += np.repeat(st.scan_offset[b0:b1], st.n_slices[b0:b1], axis=0)
            x += z.astype(np.float32) @ world.basis.T.astype(np.float32)
        first_k = p.direction == "first_k"
    else:
        first_k = True
    w = st.lesion_weight[r0:r1]
    rows = np.flatnonzero(w)
    if rows.size and delta != 0.0:
        amp = (delta * w[rows]).astype(np.float32)[:, None]
        if first_k:
            x[rows, : int(p.k)] += amp
        else:
            x[rows] += amp * world.direction.astype(np.float32)[None, :]
    return x


@dataclass
class _Plan:
    kind: str
    seed: int
    params: ShiftedMeanParams | CTLikeParams
    structure: _Structure
    world: _World | None
    noise_rngs: list[np.random.Generator]

    def chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        n = self.structure.offsets.shape[0]
        for c, b0 in enumerate(range(0, n, _CHUNK_BAGS)):
            b1 = min(b0 + _CHUNK_BAGS, n)
            yield b0, b1, _render(self.structure, self.params, self.world, b0, b1, self.noise_rngs[c])

    def lesion_direction(self) -> np.ndarray:
        """``[D]`` vector the lesion adds (scaled by ``delta * w``)."""
        if self.world is not None and self.world.direction is not None:
            return self.world.direction.copy()
        v = np.zeros(int(self.params.dim))
        v[: int(self.params.k)] = 1.0
        return v

    def ids(self) -> tuple[np.ndarray, np.ndarray]:
        prefix = _SCAN_PREFIX[self.kind]
        n = self.structure.offsets.shape[0]
        scan_ids = np.array([f"{prefix}-scan{i:06d}" for i in range(n)])
        patient_ids = np.array([f"{prefix}-pat{j:06d}" for j in self.structure.patient_index])
        return scan_ids, patient_ids


def _plan(kind: str, n_bags: int, seed: int, params: Mapping[str, Any]) -> _Plan:
    if isinstance(n_bags, bool) or not isinstance(n_bags, (int, np.integer)) or n_bags < 1:
        raise ValueError(f"n_bags must be a positive int, got {n_bags!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    p = make_params(kind, **params)
    structure_rng, noise_rngs = _chunk_rngs(int(seed), int(n_bags))
    if kind == "shifted_mean":
        st, world = _shifted_mean_structure(structure_rng, int(n_bags), p), None
    else:
        st, world = _ct_structure(structure_rng, int(n_bags), p), _make_world(p)
    return _Plan(kind, int(seed), p, st, world, noise_rngs)


# ------------------------------------------------------------------------------------------------------ public API
def generate_synthetic(kind: str, n_bags: int, seed: int = 0, **params: Any) -> SyntheticBags:
    """Generate a synthetic data set in memory.

    Args:
        kind: ``"shifted_mean"``, ``"ct_like"`` or ``"multi_lesion"``.
        n_bags: number of bags B.
        seed: sample seed (non-negative int); equal seeds give identical data.
        **params: fields of :class:`ShiftedMeanParams` / :class:`CTLikeParams` / :class:`MultiLesionParams`.

    Returns:
        :class:`SyntheticBags` with embeddings ``[T, D]`` float32, offsets/n_slices/labels ``[B]``, slice labels
        ``[T]`` int8, scan and patient ids ``[B]`` and the lesion blocks ``[B, L]``.
    """
    plan = _plan(kind, n_bags, seed, params)
    st = plan.structure
    emb = np.empty((int(st.n_slices.sum()), int(plan.params.dim)), dtype=np.float32)
    for b0, _, x in plan.chunks():
        r0 = int(st.offsets[b0])
        emb[r0 : r0 + x.shape[0]] = x
    scan_ids, patient_ids = plan.ids()
    return SyntheticBags(
        kind=kind,
        seed=int(seed),
        params=plan.params,
        embeddings=emb,
        offsets=st.offsets,
        n_slices=st.n_slices,
        labels=st.labels,
        slice_labels=st.slice_labels,
        scan_ids=scan_ids,
        patient_ids=patient_ids,
        block_starts=st.block_starts,
        block_lengths=st.block_lengths,
        lesion_direction=plan.lesion_direction(),
    )


def generate_shifted_mean(n_bags: int, seed: int = 0, **params: Any) -> SyntheticBags:
    """ShiftedMean bags (Harvey, Loevlie & Hughes, ML4H 2025); ``params`` are :class:`ShiftedMeanParams` fields."""
    return generate_synthetic("shifted_mean", n_bags, seed, **params)


def generate_ct_like(n_bags: int, seed: int = 0, **params: Any) -> SyntheticBags:
    """CT-like bags with one centre-biased, fading lesion block per positive scan (:class:`CTLikeParams`)."""
    return generate_synthetic("ct_like", n_bags, seed, **params)


def generate_multi_lesion(n_bags: int, seed: int = 0, **params: Any) -> SyntheticBags:
    """CT-like bags with several disjoint lesion blocks per positive scan (:class:`MultiLesionParams`)."""
    return generate_synthetic("multi_lesion", n_bags, seed, **params)


def write_synthetic_store(
    kind: str,
    path: str | os.PathLike,
    n_bags: int,
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    **params: Any,
) -> EmbeddingStore:
    """Write a synthetic data set as an embedding store, chunk by chunk (memory stays bounded).

    The store holds exactly the data :func:`generate_synthetic` returns for the same arguments (cast to ``dtype``);
    its ``store.json`` records ``{"synthetic": {"kind", "seed", "n_bags", params...}}``.

    Args:
        kind: ``"shifted_mean"``, ``"ct_like"`` or ``"multi_lesion"``.
        path: destination folder (must not exist unless ``overwrite``).
        n_bags: number of scans.
        seed: sample seed.
        dtype: ``"float32"`` or ``"float16"``.
        overwrite: replace an existing store.
        **params: generator parameters (see :func:`make_params`).

    Returns:
        The opened :class:`EmbeddingStore`.
    """
    if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    plan = _plan(kind, n_bags, seed, params)
    st = plan.structure
    scan_ids, patient_ids = plan.ids()
    meta = _metadata(kind, int(seed), int(n_bags), plan.params)
    with EmbeddingStoreWriter(path, dim=int(plan.params.dim), dtype=dtype, metadata=meta, overwrite=overwrite) as w:
        for b0, b1, x in plan.chunks():
            r0 = int(st.offsets[b0])
            for b in range(b0, b1):
                o, n = int(st.offsets[b]) - r0, int(st.n_slices[b])
                s0 = int(st.offsets[b])
                w.add_scan(
                    str(scan_ids[b]), str(patient_ids[b]), int(st.labels[b]), x[o : o + n], st.slice_labels[s0 : s0 + n]
                )
        return w.close()


# -------------------------------------------------------------------------------------------- Bayes (ShiftedMean)
def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along ``axis``; ``-inf`` entries are ignored, an all ``-inf`` slice gives ``-inf``."""
    m = np.max(a, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m_safe), axis=axis, keepdims=True)) + m_safe
    return np.squeeze(out, axis=axis)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def shifted_mean_posteriors(
    embeddings: np.ndarray,
    offsets: np.ndarray,
    n_slices: np.ndarray,
    r: int | tuple[int, int],
    k: int,
    delta: float,
    prevalence: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Bayes posteriors of the ShiftedMean task, from raw arrays.

    For bag ``x`` of S instances, a run of length r starting at t (instances ``t .. t+r-1``, 0-based) has likelihood
    ratio against "no run" ``LR(r, t) = exp(sum_{j=t}^{t+r-1} sum_{f<k} (delta x_jf - delta^2 / 2))``. With r uniform
    on ``{r_min..r_max}`` and t uniform on ``{0..S-r}`` (the generator's prior) the Bayes factor is
    ``BF = sum_r 1/n_r * 1/(S-r+1) * sum_t LR(r, t)`` and ``P(y=1 | x) = pi BF / (pi BF + 1 - pi)``, computed in log
    space. The per-instance posterior is ``P(j in run | x) = P(y=1 | x) * sum_{(r,t) covering j} w(r, t)`` with
    ``w(r, t)`` the posterior over runs given ``y = 1`` (prior times ``LR``, normalised by ``BF``).

    Args:
        embeddings: ``[T, D]`` (only the first ``k`` columns are read; a memory map is fine).
        offsets: ``[B]`` first row of each bag.
        n_slices: ``[B]`` bag sizes; each must be ``>= r_max``.
        r: run length (int or inclusive ``(r_min, r_max)``).
        k: number of shifted features.
        delta: the shift.
        prevalence: prior ``P(y = 1)``, strictly between 0 and 1.

    Returns:
        ``(scan [B] float64, slice [T] float64)``; rows not owned by any bag get NaN in ``slice``.
    """
    r_lo, r_hi = _int_range("r", r)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    n_slices = np.asarray(n_slices, dtype=np.int64).reshape(-1)
    if offsets.shape != n_slices.shape:
        raise ValueError(f"offsets {offsets.shape} and n_slices {n_slices.shape} differ in shape")
    if embeddings.ndim != 2 or not 1 <= int(k) <= embeddings.shape[1]:
        raise ValueError(f"embeddings must be [T, D] with D >= k={k}, got shape {embeddings.shape}")
    if r_lo < 1 or (n_slices < r_hi).any():
        bad = int(np.flatnonzero(n_slices < r_hi)[0]) if (n_slices < r_hi).any() else -1
        raise ValueError(f"run lengths {r_lo}..{r_hi} must be >= 1 and fit every bag (bag {bad} has fewer slices)")
    if not 0.0 < float(prevalence) < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    if (offsets < 0).any() or (offsets + n_slices > embeddings.shape[0]).any():
        raise ValueError(f"bags reach outside the {embeddings.shape[0]} embedding rows")
    delta = float(delta)
    n_bags, s_max = offsets.shape[0], int(n_slices.max())
    # per-instance log-likelihood-ratio terms, on a padded [B, S_max] grid
    score_rows = delta * np.asarray(embeddings[:, : int(k)], dtype=np.float64).sum(axis=1) - int(k) * delta**2 / 2.0
    col = np.arange(s_max)
    valid = col[None, :] < n_slices[:, None]
    rows = np.where(valid, offsets[:, None] + col[None, :], 0)
    grid = np.where(valid, score_rows[rows], 0.0)
    csum = np.concatenate([np.zeros((n_bags, 1)), np.cumsum(grid, axis=1)], axis=1)  # [B, S_max + 1]
    n_r = r_hi - r_lo + 1
    log_terms = []  # per r: [B, S_max - r + 1] log(prior(r, t) * LR(r, t)), -inf for starts that do not fit
    for rr in range(r_lo, r_hi + 1):
        n_starts = s_max - rr + 1
        t = np.arange(n_starts)
        lr = csum[:, rr : rr + n_starts] - csum[:, :n_starts]
        log_prior = -math.log(n_r) - np.log((n_slices - rr + 1).astype(np.float64))
        log_terms.append(np.where(t[None, :] <= (n_slices - rr)[:, None], lr + log_prior[:, None], -np.inf))
    log_bf = _logsumexp(np.stack([_logsumexp(lt, axis=1) for lt in log_terms], axis=1), axis=1)  # [B]
    logit = math.log(prevalence) - math.log1p(-prevalence) + log_bf
    scan = _sigmoid(logit)
    cover = np.zeros((n_bags, s_max))
    for rr, lt in zip(range(r_lo, r_hi + 1), log_terms, strict=True):
        w = np.exp(lt - log_bf[:, None])  # posterior over starts given y = 1 (and this r)
        cw = np.concatenate([np.zeros((n_bags, 1)), np.cumsum(w, axis=1)], axis=1)
        hi = np.minimum(col, w.shape[1] - 1) + 1
        lo = np.maximum(col - rr + 1, 0)
        cover += np.where(lo[None, :] < hi[None, :], cw[:, hi] - cw[:, lo], 0.0)
    slice_post = np.full(embeddings.shape[0], np.nan)
    slice_post[rows[valid]] = (np.clip(cover, 0.0, 1.0) * scan[:, None])[valid]
    return scan, slice_post


def _bayes_inputs(
    bags: SyntheticBags | EmbeddingStore, overrides: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    if isinstance(bags, SyntheticBags):
        if bags.kind != "shifted_mean":
            raise ValueError(f"the exact Bayes posterior exists for ShiftedMean bags only, got kind {bags.kind!r}")
        params = bags.params.to_dict()
        emb, offsets, counts = bags.embeddings, bags.offsets, bags.n_slices
    elif isinstance(bags, EmbeddingStore):
        meta = bags.metadata.get("synthetic")
        if not isinstance(meta, Mapping) or meta.get("kind") != "shifted_mean":
            kind = meta.get("kind") if isinstance(meta, Mapping) else None
            raise ValueError(
                f"{bags.path}: store metadata does not describe a ShiftedMean data set (synthetic.kind={kind!r}); "
                "the exact Bayes posterior needs one"
            )
        params = dict(meta)
        emb, offsets = bags.embeddings, bags.manifest["offset"].to_numpy()
        counts = bags.manifest["n_slices"].to_numpy()
    else:
        raise TypeError(f"bags must be SyntheticBags or EmbeddingStore, got {type(bags).__name__}")
    unknown = sorted(set(overrides) - {"r", "k", "delta", "prevalence"})
    if unknown:
        raise ValueError(f"unknown Bayes parameter(s) {unknown}; use r, k, delta, prevalence")
    chosen = {name: params[name] for name in ("r", "k", "delta", "prevalence")}
    chosen.update({name: v for name, v in overrides.items() if v is not None})
    if isinstance(chosen["r"], list):
        chosen["r"] = tuple(chosen["r"])
    return emb, offsets, counts, chosen


def bayes_scan_posterior(bags: SyntheticBags | EmbeddingStore, **overrides: Any) -> np.ndarray:
    """Exact ``P(y = 1 | x)`` per bag for ShiftedMean data: the Bayes ceiling of scan-level prediction.

    Args:
        bags: in-memory ShiftedMean bags or a store written by :func:`write_synthetic_store` (parameters are read
            from it; a float16 store gives the posterior of the rounded embeddings).
        **overrides: ``r``, ``k``, ``delta`` or ``prevalence`` to use instead of the generating values.

    Returns:
        ``[B]`` float64 posteriors in bag (manifest) order. See :func:`shifted_mean_posteriors` for the formula.
    """
    emb, offsets, counts, p = _bayes_inputs(bags, overrides)
    return shifted_mean_posteriors(emb, offsets, counts, **p)[0]


def bayes_slice_posterior(bags: SyntheticBags | EmbeddingStore, **overrides: Any) -> np.ndarray:
    """Exact ``P(instance j lies in the shifted run | x)`` for ShiftedMean data: the localization ceiling.

    Args:
        bags: as for :func:`bayes_scan_posterior`.
        **overrides: as for :func:`bayes_scan_posterior`.

    Returns:
        ``[T]`` float64, aligned with the embedding rows (NaN for rows owned by no bag).
    """
    emb, offsets, counts, p = _bayes_inputs(bags, overrides)
    return shifted_mean_posteriors(emb, offsets, counts, **p)[1]
