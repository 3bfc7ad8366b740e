"""Losses: the Normal Guidance penalty and the MIL training objective."""

from __future__ import annotations

from monai_ng.losses.mil_objective import MILObjective
from monai_ng.losses.normal_guidance import DIVERGENCES, GUIDE_MODES, NormalGuidanceLoss, normal_reference

__all__ = ["DIVERGENCES", "GUIDE_MODES", "MILObjective", "NormalGuidanceLoss", "normal_reference"]
