"""CT volume ``[C, X, Y, Z]`` -> axial slice stack ``[N, C, H, W]`` for a 2D encoder (array and dictionary transforms)."""

from __future__ import annotations

from monai_ng.transforms.slice_stack.array import (
    PER_SLICE_META_KEYS,
    CTSliceStack,
    map_slice_labels,
    pad_to_square_min,
    resample_slices,
    slice_resampling_weights,
)
from monai_ng.transforms.slice_stack.dictionary import CTSliceStackD, CTSliceStackd, CTSliceStackDict

__all__ = [
    "PER_SLICE_META_KEYS",
    "CTSliceStack",
    "CTSliceStackD",
    "CTSliceStackDict",
    "CTSliceStackd",
    "map_slice_labels",
    "pad_to_square_min",
    "resample_slices",
    "slice_resampling_weights",
]
