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
* ``"ct_regime"`` -- the CT-like construction in the regime of real CT embeddings: nuisance correlated along the
  slices (stationary AR(rho) per feature), lesion-like anatomical distractors present in every scan at anatomically
  typical positions, and scan lengths, lesion extents and placement per body region (``region`` presets head /
  chest / abdomen, :data:`REGION_PRESETS`).

Randomness: ``seed`` drives a :class:`numpy.random.SeedSequence`; the bag structure (lengths, labels, blocks,
patients) is drawn first from one child stream, then the embeddings are drawn in fixed chunks of bags from further
child streams, so the in-memory arrays and a store written chunk by chunk are identical. For the CT-like kinds the
"world" (anatomy subspace, trajectory, lesion direction) is drawn from ``world_seed`` instead, so data sets generated
with different ``seed`` but the same ``world_seed`` come from the same distribution.

Modules: :mod:`~monai_ng.data.synthetic.params` (parameter dataclasses), :mod:`~monai_ng.data.synthetic.generator`
(in-memory bags), :mod:`~monai_ng.data.synthetic.store_writer` (embedding stores) and
:mod:`~monai_ng.data.synthetic.bayes` (the ShiftedMean Bayes ceiling).
"""

from __future__ import annotations

from monai_ng.data.synthetic.bayes import bayes_scan_posterior, bayes_slice_posterior, shifted_mean_posteriors
from monai_ng.data.synthetic.generator import SyntheticBags, generate_synthetic
from monai_ng.data.synthetic.params import (
    REGION_PRESETS,
    SYNTHETIC_KINDS,
    CTLikeParams,
    CTRegimeParams,
    MultiLesionParams,
    ShiftedMeanParams,
    make_params,
)
from monai_ng.data.synthetic.store_writer import write_synthetic_store

__all__ = [
    "REGION_PRESETS",
    "SYNTHETIC_KINDS",
    "CTLikeParams",
    "CTRegimeParams",
    "MultiLesionParams",
    "ShiftedMeanParams",
    "SyntheticBags",
    "bayes_scan_posterior",
    "bayes_slice_posterior",
    "generate_synthetic",
    "make_params",
    "shifted_mean_posteriors",
    "write_synthetic_store",
]
