"""CT ingest as MONAI transforms: series loading, CT windows / HU z-score, slice stacks.

Each family has its array transforms in ``array.py`` and its dictionary transforms (``d`` / ``D`` / ``Dict``) in
``dictionary.py``: ``series`` (``LoadCTSeries``, on top of :class:`monai_ng.io.CTSeriesReader`), ``windowing``
(``CTWindows``, ``HUZScore``) and ``slice_stack`` (``CTSliceStack``).
"""

from __future__ import annotations

from monai_ng.transforms import series, slice_stack, windowing
from monai_ng.transforms.series import *  # noqa: F403
from monai_ng.transforms.slice_stack import *  # noqa: F403
from monai_ng.transforms.windowing import *  # noqa: F403

__all__ = [*series.__all__, *slice_stack.__all__, *windowing.__all__]
