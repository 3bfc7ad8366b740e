"""Phantom head CT with lesions of varied size, contrast and position: the offline stand-in for a semi-synthetic set.

The Normal Guidance paper (Harvey, Loevlie & Hughes, 2026) evaluates multi-head guidance on a semi-synthetic
multi-lesion set whose construction is given only in its appendix. This module builds the project's offline stand-in
on the head phantom (:func:`~monai_ng.data.phantom.make_phantom_volume`): each positive scan receives one lesion
(:data:`SINGLE_LESION`) or 2-3 disjoint lesions (:data:`MULTI_LESION`), each a spheroid-like hyperdense blob inside the
brain whose extent along z, in-plane radius, HU and in-plane position are drawn per lesion from :class:`LesionRanges`.
Negative scans have no lesion. The scans are written as DICOM series with a label CSV in the format of
``monai-ng ingest --dataset folder`` (``SeriesInstanceUID, label, patient_id, slice_labels``), so they go through the
real pipeline (ingest -> embed -> embedding store) with their per-slice labels.

Layout written by :func:`write_lesion_benchmark`::

    root/scans/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    root/labels.csv     one row per scan (the folder adapter's label CSV, slice labels inferior -> superior)
    root/truth.json     the ground truth returned, with every lesion's block, HU, radius and centre
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid
from tqdm.auto import tqdm

from monai_ng.data.phantom.dicom_writer import write_dicom_series
from monai_ng.data.phantom.volume import HU_MAX, HU_MIN, PhantomVolume, head_skull_ellipse, make_phantom_volume

__all__ = [
    "HEAD_SLICES",
    "MULTI_LESION",
    "SINGLE_LESION",
    "LesionRanges",
    "insert_lesions",
    "place_lesion_blocks",
    "write_lesion_benchmark",
]

#: Slices per head scan, uniform on this range: the ``ct_regime`` head preset (mean 34.5, the paper's head CT
#: average 34.6 slices per scan).
HEAD_SLICES: tuple[int, int] = (24, 45)
#: Smallest in-plane lesion radius on any lesion slice, in pixels (a disc of radius 1.5 px covers at least 5 pixels).
MIN_RADIUS_PX = 1.5


@dataclass(frozen=True)
class LesionRanges:
    """Ranges the lesions of one positive scan are drawn from (uniformly, independently per lesion).

    Attributes:
        count: lesions per positive scan, ``(min, max)``.
        extent: slices per lesion along z, ``(min, max)``.
        lesion_hu: mean HU of a lesion, ``(low, high)``; acute intracranial blood is about 50-90 HU against the
            phantom brain's 28-33 HU.
        radius_mm: largest in-plane radius of a lesion (at its middle slice), ``(low, high)``; it shrinks toward the
            block's ends like a spheroid's cross-section but never below :data:`MIN_RADIUS_PX`, so every labelled
            slice shows the lesion.
        centre_sd_frac: single lesions: block centre ``~ Normal(S / 2, centre_sd_frac * S)`` clipped into the scan
            (the ``ct_regime`` head preset's 0.125); ``None``: the blocks are placed uniformly at random among all
            disjoint placements with at least ``min_gap`` negative slices between them.
        min_gap: negative slices required between two lesions.
    """

    count: tuple[int, int] = (1, 1)
    extent: tuple[int, int] = (3, 14)
    lesion_hu: tuple[float, float] = (50.0, 90.0)
    radius_mm: tuple[float, float] = (5.0, 20.0)
    centre_sd_frac: float | None = 0.125
    min_gap: int = 1

    def __post_init__(self) -> None:
        for name in ("count", "extent", "lesion_hu", "radius_mm"):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"LesionRanges.{name} must be a (low, high) pair with low <= high, got {value!r}")
        if self.count[0] < 1 or self.extent[0] < 1:
            raise ValueError(f"LesionRanges.count and .extent must be >= 1, got {self.count!r} and {self.extent!r}")
        if self.radius_mm[0] <= 0:
            raise ValueError(f"LesionRanges.radius_mm must be positive, got {self.radius_mm!r}")
        if not (HU_MIN <= self.lesion_hu[0] and self.lesion_hu[1] <= HU_MAX):
            raise ValueError(f"LesionRanges.lesion_hu must lie in [{HU_MIN}, {HU_MAX}], got {self.lesion_hu!r}")
        if self.min_gap < 0:
            raise ValueError(f"LesionRanges.min_gap must be >= 0, got {self.min_gap}")
        if self.centre_sd_frac is not None and self.centre_sd_frac <= 0:
            raise ValueError(f"LesionRanges.centre_sd_frac must be positive or None, got {self.centre_sd_frac}")

    def min_slices(self) -> int:
        """Fewest slices a scan needs so that the largest draw (most lesions, longest extent) always fits."""
        return self.count[1] * self.extent[1] + (self.count[1] - 1) * self.min_gap


#: One lesion per positive scan, 3-14 slices (the ``ct_regime`` head preset's extent), centred near the scan middle.
SINGLE_LESION = LesionRanges()
#: 2-3 disjoint lesions per positive scan, 2-7 slices each, placed uniformly (3 x 7 + 2 gaps = 23 <= 24 slices).
MULTI_LESION = LesionRanges(count=(2, 3), extent=(2, 7), centre_sd_frac=None)


def place_lesion_blocks(
    n_slices: int,
    lengths: list[int],
    rng: np.random.Generator,
    centre_sd_frac: float | None = None,
    min_gap: int = 1,
) -> list[tuple[int, int]]:
    """Disjoint blocks of slices ``[start, stop)`` with the given lengths, in increasing order.

    One block with ``centre_sd_frac``: centre ``~ Normal((S - 1) / 2, centre_sd_frac * S)``, start clipped so the
    block fits. Otherwise the blocks keep their order and the ``S - sum(lengths) - (k - 1) * min_gap`` free slices are
    split into ``k + 1`` gaps uniformly among all compositions (every disjoint placement equally likely).

    Raises:
        ValueError: when the blocks cannot fit, or ``centre_sd_frac`` is given for several blocks.
    """
    k = len(lengths)
    if k < 1 or min(lengths) < 1:
        raise ValueError(f"lengths must be a non-empty list of positive block lengths, got {lengths!r}")
    free = n_slices - sum(lengths) - (k - 1) * min_gap
    if free < 0:
        raise ValueError(f"{k} blocks of {lengths} slices with gap {min_gap} do not fit in {n_slices} slices")
    if centre_sd_frac is not None:
        if k != 1:
            raise ValueError(f"centre_sd_frac places one block; got {k} blocks")
        centre = rng.normal((n_slices - 1) / 2.0, centre_sd_frac * n_slices)
        start = int(np.clip(round(centre - (lengths[0] - 1) / 2.0), 0, n_slices - lengths[0]))
        return [(start, start + lengths[0])]
    # a uniform composition of `free` into k + 1 non-negative parts: k + 1 - 1 bars among free + k positions
    bars = np.sort(rng.choice(free + k, size=k, replace=False))
    gaps = np.diff(np.concatenate([[-1], bars])) - 1  # the first k parts; the last is what remains
    blocks, pos = [], 0
    for i, (gap, length) in enumerate(zip(gaps, lengths, strict=True)):
        pos += int(gap) + (min_gap if i else 0)
        blocks.append((pos, pos + length))
        pos += length
    return blocks


def insert_lesions(
    volume: PhantomVolume, ranges: LesionRanges, rng: np.random.Generator, noise_hu: float = 6.0
) -> tuple[PhantomVolume, list[dict[str, Any]]]:
    """Paint the lesions of one positive scan into a lesion-free head phantom.

    Each lesion: ``count`` and per-lesion ``extent``, ``lesion_hu``, ``radius_mm`` drawn from ``ranges``; blocks
    placed by :func:`place_lesion_blocks`; in-plane centre uniform over the part of the brain ellipse (the narrowest
    one over the block) where the whole disc fits. On slice ``i`` of a block of ``L`` slices the radius is
    ``R * sqrt(1 - ((i - (L - 1) / 2) / (L / 2 + 0.5)) ** 2)``, at least :data:`MIN_RADIUS_PX`; pixels inside the
    disc and the brain take ``lesion_hu + N(0, noise_hu)``.

    Args:
        volume: a head phantom without a lesion (``volume.label == 0``).
        ranges: what to draw.
        rng: random generator.
        noise_hu: noise added to the lesion pixels (the phantom's default 6 HU).

    Returns:
        ``(volume with lesions, lesions)``; each lesion dict has ``start``, ``stop`` (slice block), ``lesion_hu``,
        ``radius_mm``, ``centre_yx`` (pixels).
    """
    if not isinstance(volume, PhantomVolume) or volume.region != "head":
        raise ValueError("insert_lesions needs a head PhantomVolume")
    if volume.label:
        raise ValueError("insert_lesions needs a lesion-free volume (make_phantom_volume(..., lesion=False))")
    n, size = volume.n_slices, int(volume.hu.shape[1])
    if n < ranges.min_slices():
        raise ValueError(
            f"a scan of {n} slices cannot hold {ranges.count[1]} lesions of up to {ranges.extent[1]} slices "
            f"(needs {ranges.min_slices()})"
        )
    count = int(rng.integers(ranges.count[0], ranges.count[1] + 1))
    lengths = [int(v) for v in rng.integers(ranges.extent[0], ranges.extent[1] + 1, size=count)]
    blocks = place_lesion_blocks(n, lengths, rng, ranges.centre_sd_frac if count == 1 else None, ranges.min_gap)
    hu = volume.hu.astype(np.float32)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = axis[:, None], axis[None, :]
    px_per_unit = size / 2.0  # normalised in-plane units -> pixels
    cy_all, ry_all, rx_all = head_skull_ellipse((np.arange(n, dtype=np.float32) + 0.5) / n)
    ry_all, rx_all = ry_all - 0.1, rx_all - 0.1  # the brain
    lesion_slices = np.zeros(n, dtype=bool)
    lesions = []
    for start, stop in blocks:
        value = float(rng.uniform(*ranges.lesion_hu))
        radius_mm = float(rng.uniform(*ranges.radius_mm))
        ry, rx = float(ry_all[start:stop].min()), float(rx_all[start:stop].min())
        r_max = max(radius_mm / volume.spacing[2] / px_per_unit, MIN_RADIUS_PX / px_per_unit)
        r_max = min(r_max, 0.5 * min(ry, rx))  # the disc fits well inside the narrowest brain section
        angle, dist = rng.uniform(0.0, 2.0 * np.pi), np.sqrt(rng.uniform())
        mid = (start + stop - 1) // 2
        cy = float(cy_all[mid]) + dist * np.sin(angle) * (ry - r_max)
        cx = dist * np.cos(angle) * (rx - r_max)
        length = stop - start
        for k in range(start, stop):
            t = (k - start - (length - 1) / 2.0) / (length / 2.0 + 0.5)
            r = max(r_max * np.sqrt(1.0 - t * t), MIN_RADIUS_PX / px_per_unit)
            brain = ((yy - cy_all[k]) / ry_all[k]) ** 2 + (xx / rx_all[k]) ** 2 <= 1.0
            mask = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r) & brain
            hu[k][mask] = value + rng.normal(0.0, noise_hu, size=int(mask.sum()))
        lesion_slices[start:stop] = True
        lesions.append(
            {
                "start": int(start),
                "stop": int(stop),
                "lesion_hu": round(value, 2),
                "radius_mm": round(r_max * px_per_unit * volume.spacing[2], 2),
                "centre_yx": [round((cy + 1.0) * px_per_unit - 0.5, 2), round((cx + 1.0) * px_per_unit - 0.5, 2)],
            }
        )
    out = PhantomVolume(
        hu=np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16),
        spacing=volume.spacing,
        lesion_slices=lesion_slices,
        region=volume.region,
        origin=volume.origin,
        lesion_hu=float(np.mean([les["lesion_hu"] for les in lesions])),
        lesion_radius_mm=float(max(les["radius_mm"] for les in lesions)),
    )
    return out, lesions


def _uid(seed: int, scan: int, *parts: str) -> str:
    """A UID determined by the seed, the scan index and ``parts``."""
    return generate_uid(entropy_srcs=["monai_ng lesion benchmark", str(seed), str(scan), *parts])


def write_lesion_benchmark(
    root: str | os.PathLike,
    n_scans: int,
    seed: int = 0,
    *,
    lesions: LesionRanges = SINGLE_LESION,
    size: int = 64,
    slices: tuple[int, int] = HEAD_SLICES,
    positive_rate: float = 0.5,
    repeat_patient_rate: float = 0.3,
    progress: bool = False,
) -> pd.DataFrame:
    """Write phantom head CT scans with lesions as DICOM series plus the folder adapter's ``labels.csv``.

    Exactly ``round(positive_rate * n_scans)`` scans are positive (a random permutation says which). A scan belongs to
    the previous scan's patient with probability ``repeat_patient_rate`` (patient ids ``PH00000``, ...); the labels of
    one patient's scans are independent. UIDs are derived from ``seed`` and the scan index, so the same arguments
    write the same files, names and ids.

    Args:
        root: output folder (created).
        n_scans: number of scans (>= 2, so that both classes occur).
        seed: random seed.
        lesions: what the positive scans hold (:data:`SINGLE_LESION`, :data:`MULTI_LESION`).
        size: in-plane pixels (head field of view 230 mm).
        slices: slices per scan, uniform on ``(min, max)``; ``min`` must hold ``lesions.min_slices()``.
        positive_rate: fraction of positive scans, strictly between 0 and 1.
        repeat_patient_rate: probability that a scan shares the previous scan's patient.
        progress: show a progress bar over scans.

    Returns:
        Ground truth, one row per scan: ``scan_id`` (= SeriesInstanceUID), ``patient_id``, ``label``, ``n_slices``,
        ``slice_labels`` (inferior -> superior), ``lesions`` (list of lesion dicts, see :func:`insert_lesions`).
    """
    if not isinstance(n_scans, (int, np.integer)) or n_scans < 2:
        raise ValueError(f"n_scans must be an integer >= 2, got {n_scans!r}")
    if not 0.0 < positive_rate < 1.0:
        raise ValueError(f"positive_rate must lie strictly between 0 and 1, got {positive_rate}")
    if not 0.0 <= repeat_patient_rate < 1.0:
        raise ValueError(f"repeat_patient_rate must lie in [0, 1), got {repeat_patient_rate}")
    if len(slices) != 2 or not 1 <= slices[0] <= slices[1]:
        raise ValueError(f"slices must be (min, max) with 1 <= min <= max, got {slices!r}")
    if slices[0] < lesions.min_slices():
        raise ValueError(
            f"slices {tuple(slices)}: the shortest scan ({slices[0]}) cannot hold {lesions.count[1]} lesions of up "
            f"to {lesions.extent[1]} slices (needs {lesions.min_slices()})"
        )
    root = Path(root)
    (root / "scans").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_pos = int(round(positive_rate * n_scans))
    n_pos = min(max(n_pos, 1), n_scans - 1)
    positive = np.zeros(n_scans, dtype=bool)
    positive[rng.permutation(n_scans)[:n_pos]] = True
    patient = 0
    truth, label_rows = [], []
    for s in tqdm(range(n_scans), desc="phantom lesions", unit="scan", disable=not progress):
        if s > 0 and rng.random() >= repeat_patient_rate:
            patient += 1
        patient_id = f"PH{patient:05d}"
        n_slices = int(rng.integers(slices[0], slices[1] + 1))
        vol = make_phantom_volume("head", n_slices, size, lesion=False, rng=rng)
        scan_lesions: list[dict[str, Any]] = []
        if positive[s]:
            vol, scan_lesions = insert_lesions(vol, lesions, rng)
        series = _uid(seed, s, "series")
        write_dicom_series(
            vol,
            root / "scans" / series,
            patient_id=patient_id,
            study_uid=_uid(seed, s, "study"),
            series_uid=series,
            sop_uids=[_uid(seed, s, "sop", str(k)) for k in range(n_slices)],
            instance_numbers=str(rng.choice(["ascending", "descending"])),
            multi_valued_windows=False,
            seed=rng,
        )
        slice_labels = vol.lesion_slices.astype(int).tolist()
        label_rows.append(
            {
                "SeriesInstanceUID": series,
                "label": int(positive[s]),
                "patient_id": patient_id,
                "slice_labels": json.dumps(slice_labels),
            }
        )
        truth.append(
            {
                "scan_id": series,
                "patient_id": patient_id,
                "label": int(positive[s]),
                "n_slices": n_slices,
                "slice_labels": slice_labels,
                "lesions": scan_lesions,
            }
        )
    pd.DataFrame(label_rows).to_csv(root / "labels.csv", index=False)
    settings = {"n_scans": n_scans, "seed": seed, "size": size, "slices": list(slices), "lesions": asdict(lesions)}
    settings.update(positive_rate=positive_rate, repeat_patient_rate=repeat_patient_rate)
    (root / "truth.json").write_text(json.dumps({"settings": settings, "scans": truth}, indent=1))
    return pd.DataFrame(truth)
