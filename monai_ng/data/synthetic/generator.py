"""Synthetic bags in memory: bag structure (lengths, labels, lesion blocks, patients), anatomy world, rendering."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_ng.data.synthetic.params import CTLikeParams, CTRegimeParams, ShiftedMeanParams, make_params

__all__ = ["SyntheticBags", "generate_synthetic"]

# bags per independently seeded chunk of embeddings; part of the data definition (changing it changes the data)
_CHUNK_BAGS = 256
_SCAN_PREFIX = {"shifted_mean": "sm", "ct_like": "ct", "multi_lesion": "ml", "ct_regime": "cr"}
# candidate placements drawn at once per bag when placing several disjoint lesion blocks
_PLACEMENT_TRIES = 64


@dataclass
class SyntheticBags:
    """An in-memory synthetic data set (one row block per bag, like an embedding store).

    Attributes:
        kind: ``"shifted_mean"``, ``"ct_like"``, ``"multi_lesion"`` or ``"ct_regime"``.
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
        distractor_weight: ``ct_regime`` only: ``[T, n_sites]`` float32 amplitude of each anatomical distractor at
            each slice (0 away from its site; present in negative and positive scans alike), else None.
        distractor_directions: ``ct_regime`` only: ``[n_sites, D]`` unit vectors the distractors add, else None.
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
    distractor_weight: np.ndarray | None = None
    distractor_directions: np.ndarray | None = None

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
    distractor_weight: np.ndarray | None = None  # [T, n_sites] float32 amplitude of each distractor (ct_regime)


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
    rng: np.random.Generator, s: int, lengths: np.ndarray, sd_frac: float, min_gap: int, centre_frac: float = 0.5
) -> np.ndarray | None:
    """Starts of ``len(lengths)`` disjoint blocks with centre-biased centres, or None if no candidate fitted."""
    n = lengths.shape[0]
    centres = rng.normal(s * centre_frac, sd_frac * s, size=(_PLACEMENT_TRIES, n))
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
    centre_frac = float(getattr(p, "centre_frac", 0.5))
    for b in np.flatnonzero(n_blocks):  # per positive bag; the placement itself is vectorised over candidates
        m, s = int(n_blocks[b]), int(n_slices[b])
        lengths = lengths_all[b, :m]
        starts = _place_blocks(rng, s, lengths, float(p.centre_sd_frac), int(p.min_gap), centre_frac)
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
    st = _Structure(
        offsets, n_slices, labels, patient, block_starts, block_lengths, sl, w, position, patient_offset[patient]
    )
    if isinstance(p, CTRegimeParams) and p.distractor_positions:
        # drawn last, so everything above matches ct_like with the same seed and parameters
        st.distractor_weight = _distractor_weights(rng, p, position, bag_of_row, n_bags)
    return st


def _distractor_weights(
    rng: np.random.Generator, p: CTRegimeParams, position: np.ndarray, bag_of_row: np.ndarray, n_bags: int
) -> np.ndarray:
    """``[T, n_sites]`` float32 amplitude of each anatomical distractor at each slice (raised cosine in position)."""
    centre = np.asarray(p.distractor_positions)[None, :]
    width = np.asarray(p.distractor_widths)[None, :]
    amp = float(p.distractor_delta) * np.exp(rng.normal(0.0, float(p.distractor_amp_sd), size=(n_bags, centre.size)))
    d = (position[:, None] - centre) / width
    shape = np.where(np.abs(d) < 0.5, np.cos(np.pi * d) ** 2, 0.0)
    return (shape * amp[bag_of_row]).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------- world
@dataclass
class _World:
    """Fixed, seed-independent parts of the CT-like distribution."""

    basis: np.ndarray  # [D, m] orthonormal columns: the anatomy subspace
    cos_coef: np.ndarray  # [H, m]
    sin_coef: np.ndarray  # [H, m]
    direction: np.ndarray | None  # [D] unit lesion direction (direction="random"), else None
    distractors: np.ndarray | None = None  # [n_sites, D] unit distractor directions (ct_regime)

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
    distractors = None
    n_sites = len(p.distractor_positions) if isinstance(p, CTRegimeParams) else 0
    if n_sites:  # drawn last, so the anatomy and lesion direction match ct_like with the same world_seed
        known = np.concatenate([basis, direction[:, None]], axis=1)
        g = rng.standard_normal((d, n_sites))
        g -= known @ (known.T @ g)  # orthogonal to the anatomy and the lesion direction
        ortho, _ = np.linalg.qr(g)
        c = float(p.distractor_cosine)
        distractors = (c * direction[:, None] + math.sqrt(1.0 - c * c) * ortho).T
    return _World(basis, cos_coef, sin_coef, direction, distractors)


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
        if isinstance(p, CTRegimeParams) and float(p.noise_ar) != 0.0:
            _ar_along_slices(x, st.offsets[b0:b1] - r0, st.n_slices[b0:b1], float(p.noise_ar))
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
    if world is not None and world.distractors is not None and st.distractor_weight is not None:
        dw = st.distractor_weight[r0:r1]
        rows = np.flatnonzero(dw.any(axis=1))
        if rows.size:
            x[rows] += dw[rows] @ world.distractors.astype(np.float32)
    return x


def _ar_along_slices(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rho: float) -> None:
    """Turn i.i.d. rows into a stationary AR(1) along each bag's slices, in place (per feature, same variance)."""
    r, c = np.float32(rho), np.float32(math.sqrt(1.0 - rho * rho))
    not_first = np.ones(x.shape[0], dtype=bool)
    not_first[starts] = False
    x[not_first] *= c
    for j in range(1, int(lengths.max())):
        rows = starts[lengths > j] + j
        x[rows] += r * x[rows - 1]


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
        kind: ``"shifted_mean"``, ``"ct_like"``, ``"multi_lesion"`` or ``"ct_regime"``.
        n_bags: number of bags B.
        seed: sample seed (non-negative int); equal seeds give identical data.
        **params: fields of :class:`ShiftedMeanParams` / :class:`CTLikeParams` / :class:`MultiLesionParams` /
            :class:`CTRegimeParams` (for ``"ct_regime"``, ``region`` selects the preset the others override).

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
        distractor_weight=st.distractor_weight,
        distractor_directions=None if plan.world is None else plan.world.distractors,
    )
