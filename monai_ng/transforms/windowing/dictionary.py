"""Dictionary versions of the CT window / HU z-score transforms (:mod:`monai_ng.transforms.windowing.array`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform

from monai_ng.transforms.windowing.array import CTWindows, HUZScore

__all__ = ["CTWindowsD", "CTWindowsDict", "CTWindowsd", "HUZScoreD", "HUZScoreDict", "HUZScored"]


class _KeywiseTransform(MapTransform):
    """A dictionary transform that applies its array transform ``self.transform`` to each of its keys."""

    transform: Callable[[NdarrayOrTensor], NdarrayOrTensor]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class CTWindowsd(_KeywiseTransform):
    """Dictionary version of ``CTWindows``."""

    backend = CTWindows.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: str | Sequence[str | Sequence[float]] = "head",
        channel_dim: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTWindows(windows, channel_dim)


class HUZScored(_KeywiseTransform):
    """Dictionary version of ``HUZScore``."""

    backend = HUZScore.backend

    def __init__(self, keys: KeysCollection, mean: float, std: float, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = HUZScore(mean, std)


CTWindowsD = CTWindowsDict = CTWindowsd
HUZScoreD = HUZScoreDict = HUZScored
