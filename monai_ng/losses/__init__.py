"""Losses: the Normal Guidance penalty (with its references beyond the paper), head similarity, and the MIL training
objective."""

from __future__ import annotations

from monai_ng.losses.head_diversity import head_similarity
from monai_ng.losses.mil_objective import MILObjective
from monai_ng.losses.mixture_reference import SliceMixtureFit, fit_slice_mixture, mixture_reference
from monai_ng.losses.normal_guidance import (
    DIVERGENCES,
    GUIDE_MODES,
    REFERENCES,
    NormalGuidanceLoss,
    centre_reference,
    normal_reference,
)

__all__ = [
    "DIVERGENCES",
    "GUIDE_MODES",
    "REFERENCES",
    "MILObjective",
    "NormalGuidanceLoss",
    "SliceMixtureFit",
    "centre_reference",
    "fit_slice_mixture",
    "head_similarity",
    "mixture_reference",
    "normal_reference",
]
