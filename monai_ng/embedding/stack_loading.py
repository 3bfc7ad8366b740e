"""One scan -> the ``[N, C, H, W]`` slice stack the frozen encoder takes, built from the CT ingest transforms.

:class:`CTSliceStackLoader` runs in the extraction DataLoader's workers, one ``monai.transforms.Compose``:
``LoadCTSeries`` (DICOM folder / ordered file list / NIfTI -> ``[1, X, Y, Z]`` HU, inferior -> superior, on the
reader's ``"LPS"`` grid: X toward patient left, Y toward posterior, the DICOM axial display) -> ``CTSliceStack``: pad
to square with each slice's minimum HU and resize to the encoder's input size (bilinear), giving ``[N, 1, H, W]``
with H along the DICOM column direction (image rows) and W along the row direction (image columns), as the paper's
preprocessing pads with the image minimum and resizes to 224 x 224 (Harvey, Loevlie & Hughes 2026) -> intensity
mapping (``CTWindows``: CT windows into [0, 1] stacked as channels, or ``HUZScore``: the paper's dataset HU z-score)
-> a plain contiguous float32 tensor (``EnsureType``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, EnsureType, Transform

from monai_ng.transforms.series import LoadCTSeries
from monai_ng.transforms.slice_stack import CTSliceStack
from monai_ng.transforms.windowing import CTWindows, HUZScore, resolve_windows

__all__ = ["CTSliceStackLoader", "DEFAULT_PRESETS", "make_stack_loader"]

#: Intensity preset used when none is given: one window for 1 channel, a 3-window preset for 3 channels.
DEFAULT_PRESETS = {1: "brain", 3: "head"}
_ZSCORE_PREFIX = "zscore:"


def _run(chain: Compose, data: Any) -> torch.Tensor:
    """``chain(data)``, raising the transform's own error (``Compose`` wraps it in ``RuntimeError``) so that messages
    naming the file and reason reach the extraction's failure table unchanged."""
    try:
        return chain(data)
    except RuntimeError as exc:
        error: BaseException = exc
        while isinstance(error, RuntimeError) and str(error).startswith("applying transform") and error.__cause__:
            error = error.__cause__
        if error is exc:
            raise
        raise error from None


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
        preset: a window preset / named window of :mod:`monai_ng.transforms.windowing.array` (``"head"``, ``"brain"``,
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
        self._load_and_stack: Compose | None = None
        self._stack: Compose | None = None

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

    def _stack_transforms(self) -> list[Transform]:
        """HU ``[1, X, Y, Z]`` -> ``[N, C, H, W]``: square pad + resize, intensity mapping, plain contiguous tensor."""
        intensity = HUZScore(*self.zscore) if self.zscore is not None else CTWindows(self.windows, channel_dim=1)
        return [
            CTSliceStack(spatial_size=self.image_size, pad_value="slice_min", mode="bilinear"),
            intensity,
            EnsureType(data_type="tensor", track_meta=False),
        ]

    def stack_from_hu(self, volume: torch.Tensor) -> torch.Tensor:
        """``[1, X, Y, Z]`` HU volume -> ``[N, C, H, W]`` float32 stack (N = Z, inferior -> superior, H = Y, W = X)."""
        if volume.ndim != 4 or volume.shape[0] != 1:
            raise ValueError(f"expected a [1, X, Y, Z] HU volume, got shape {tuple(volume.shape)}")
        if self._stack is None:
            self._stack = Compose(self._stack_transforms(), map_items=False)
        return _run(self._stack, torch.as_tensor(volume).as_subclass(torch.Tensor).to(torch.float32))

    def __call__(self, record: Any) -> torch.Tensor:
        """Load ``record.slice_files`` (ordered DICOM files, one folder, or one NIfTI) as ``[N, C, H, W]``."""
        if self._load_and_stack is None:
            loader = LoadCTSeries(on_geometry_issue=self.on_geometry_issue)
            # map_items=False: a file list is one series, not items to load one by one
            self._load_and_stack = Compose([loader, *self._stack_transforms()], map_items=False)
        files = [str(f) for f in record.slice_files]
        single = len(files) == 1 and (Path(files[0]).is_dir() or files[0].endswith((".nii", ".nii.gz")))
        return _run(self._load_and_stack, files[0] if single else files)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_load_and_stack"] = state["_stack"] = None  # rebuilt in each worker
        return state


def make_stack_loader(
    preset: str | None = None, channels: int = 1, image_size: int | Sequence[int] = 224
) -> CTSliceStackLoader:
    """The default loader of ``monai-ng embed`` (see :class:`CTSliceStackLoader`)."""
    return CTSliceStackLoader(preset=preset, channels=channels, image_size=image_size)
