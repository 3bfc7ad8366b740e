"""CT ingest as MONAI transforms: series loading, CT windows / HU z-score, slice stacks.

Each family has its array transforms in ``array.py`` and its dictionary transforms (``d`` / ``D`` / ``Dict``) in
``dictionary.py``: ``series`` (``LoadCTSeries``, on top of :class:`monai_ng.io.CTSeriesReader`), ``windowing``
(``CTWindows``, ``HUZScore``) and ``slice_stack`` (``CTSliceStack``).
"""

from __future__ import annotations

from monai_ng.transforms.series import LoadCTSeries, LoadCTSeriesD, LoadCTSeriesd, LoadCTSeriesDict
from monai_ng.transforms.slice_stack import (
    PER_SLICE_META_KEYS,
    CTSliceStack,
    CTSliceStackD,
    CTSliceStackd,
    CTSliceStackDict,
    map_slice_labels,
    pad_to_square_min,
    resample_slices,
    slice_resampling_weights,
)
from monai_ng.transforms.windowing import (
    NAMED_WINDOWS,
    WINDOW_PRESETS,
    CTWindows,
    CTWindowsD,
    CTWindowsd,
    CTWindowsDict,
    HUZScore,
    HUZScoreD,
    HUZScored,
    HUZScoreDict,
    apply_windows,
    resolve_windows,
    zscore_hu,
)

__all__ = [
    "NAMED_WINDOWS",
    "PER_SLICE_META_KEYS",
    "WINDOW_PRESETS",
    "CTSliceStack",
    "CTSliceStackD",
    "CTSliceStackDict",
    "CTSliceStackd",
    "CTWindows",
    "CTWindowsD",
    "CTWindowsDict",
    "CTWindowsd",
    "HUZScore",
    "HUZScoreD",
    "HUZScoreDict",
    "HUZScored",
    "LoadCTSeries",
    "LoadCTSeriesD",
    "LoadCTSeriesDict",
    "LoadCTSeriesd",
    "apply_windows",
    "map_slice_labels",
    "pad_to_square_min",
    "resample_slices",
    "resolve_windows",
    "slice_resampling_weights",
    "zscore_hu",
]
