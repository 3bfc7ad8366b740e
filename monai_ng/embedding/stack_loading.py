"""One scan -> the ``[N, C, H, W]`` slice stack the frozen encoder takes, built from the CT ingest transforms.

:class:`CTSliceStackLoader` runs in the extraction DataLoader's workers:
``LoadCTSeries`` (DICOM folder / ordered file list / NIfTI -> ``[1, X, Y, Z]`` HU, inferior -> superior) ->
in-plane reorientation to the DICOM axial display (:func:`display_orientation`) -> ``CTSliceStack``: pad to square
with each slice's minimum HU and resize to the encoder's input size (bilinear), giving ``[N, 1, H, W]`` with H along
the DICOM column direction (image rows) and W along the row direction (image columns), as the paper's preprocessing
pads with the image minimum and resizes to 224 x 224 (Harvey, Loevlie & Hughes 2026) -> intensity mapping
(``apply_windows``: CT windows into [0, 1] stacked as channels, or the paper's dataset HU z-score).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

__all__ = ["CTSliceStackLoader", "DEFAULT_PRESETS", "display_orientation", "make_stack_loader", "read_manifest_file"]

#: Intensity preset used when none is given: one window for 1 channel, a 3-window preset for 3 channels.
DEFAULT_PRESETS = {1: "brain", 3: "head"}
_ZSCORE_PREFIX = "zscore:"


def read_manifest_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scan manifest written by :func:`preprocessing.manifest.write_manifest` (``.csv`` or ``.parquet``)."""
    from preprocessing.manifest import read_manifest

    return read_manifest(path)


def display_orientation(volume: torch.Tensor, affine: Any) -> torch.Tensor:
    """Reorient ``[1, X, Y, Z]`` in-plane to the radiological axial display of DICOM slices.

    ``LoadCTSeries`` keeps DICOM files in their stored pixel order (columns along patient left, rows toward posterior
    for a standard axial series: a negative RAS affine diagonal) but reorients NIfTI to RAS+ (positive diagonal), so
    the same anatomy would come out mirrored in both in-plane axes. Here the first two axes are permuted to world x, y
    and flipped where needed so that X runs toward patient left and Y toward posterior (LPS +x, +y) whatever the
    source; a DICOM series in standard orientation is returned unchanged.

    Args:
        volume: ``[1, X, Y, Z]``.
        affine: ``[4, 4]`` voxel -> RAS affine (None: returned unchanged).
    """
    if affine is None:
        return volume
    a = torch.as_tensor(affine, dtype=torch.float64)[:3, :3].abs()
    if a[:2, :2].argmax(dim=0).tolist() == [1, 0]:  # array X follows world y: swap the in-plane axes
        volume = volume.transpose(1, 2)
        affine = torch.as_tensor(affine, dtype=torch.float64)[:, [1, 0, 2, 3]]
    aff = torch.as_tensor(affine, dtype=torch.float64)
    flips = [dim + 1 for dim in (0, 1) if aff[dim, dim] > 0]  # RAS-increasing axis: flip to LPS-increasing
    return volume.flip(flips) if flips else volume


def _parse_zscore(preset: str) -> tuple[float, float]:
    try:
        mean_text, std_text = preset[len(_ZSCORE_PREFIX) :].split(",")
        mean, std = float(mean_text), float(std_text)
    except ValueError as exc:
        raise ValueError(f"z-score preset must look like 'zscore:MEAN,STD' (HU), got {preset!r}") from exc
    if not std > 0:
        raise ValueError(f"z-score preset {preset!r}: std must be > 0")
    return mean, std


