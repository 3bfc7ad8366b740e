"""CT intensity windows and the paper's HU z-score (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.windowing import array, dictionary
from monai_ng.transforms.windowing.array import *  # noqa: F403
from monai_ng.transforms.windowing.dictionary import *  # noqa: F403

__all__ = [*array.__all__, *dictionary.__all__]
