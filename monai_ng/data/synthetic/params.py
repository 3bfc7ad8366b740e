"""Parameters of the synthetic generators: ShiftedMean, CT-like and multi-lesion (validated dataclasses)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "REGION_PRESETS",
    "SYNTHETIC_KINDS",
    "CTLikeParams",
    "CTRegimeParams",
    "MultiLesionParams",
    "ShiftedMeanParams",
    "make_params",
]

SYNTHETIC_KINDS = ("shifted_mean", "ct_like", "multi_lesion", "ct_regime")
_PROFILES = ("cosine", "gaussian", "flat")
_DIRECTIONS = ("random", "first_k")


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


_REGIONS = ("head", "chest", "abdomen")

#: per-region defaults of ``ct_regime`` (evidence and assumptions behind each value: docs/synthetic.md, section (d))
REGION_PRESETS: dict[str, dict[str, Any]] = {
    "head": {
        "min_len": 24,
        "max_len": 45,
        "r": (3, 14),
        "centre_sd_frac": 0.125,
        "noise_ar": 0.8,
        "distractor_positions": (0.12, 0.55, 0.93),
        "distractor_widths": (0.25, 0.1, 0.12),
    },
    "chest": {
        "min_len": 150,
        "max_len": 342,
        "r": (10, 60),
        "centre_sd_frac": 0.05,
        "noise_ar": 0.95,
        "distractor_positions": (0.35, 0.55, 0.72),
        "distractor_widths": (0.3, 0.15, 0.12),
    },
    "abdomen": {
        "min_len": 200,
        "max_len": 437,
        "r": (8, 50),
        "centre_sd_frac": 0.15,
        "noise_ar": 0.95,
        "distractor_positions": (0.1, 0.4, 0.65),
        "distractor_widths": (0.15, 0.35, 0.2),
    },
}


def _float_tuple(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


@dataclass(frozen=True)
class CTRegimeParams(CTLikeParams):
    """:class:`CTLikeParams` in the regime of real CT embeddings: correlated nuisance, anatomical distractors, and
    scan lengths / lesion placement per body region.

    The defaults are the ``"chest"`` preset; :meth:`for_region` (and :func:`make_params`) apply the preset of another
    region from :data:`REGION_PRESETS` before the overrides. Constructing the class directly takes every value as given
    (``region`` is then only a label).

    Attributes:
        region: ``"head"``, ``"chest"``, ``"abdomen"`` or None (custom); recorded in the store metadata.
        noise_ar: AR(1) coefficient rho of the nuisance along the slices of a scan, per feature and stationary:
            ``n_1 = noise_std * e_1``, ``n_j = rho n_{j-1} + sqrt(1 - rho^2) noise_std * e_j``; 0 gives the i.i.d. noise
            of ``ct_like`` bit for bit.
        centre_frac: mean of the lesion block centres as a fraction of the scan (``ct_like``: 0.5).
        distractor_positions: relative positions ``u`` (0 = first slice, 1 = last) of the anatomical distractors present
            in every scan; they move with the per-scan field-of-view shift like the anatomy.
        distractor_widths: their extents as fractions of the scan (one per position); raised-cosine profile
            ``cos^2(pi (u - c) / width)`` for ``|u - c| < width / 2``.
        distractor_delta: peak distractor amplitude (before the per-scan factor).
        distractor_cosine: cosine between each distractor direction and the lesion direction (in ``[0, 1)``); the rest
            of each direction is a unit vector orthogonal to the lesion direction, the anatomy and the other distractors.
        distractor_amp_sd: per scan and site, the amplitude is ``distractor_delta * exp(N(0, distractor_amp_sd^2))``.
    """

    min_len: int = 150
    max_len: int = 342
    r: int | tuple[int, int] = (10, 60)
    centre_sd_frac: float = 0.05
    region: str | None = "chest"
    noise_ar: float = 0.95
    centre_frac: float = 0.5
    distractor_positions: tuple[float, ...] = (0.35, 0.55, 0.72)
    distractor_widths: tuple[float, ...] = (0.3, 0.15, 0.12)
    distractor_delta: float = 2.5
    distractor_cosine: float = 0.6
    distractor_amp_sd: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region is not None and self.region not in _REGIONS:
            raise ValueError(f"region must be one of {_REGIONS} or None, got {self.region!r}")
        rho = float(self.noise_ar)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"noise_ar must lie in [0, 1), got {self.noise_ar}")
        if not 0.0 <= float(self.centre_frac) <= 1.0:
            raise ValueError(f"centre_frac must lie in [0, 1], got {self.centre_frac}")
        pos = _float_tuple("distractor_positions", self.distractor_positions)
        wid = _float_tuple("distractor_widths", self.distractor_widths)
        if len(pos) != len(wid):
            raise ValueError(f"distractor_positions ({len(pos)}) and distractor_widths ({len(wid)}) differ in length")
        if any(w <= 0 for w in wid):
            raise ValueError(f"distractor_widths must be > 0, got {wid}")
        object.__setattr__(self, "distractor_positions", pos)
        object.__setattr__(self, "distractor_widths", wid)
        if not 0.0 <= float(self.distractor_cosine) < 1.0:
            raise ValueError(f"distractor_cosine must lie in [0, 1), got {self.distractor_cosine}")
        for name in ("distractor_delta", "distractor_amp_sd"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if pos and self.direction != "random":
            raise ValueError("distractors need direction='random' (their directions are built around the lesion's)")
        if pos and int(self.anatomy_rank) + 1 + len(pos) > int(self.dim):
            raise ValueError(
                f"anatomy_rank ({self.anatomy_rank}) + 1 + {len(pos)} distractors must be <= dim ({self.dim})"
            )

    @classmethod
    def for_region(cls, region: str | None = "chest", **overrides: Any) -> CTRegimeParams:
        """The preset of ``region`` (:data:`REGION_PRESETS`; None: the class defaults) with ``overrides`` on top."""
        if region is not None and region not in REGION_PRESETS:
            raise ValueError(f"region must be one of {_REGIONS} or None, got {region!r}")
        values = dict(REGION_PRESETS[region]) if region is not None else {}
        values.update(overrides)
        return cls(region=region, **values)


_PARAM_CLASSES: dict[str, type] = {
    "shifted_mean": ShiftedMeanParams,
    "ct_like": CTLikeParams,
    "multi_lesion": MultiLesionParams,
    "ct_regime": CTRegimeParams,
}


def _params_dict(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, tuple):
            value = [float(v) if isinstance(v, (float, np.floating)) else int(v) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out[f.name] = value
    return out


def make_params(kind: str, **params: Any) -> ShiftedMeanParams | CTLikeParams:
    """The parameter object of ``kind`` with ``params`` overriding its defaults.

    For ``"ct_regime"`` the defaults are those of ``region`` (:data:`REGION_PRESETS`; ``"chest"`` when not given).

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
    if cls is CTRegimeParams:
        return CTRegimeParams.for_region(params.pop("region", "chest"), **params)
    return cls(**params)
