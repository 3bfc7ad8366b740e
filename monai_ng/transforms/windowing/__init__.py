"""CT intensity windows and the paper's HU z-score (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.windowing.array import (
    NAMED_WINDOWS,
    WINDOW_PRESETS,
    CTWindows,
    HUZScore,
    apply_windows,
    resolve_windows,
    zscore_hu,
)
from monai_ng.transforms.windowing.dictionary import (
    CTWindowsD,
    CTWindowsd,
    CTWindowsDict,
    HUZScoreD,
    HUZScored,
    HUZScoreDict,
)

__all__ = [
    "NAMED_WINDOWS",
    "WINDOW_PRESETS",
    "CTWindows",
    "CTWindowsD",
    "CTWindowsDict",
    "CTWindowsd",
    "HUZScore",
    "HUZScoreD",
    "HUZScoreDict",
    "HUZScored",
    "apply_windows",
    "resolve_windows",
    "zscore_hu",
]
