"""The per-scan result every output (JSON, CSV, figure, DICOM documents) is written from.

A :class:`ScanResult` is one scan's probability and one :class:`SliceScore` per axial slice, in inferior→superior
order (increasing patient z). It is validated once, when built, so every writer can trust it. It holds no patient
identifier: ``scan_id`` must be a pseudonymous id that is safe as a file name, and the DICOM UIDs it may carry are
references, not identifiers.

:func:`fit_normal_reference` is the Normal Guidance reference of E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal
Guidance is what Attention Needs" (2026): the discrete normal with the mean and variance of the attention over slice
index, normalised to sum 1 — the same numbers as :func:`monai_ng.losses.normal_guidance.normal_reference`, computed in
float64 with NumPy so that reporting does not need torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA",
    "SliceScore",
    "ScanResult",
    "check_scan_id",
    "fit_normal_reference",
]

SCHEMA = "monai_ng.scan_result/1"
"""The ``schema`` value of :meth:`ScanResult.to_json_dict`; bumped when the layout changes."""

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_FORBIDDEN_ID_CHARS = set('/\\:*?"<>|')
_MAX_SCAN_ID = 128


def check_scan_id(scan_id: object) -> str:
    """Check that ``scan_id`` can be used on its own as a file name, and return it.

    Output files are named ``<scan_id>.json``, ``<scan_id>_kos.dcm``, ..., so the id must not be able to leave the
    output folder or hide: no path separator (``/`` or ``\\``), not ``.``/``..`` or starting with ``.``, none of
    ``:*?"<>|`` (invalid on Windows), no control character, no leading/trailing space, at most 128 characters.

    Raises:
        TypeError: not a string.
        ValueError: the reason the id is not a safe file name.
    """
    if not isinstance(scan_id, str):
        raise TypeError(f"scan_id must be a str, got {type(scan_id).__name__}")
    if not scan_id:
        raise ValueError("scan_id must not be empty")
    if len(scan_id) > _MAX_SCAN_ID:
        raise ValueError(f"scan_id must be at most {_MAX_SCAN_ID} characters, got {len(scan_id)}")
    bad = sorted({c for c in scan_id if c in _FORBIDDEN_ID_CHARS})
    if bad:
        raise ValueError(
            f"scan_id {scan_id!r} is not a safe file name: it contains {' '.join(bad)} "
            '(path separators and :*?"<>| are refused)'
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in scan_id):
        raise ValueError(f"scan_id {scan_id!r} is not a safe file name: it contains a control character")
    if scan_id.startswith("."):
        raise ValueError(f"scan_id {scan_id!r} is not a safe file name: it must not start with '.' ('.', '..', hidden)")
    if scan_id != scan_id.strip():
        raise ValueError(f"scan_id {scan_id!r} is not a safe file name: leading or trailing whitespace")
    return scan_id


def _check_uid(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, got {type(value).__name__}")
    if len(value) > 64 or not _UID.match(value):
        raise ValueError(f"{what} {value!r} is not a DICOM UID (digits and dots, no leading zeros, at most 64 chars)")
    return value


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    return float(value)


@dataclass(frozen=True)
class SliceScore:
    """One axial slice of a scan.

    Attributes:
        index: position in the scan, 0-based, inferior→superior (0 = most inferior slice).
        score: the slice's attention, averaged over heads (non-negative, finite).
        z_mm: patient z of the slice centre in mm (DICOM ImagePositionPatient[2]); None when unknown (e.g. NIfTI
            without an affine the caller trusts).
        sop_instance_uid: the slice's DICOM SOPInstanceUID, None for non-DICOM input.
        sop_class_uid: the slice's DICOM SOPClassUID (e.g. CT Image Storage), None when unknown.
    """

    index: int
    score: float
    z_mm: float | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)):
            raise TypeError(f"slice index must be an int, got {type(self.index).__name__}")
        if self.index < 0:
            raise ValueError(f"slice index must be >= 0, got {self.index}")
        object.__setattr__(self, "index", int(self.index))
        score = _as_float(self.score, f"score of slice {self.index}")
        if not math.isfinite(score):
            raise ValueError(f"score of slice {self.index} must be finite, got {score}")
        if score < 0:
            raise ValueError(f"score of slice {self.index} must be >= 0 (it is an attention weight), got {score}")
        object.__setattr__(self, "score", score)
        if self.z_mm is not None:
            z = _as_float(self.z_mm, f"z_mm of slice {self.index}")
            if not math.isfinite(z):
                raise ValueError(f"z_mm of slice {self.index} must be finite or None, got {z}")
            object.__setattr__(self, "z_mm", z)
        _check_uid(self.sop_instance_uid, f"sop_instance_uid of slice {self.index}")
        _check_uid(self.sop_class_uid, f"sop_class_uid of slice {self.index}")

    def to_json_dict(self) -> dict[str, Any]:
        """``{"index", "score", "z_mm", "sop_instance_uid", "sop_class_uid"}`` (None → JSON null)."""
        return {
            "index": self.index,
            "score": self.score,
            "z_mm": self.z_mm,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SliceScore:
        """Inverse of :meth:`to_json_dict`; ``z_mm`` and the UIDs may be absent (None)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a slice must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("index", "score") if k not in data]
        if missing:
            raise ValueError(f"slice entry lacks {', '.join(missing)}: {dict(data)!r}")
        return cls(
            index=data["index"],
            score=data["score"],
            z_mm=data.get("z_mm"),
            sop_instance_uid=data.get("sop_instance_uid"),
            sop_class_uid=data.get("sop_class_uid"),
        )