class CTSliceStackLoader:
    """Load a manifest scan as a float32 slice stack ``[N, C, H, W]`` for :class:`FrozenSliceEncoder`.

    Args:
        preset: a window preset / named window of :mod:`monai_ng.transforms.windowing` (``"head"``, ``"brain"``,
            ``"chest"``, ``"lung"``, ...; values in [0, 1]) or ``"zscore:MEAN,STD"`` for the paper's one-channel
            dataset z-score of HU (use encoder normalisation ``"none"`` with it).
        channels: number of output channels C; must equal the number of windows of ``preset``.
        image_size: output ``(H, W)``; must be square.
        on_geometry_issue: passed to ``LoadCTSeries`` (``"warn"`` by default: gaps are logged, not fatal).

    Raises:
        ValueError: unknown preset, or a preset whose number of windows differs from ``channels``.
    """

    def __init__(
        self,
        preset: str | None = None,
        channels: int = 1,
        image_size: int | Sequence[int] = 224,
        on_geometry_issue: str = "warn",
    ) -> None:
        from monai_ng.transforms.windowing import resolve_windows

        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2 or size[0] != size[1] or size[0] < 1:
            raise ValueError(f"image_size must be one positive size or a square (H, W), got {image_size!r}")
        preset = preset or DEFAULT_PRESETS[channels]
        self.zscore: tuple[float, float] | None = None
        self.windows: tuple[tuple[float, float], ...] = ()
        if preset.startswith(_ZSCORE_PREFIX):
            self.zscore = _parse_zscore(preset)
            if channels != 1:
                raise ValueError(f"preset {preset!r} gives 1 channel, but channels={channels}")
        else:
            self.windows = resolve_windows(preset)
            if len(self.windows) != channels:
                raise ValueError(f"preset {preset!r} has {len(self.windows)} window(s), but channels={channels}")
        self.preset = preset
        self.channels = channels
        self.image_size = size
        self.on_geometry_issue = on_geometry_issue
        self._reader: Any = None
        self._stacker: Any = None

    def describe(self) -> dict[str, Any]:
        """The preprocessing as stored in the embedding store's metadata (``preprocessing``)."""
        return {
            "loader": "CTSliceStackLoader",
            "preset": self.preset,
            "windows": [list(w) for w in self.windows],
            "zscore": list(self.zscore) if self.zscore else None,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "pad": "square, slice minimum (HU)",
            "resize": "bilinear (HU, before the intensity mapping)",
            "order": "inferior_to_superior",
        }

    def _load_hu(self, files: Sequence[str]) -> torch.Tensor:
        from monai_ng.transforms.series_loader import LoadCTSeries

        if self._reader is None:
            self._reader = LoadCTSeries(on_geometry_issue=self.on_geometry_issue)
        single = len(files) == 1 and (Path(files[0]).is_dir() or str(files[0]).endswith((".nii", ".nii.gz")))
        volume = self._reader(files[0] if single else list(files))  # [1, X, Y, Z] HU
        affine = getattr(volume, "affine", None)
        data = volume.as_tensor() if hasattr(volume, "as_tensor") else torch.as_tensor(volume)
        return display_orientation(data, affine)

    def _intensity(self, hu: torch.Tensor) -> torch.Tensor:
        """``[n, 1, H, W]`` HU -> ``[n, C, H, W]``."""
        if self.zscore is not None:
            return (hu - self.zscore[0]) / self.zscore[1]
        from monai_ng.transforms.windowing import apply_windows

        return apply_windows(hu, self.windows, channel_dim=1)

    def stack_from_hu(self, volume: torch.Tensor) -> torch.Tensor:
        """``[1, X, Y, Z]`` HU volume -> ``[N, C, H, W]`` float32 stack (N = Z, inferior -> superior, H = Y, W = X)."""
        if volume.ndim != 4 or volume.shape[0] != 1:
            raise ValueError(f"expected a [1, X, Y, Z] HU volume, got shape {tuple(volume.shape)}")
        if self._stacker is None:
            from monai_ng.transforms.slice_stack import CTSliceStack

            self._stacker = CTSliceStack(spatial_size=self.image_size, pad_value="slice_min", mode="bilinear")
        hu = torch.as_tensor(volume).as_subclass(torch.Tensor).to(torch.float32)
        stack = self._stacker(hu)  # [N, 1, H, W] HU: padded to square with each slice's minimum, resized
        stack = stack.as_tensor() if hasattr(stack, "as_tensor") else stack
        return self._intensity(stack).contiguous()

    def __call__(self, record: Any) -> torch.Tensor:
        """Load ``record.slice_files`` (ordered DICOM files, one folder, or one NIfTI) as ``[N, C, H, W]``."""
        files = list(record.slice_files)
        return self.stack_from_hu(self._load_hu(files))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = state["_stacker"] = None  # rebuilt in each worker
        return state


def make_stack_loader(
    preset: str | None = None, channels: int = 1, image_size: int | Sequence[int] = 224
) -> CTSliceStackLoader:
    """The default loader of ``monai-ng embed`` (see :class:`CTSliceStackLoader`)."""
    return CTSliceStackLoader(preset=preset, channels=channels, image_size=image_size)
