"""Dictionary version of :class:`~monai_ng.transforms.slice_stack.array.CTSliceStack`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_ng.transforms.forwarding import wrapped_arguments
from monai_ng.transforms.slice_stack.array import CTSliceStack

__all__ = ["CTSliceStackD", "CTSliceStackDict", "CTSliceStackd"]


class CTSliceStackd(MapTransform):
    """Dictionary version of ``CTSliceStack``; maps ``label_key`` (per-slice labels ``[Z]``) alongside.

    Args:
        keys: image keys (each ``[C, X, Y, Z]``).
        label_key: optional key of per-slice labels to map consistently with z-resampling (the first image key's
            mapping is used).
        spatial_size, pixel_spacing, slice_thickness, pad_value, mode, anti_aliasing: as for ``CTSliceStack``.
        allow_missing_keys: skip absent keys.
    """

    backend = CTSliceStack.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = None,
        spatial_size: int | Sequence[int] = 224,
        pixel_spacing: float | Sequence[float] | None = None,
        slice_thickness: float | None = None,
        pad_value: str | float = "slice_min",
        mode: str = "bilinear",
        anti_aliasing: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.transform = CTSliceStack(**wrapped_arguments(CTSliceStack, locals()))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        labels_done = False
        for key in self.key_iterator(d):
            if self.label_key is not None and not labels_done and self.label_key in d:
                d[key], d[self.label_key] = self.transform.with_labels(d[key], d[self.label_key])
                labels_done = True
            else:
                d[key] = self.transform(d[key])
        return d


CTSliceStackD = CTSliceStackDict = CTSliceStackd
