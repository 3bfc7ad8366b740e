"""Load one CT series as a channel-first HU ``MetaTensor`` (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.series.array import LoadCTSeries
from monai_ng.transforms.series.dictionary import LoadCTSeriesD, LoadCTSeriesd, LoadCTSeriesDict

__all__ = ["LoadCTSeries", "LoadCTSeriesD", "LoadCTSeriesDict", "LoadCTSeriesd"]
