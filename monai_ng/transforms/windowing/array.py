"""CT intensity windows (one or several, stacked as channels) and the paper's HU z-score, as MONAI transforms.

A window ``(center, width)`` maps Hounsfield units linearly so that ``center - width / 2`` goes to 0 and
``center + width / 2`` goes to 1, and clips outside: ``clip((hu - center + width / 2) / width, 0, 1)``. Every window
channel therefore lies in ``[0, 1]``. (This is the plain linear form used by the RSNA challenge kernels, not the
DICOM PS3.3 C.11.2.1.2 VOI LUT variant with ``center - 0.5`` and ``width - 1``; the two differ by < 1/width.)

Several windows are stacked as channels, so a one-channel HU image ``[1, *S]`` becomes ``[K, *S]``. This is the
usual way to feed CT to ImageNet encoders with 3 input channels (RSNA ICH 2019 brain / subdural / soft tissue
windows; RSNA PE 2020 PE-specific / lung / mediastinal windows).

The paper's own preprocessing (E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs",
2026; data preparation in ``tufts-ml/neuroimage-classifiers``) does not window: HU are z-scored with a dataset mean
and standard deviation into one channel (``HUZScore``), and the ViT patch embedding is summed over RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = [
    "NAMED_WINDOWS",
    "WINDOW_PRESETS",
    "CTWindows",
    "HUZScore",
    "apply_windows",
    "resolve_windows",
    "zscore_hu",
]

#: Single named windows ``name -> (center, width)`` in HU.
NAMED_WINDOWS: dict[str, tuple[float, float]] = {
    # head (RSNA ICH 2019 practice: brain, subdural, soft tissue)
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "head_soft_tissue": (40.0, 380.0),
    # chest (RSNA PE 2020 practice: PE-specific, lung, mediastinum)
    "pe": (100.0, 700.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    # abdomen
    # 50/400: the soft-tissue window of the RSNA 2023 abdominal trauma 1st place solution
    #   (Nischaydnk/RSNA-2023-1st-place-solution, get_windowed_image(WL=50, WW=400)).
    "abdomen_soft_tissue": (50.0, 400.0),
    # 90/150 and 480/2500: the OHIF viewer's standard liver and bone presets (see docs/ingest.md); added so
    #   that the abdomen preset has three channels (liver parenchyma contrast, bright extravasation / bone).
    "liver": (90.0, 150.0),
    "bone": (480.0, 2500.0),
}

#: Three-window presets per body region (channel order as listed).
WINDOW_PRESETS: dict[str, tuple[str, ...]] = {
    "head": ("brain", "subdural", "head_soft_tissue"),
    "chest": ("pe", "lung", "mediastinum"),
    "abdomen": ("abdomen_soft_tissue", "liver", "bone"),
}


def resolve_windows(windows: str | Sequence[str | Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """Turn a preset name, a window name, or a list of names / ``(center, width)`` pairs into ``(center, width)``s.

    Args:
        windows: ``"head"`` / ``"chest"`` / ``"abdomen"`` (three-window presets), a key of ``NAMED_WINDOWS``, a single
            ``(center, width)`` pair, or a sequence mixing names and pairs.

    Returns:
        Tuple of ``(center, width)`` float pairs, one per output channel.

    Raises:
        ValueError: unknown name, empty list, or a width <= 0.
    """
    if isinstance(windows, str):
        if windows in WINDOW_PRESETS:
            return tuple(NAMED_WINDOWS[n] for n in WINDOW_PRESETS[windows])
        if windows in NAMED_WINDOWS:
            return (NAMED_WINDOWS[windows],)
        raise ValueError(
            f"unknown window {windows!r}; presets: {sorted(WINDOW_PRESETS)}, named windows: {sorted(NAMED_WINDOWS)}"
        )
    items = list(windows)
    if not items:
        raise ValueError("windows must not be empty")
    if len(items) == 2 and all(isinstance(v, (int, float, np.number)) for v in items):
        items = [tuple(items)]  # a single (center, width) pair
    out = []
    for item in items:
        if isinstance(item, str):
            if item not in NAMED_WINDOWS:
                raise ValueError(f"unknown window {item!r}; named windows: {sorted(NAMED_WINDOWS)}")
            out.append(NAMED_WINDOWS[item])
            continue
        pair = tuple(float(v) for v in item)
        if len(pair) != 2:
            raise ValueError(f"a window is (center, width), got {item!r}")
        if not pair[1] > 0:
            raise ValueError(f"window width must be > 0, got {pair[1]} in {item!r}")
        out.append(pair)
    return tuple(out)


def apply_windows(
    hu: NdarrayOrTensor, windows: str | Sequence[str | Sequence[float]], channel_dim: int = 0
) -> NdarrayOrTensor:
    """Window HU into ``[0, 1]`` channels, vectorised over all voxels and windows.

    Args:
        hu: HU array / tensor with a singleton channel axis at ``channel_dim``, e.g. ``[1, X, Y, Z]`` (volume) or
            ``[N, 1, H, W]`` (slice stack, ``channel_dim=1``).
        windows: see ``resolve_windows``.
        channel_dim: index of the singleton channel axis.

    Returns:
        Same type as ``hu`` (MetaTensor meta kept), float32, with the channel axis of size ``K`` (number of windows);
        channel ``k`` is ``clip((hu - c_k + w_k / 2) / w_k, 0, 1)``.
    """
    pairs = resolve_windows(windows)
    x = convert_to_tensor(hu, track_meta=False)
    if x.ndim < 1:
        raise ValueError("hu must have at least one (channel) dimension")
    dim = channel_dim % x.ndim
    if x.shape[dim] != 1:
        raise ValueError(f"windowing needs a single HU channel at dim {channel_dim}, got shape {tuple(x.shape)}")
    x = x.float() if not torch.is_floating_point(x) else x.to(torch.float32)
    shape = [1] * x.ndim
    shape[dim] = len(pairs)
    # (hu - c + w / 2) / w  ==  hu * (1 / w) + (w / 2 - c) / w : one fused multiply-add over all windows, then clip
    scale = torch.tensor([1.0 / w for _, w in pairs], dtype=torch.float32, device=x.device).view(shape)
    offset = torch.tensor([(w / 2.0 - c) / w for c, w in pairs], dtype=torch.float32, device=x.device).view(shape)
    out_shape = list(x.shape)
    out_shape[dim] = len(pairs)
    if x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled()):
        # NumPy asks the kernel for huge pages on large buffers (``madvise``), torch's CPU allocator does not: for a
        # [64, 3, 224, 224] stack the first-touch page faults of a torch-allocated output cost as much as the maths.
        out = torch.addcmul(offset, x, scale, out=torch.from_numpy(np.empty(out_shape, dtype=np.float32)))
    else:
        out = torch.addcmul(offset, x, scale)
    out = out.clamp_(0.0, 1.0)
    result, *_ = convert_to_dst_type(out, hu, dtype=torch.float32 if isinstance(hu, torch.Tensor) else np.float32)
    return result


def zscore_hu(hu: NdarrayOrTensor, mean: float, std: float) -> NdarrayOrTensor:
    """Paper's one-channel normalisation: ``(hu - mean) / std`` with a dataset-level mean / std (no clipping).

    Args:
        hu: HU array / tensor of any shape.
        mean: dataset mean HU.
        std: dataset standard deviation of HU (> 0).

    Returns:
        float32 array / tensor of the same type and shape (MetaTensor meta kept).
    """
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    x = convert_to_tensor(hu, track_meta=False)
    out = (x.to(torch.float32) - float(mean)) / float(std)
    result, *_ = convert_to_dst_type(out, hu, dtype=torch.float32 if isinstance(hu, torch.Tensor) else np.float32)
    return result


class CTWindows(Transform):
    """Window a one-channel HU image into ``K`` channels in ``[0, 1]`` (one per window).

    Args:
        windows: preset (``"head"``, ``"chest"``, ``"abdomen"``), a named window, a ``(center, width)`` pair, or a
            list of names / pairs (see ``WINDOW_PRESETS`` / ``NAMED_WINDOWS``).
        channel_dim: position of the singleton HU channel (0 for ``[1, X, Y, Z]``, 1 for ``[N, 1, H, W]``).

    Shapes:
        ``[1, *S]`` -> ``[K, *S]`` (or the channel axis at ``channel_dim``).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, windows: str | Sequence[str | Sequence[float]] = "head", channel_dim: int = 0) -> None:
        self.windows = resolve_windows(windows)
        self.channel_dim = int(channel_dim)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the windows to ``img``."""
        return apply_windows(img, self.windows, self.channel_dim)


class HUZScore(Transform):
    """The paper's mode: ``(hu - mean) / std`` with dataset statistics, one channel, not clipped.

    Args:
        mean: dataset mean HU (computed over the training scans).
        std: dataset standard deviation of HU (> 0).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, mean: float, std: float) -> None:
        if not np.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        if not (np.isfinite(std) and std > 0):
            raise ValueError(f"std must be finite and > 0, got {std}")
        self.mean = float(mean)
        self.std = float(std)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Z-score ``img``."""
        return zscore_hu(img, self.mean, self.std)