@dataclass(frozen=True)
class ScanResult:
    """One scan's output: its probability, finding flag and per-slice scores.

    Attributes:
        scan_id: pseudonymous id of the scan, safe as a file name (see :func:`check_scan_id`); never a patient
            identifier unless the user's own manifest chose it.
        scan_probability: P(finding) for the scan, in [0, 1].
        slices: one :class:`SliceScore` per slice, inferior→superior, with ``index`` 0..N-1 in order. ``z_mm`` is
            given for all slices or for none, and then strictly increasing; ``sop_instance_uid`` likewise all or
            none, and unique.
        threshold: the scan is labelled a finding when ``scan_probability >= threshold``; in [0, 1].
        study_instance_uid: StudyInstanceUID of the source series, None for non-DICOM input.
        series_instance_uid: SeriesInstanceUID of the source series, None for non-DICOM input.
    """

    scan_id: str
    scan_probability: float
    slices: tuple[SliceScore, ...]
    threshold: float = 0.5
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    _by_rank: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_scan_id(self.scan_id)
        where = f"scan {self.scan_id!r}"
        p = _as_float(self.scan_probability, f"{where}: scan_probability")
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"{where}: scan_probability must be in [0, 1], got {p}")
        object.__setattr__(self, "scan_probability", p)
        t = _as_float(self.threshold, f"{where}: threshold")
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"{where}: threshold must be in [0, 1], got {t}")
        object.__setattr__(self, "threshold", t)
        _check_uid(self.study_instance_uid, f"{where}: study_instance_uid")
        _check_uid(self.series_instance_uid, f"{where}: series_instance_uid")

        if isinstance(self.slices, (str, bytes)) or not isinstance(self.slices, Sequence):
            raise TypeError(f"{where}: slices must be a sequence of SliceScore, got {type(self.slices).__name__}")
        slices = tuple(self.slices)
        if not slices:
            raise ValueError(f"{where}: slices must not be empty")
        for pos, s in enumerate(slices):
            if not isinstance(s, SliceScore):
                raise TypeError(f"{where}: slices[{pos}] must be a SliceScore, got {type(s).__name__}")
            if s.index != pos:
                raise ValueError(
                    f"{where}: slice indices must be 0..{len(slices) - 1} in inferior→superior order, "
                    f"but slices[{pos}].index is {s.index}"
                )
        has_z = [s.z_mm is not None for s in slices]
        if any(has_z) and not all(has_z):
            raise ValueError(f"{where}: z_mm must be given for every slice or for none ({sum(has_z)} of {len(slices)})")
        if all(has_z):
            for a, b in zip(slices[:-1], slices[1:], strict=True):
                if not b.z_mm > a.z_mm:  # type: ignore[operator]
                    raise ValueError(
                        f"{where}: z_mm must increase strictly inferior→superior, but slice {b.index} is at "
                        f"{b.z_mm} mm after slice {a.index} at {a.z_mm} mm"
                    )
        has_uid = [s.sop_instance_uid is not None for s in slices]
        if any(has_uid) and not all(has_uid):
            raise ValueError(
                f"{where}: sop_instance_uid must be given for every slice or for none ({sum(has_uid)} of {len(slices)})"
            )
        if all(has_uid):
            seen: dict[str, int] = {}
            for s in slices:
                if s.sop_instance_uid in seen:
                    raise ValueError(
                        f"{where}: slices {seen[s.sop_instance_uid]} and {s.index} share SOPInstanceUID "
                        f"{s.sop_instance_uid}"
                    )
                seen[s.sop_instance_uid] = s.index  # type: ignore[index]
        object.__setattr__(self, "slices", slices)
        order = sorted(range(len(slices)), key=lambda i: (-slices[i].score, i))
        object.__setattr__(self, "_by_rank", tuple(order))

    @property
    def finding(self) -> bool:
        """True when ``scan_probability >= threshold``."""
        return self.scan_probability >= self.threshold

    @property
    def num_slices(self) -> int:
        """N, the number of slices."""
        return len(self.slices)

    @property
    def scores(self) -> np.ndarray:
        """``[N]`` float64 slice scores, inferior→superior."""
        return np.array([s.score for s in self.slices], dtype=np.float64)

    @property
    def has_positions(self) -> bool:
        """True when every slice has ``z_mm``."""
        return self.slices[0].z_mm is not None

    def top_k(self, k: int) -> tuple[SliceScore, ...]:
        """The ``k`` highest-scoring slices, best first.

        Ties are broken by the lower index (the more inferior slice first), so the selection is deterministic.
        ``k`` larger than the number of slices returns every slice.

        Args:
            k: how many slices, >= 1.

        Returns:
            ``min(k, N)`` slices ordered by decreasing score, then increasing index.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return tuple(self.slices[i] for i in self._by_rank[: int(k)])

    def to_json_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict holding everything needed to rebuild the result.

        Args:
            top_k: when given, also store ``"top_k": {"k": k, "indices": [...]}`` (best first), for readers that
                want the flagged slices without ranking themselves. :meth:`from_json_dict` checks it.

        Returns:
            ``{"schema", "scan_id", "scan_probability", "threshold", "finding", "study_instance_uid",
            "series_instance_uid", "num_slices", "slices": [...], ["top_k"]}``.
        """
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "scan_id": self.scan_id,
            "scan_probability": self.scan_probability,
            "threshold": self.threshold,
            "finding": self.finding,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "num_slices": self.num_slices,
            "slices": [s.to_json_dict() for s in self.slices],
        }
        if top_k is not None:
            out["top_k"] = {"k": int(top_k), "indices": [s.index for s in self.top_k(top_k)]}
        return out

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ScanResult:
        """Rebuild a result from :meth:`to_json_dict` output, checking its derived fields.

        Raises:
            ValueError: unknown schema, a missing key, or ``finding``/``num_slices``/``top_k`` that disagree with the
                slices and probability (a hand-edited or corrupted file).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a scan result must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ValueError(f"unknown scan result schema {data.get('schema')!r}, expected {SCHEMA!r}")
        missing = [k for k in ("scan_id", "scan_probability", "slices") if k not in data]
        if missing:
            raise ValueError(f"scan result lacks {', '.join(missing)}")
        slices = data["slices"]
        if not isinstance(slices, list):
            raise TypeError(f"'slices' must be a JSON array, got {type(slices).__name__}")
        result = cls(
            scan_id=data["scan_id"],
            scan_probability=data["scan_probability"],
            slices=tuple(SliceScore.from_json_dict(s) for s in slices),
            threshold=data.get("threshold", 0.5),
            study_instance_uid=data.get("study_instance_uid"),
            series_instance_uid=data.get("series_instance_uid"),
        )
        where = f"scan {result.scan_id!r}"
        if "finding" in data and data["finding"] != result.finding:
            raise ValueError(
                f"{where}: stored finding={data['finding']!r} disagrees with scan_probability "
                f"{result.scan_probability} and threshold {result.threshold}"
            )
        if "num_slices" in data and data["num_slices"] != result.num_slices:
            raise ValueError(f"{where}: num_slices={data['num_slices']!r} but {result.num_slices} slices are listed")
        if "top_k" in data:
            stored = data["top_k"]
            if not isinstance(stored, Mapping) or "k" not in stored or "indices" not in stored:
                raise ValueError(f"{where}: top_k must be {{'k': int, 'indices': [...]}}, got {stored!r}")
            expected = [s.index for s in result.top_k(stored["k"])]
            if list(stored["indices"]) != expected:
                raise ValueError(
                    f"{where}: stored top_k indices {list(stored['indices'])} disagree with the scores ({expected})"
                )
        return result


def fit_normal_reference(scores: Sequence[float] | np.ndarray, eps: float = 1e-6) -> tuple[float, float, np.ndarray]:
    """The Normal Guidance reference of one attention vector (Harvey, Loevlie & Hughes, 2026).

    With ``a_j`` the attention of slice ``j`` (here 0-based, ``j = 0..N-1``)::

        mu      = sum_j j a_j / sum_j a_j
        sigma^2 = sum_j (j - mu)^2 a_j / sum_j a_j          (clamped >= eps)
        r_j     = N(j; mu, sigma) / sum_k N(k; mu, sigma)

    The paper (and :func:`monai_ng.losses.normal_guidance.normal_reference`) index slices from 1; shifting every
    index by one shifts ``mu`` by one and leaves ``sigma`` and ``r`` unchanged, so ``r`` equals that function's
    output and ``mu`` here is the paper's ``mu - 1``, directly usable as a (fractional) slice index.

    Args:
        scores: ``[N]`` non-negative, finite attention of one scan (head-averaged), with a positive sum.
        eps: lower clamp of the variance, as in the loss (default 1e-6).

    Returns:
        ``(mu, sigma, reference)``: mean slice index (0-based), standard deviation in slices, and the ``[N]`` float64
        reference summing to 1.
    """
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"scores must be finite, got non-finite values at indices {np.flatnonzero(~np.isfinite(a))}")
    if np.any(a < 0):
        raise ValueError(f"scores must be >= 0 (attention weights), got negative values at {np.flatnonzero(a < 0)}")
    mass = float(a.sum())
    if not mass > 0:
        raise ValueError("scores sum to 0: no attention mass to fit a normal to")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    j = np.arange(a.size, dtype=np.float64)
    mu = float((j * a).sum() / mass)
    var = max(float((((j - mu) ** 2) * a).sum() / mass), eps)
    log_r = -((j - mu) ** 2) / (2.0 * var)
    r = np.exp(log_r - log_r.max())
    r /= r.sum()
    return mu, math.sqrt(var), r
