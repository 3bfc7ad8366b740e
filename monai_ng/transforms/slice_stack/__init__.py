"""CT volume ``[C, X, Y, Z]`` -> axial slice stack ``[N, C, H, W]`` for a 2D encoder (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.slice_stack import array, dictionary
from monai_ng.transforms.slice_stack.array import *  # noqa: F403
from monai_ng.transforms.slice_stack.dictionary import *  # noqa: F403

__all__ = [*array.__all__, *dictionary.__all__]
