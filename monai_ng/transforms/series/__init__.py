"""Load one CT series as a channel-first HU ``MetaTensor`` (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.series import array, dictionary
from monai_ng.transforms.series.array import *  # noqa: F403
from monai_ng.transforms.series.dictionary import *  # noqa: F403

__all__ = [*array.__all__, *dictionary.__all__]
