"""Dictionary version of :class:`~monai_ng.transforms.series.array.LoadCTSeries`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_ng.transforms.forwarding import wrapped_arguments
from monai_ng.transforms.series.array import LoadCTSeries

__all__ = ["LoadCTSeriesD", "LoadCTSeriesDict", "LoadCTSeriesd"]


class LoadCTSeriesd(MapTransform):
    """Replace each ``data[key]`` (a path or a file list) by its ``[1, X, Y, Z]`` HU volume (see :class:`LoadCTSeries`).

    Args:
        keys: keys to load.
        series_uid_key: optional key holding the SeriesInstanceUID to pick, per item (used when non-empty).
        series_uid, on_geometry_issue, fix_ich_wrap, monochrome1, skip_unreadable, gap_factor, spacing_tolerance,
            tilt_tolerance_degrees, axial_tolerance_degrees, axcodes: as for :class:`LoadCTSeries`.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_uid_key: str | None = None,
        series_uid: str | None = None,
        on_geometry_issue: str = "warn",
        fix_ich_wrap: bool = True,
        monochrome1: str = "hu",
        skip_unreadable: bool = False,
        gap_factor: float = 1.5,
        spacing_tolerance: float = 0.1,
        tilt_tolerance_degrees: float = 0.5,
        axial_tolerance_degrees: float = 30.0,
        axcodes: str = "LPS",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_uid_key = series_uid_key
        self.loader = LoadCTSeries(**wrapped_arguments(LoadCTSeries, locals()))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        uid = None
        if self.series_uid_key is not None and d.get(self.series_uid_key):
            uid = str(d[self.series_uid_key])
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], series_uid=uid)  # type: ignore[arg-type]
        return d


LoadCTSeriesD = LoadCTSeriesDict = LoadCTSeriesd
