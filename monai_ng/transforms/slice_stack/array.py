"""Turn a CT volume into a stack of axial slices ``[N, C, H, W]`` (inferior -> superior) for a 2D encoder.

Input: a channel-first MONAI ``MetaTensor`` ``[C, X, Y, Z]`` as produced by ``monai_ng.transforms.LoadCTSeries``
(``X`` = DICOM column index, ``Y`` = row index, ``Z`` = slices inferior -> superior) or by MONAI's own
``LoadImage(..., ensure_channel_first=True)`` with the ITK / pydicom readers (same ``[C, H, W, D]`` convention).

Steps (each optional except the final stacking):

1. In-plane resampling to ``pixel_spacing`` mm with MONAI ``Spacing`` (slice spacing kept).
2. Resampling along z to ``slice_thickness`` mm (``resample_slices``): box-filter (slab overlap) weights, so each
   new slice is the overlap-weighted mean of the source slices its slab covers; a new slice's label is positive
   when **any** source slice with non-zero weight is positive (``map_slice_labels``).
3. Pad to square with the image minimum (per slice by default, as the paper's data preparation pads each 2D image
   with its minimum; E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs", 2026,
   code in ``tufts-ml/neuroimage-classifiers``). A constant pad value uses MONAI ``SpatialPad``.
4. Resize in-plane to ``spatial_size`` (224 x 224 by default) with MONAI ``Resize`` (depth kept).
5. Stack: ``[C, X, Y, Z]`` -> ``[Z, C, Y, X]`` = ``[N, C, H, W]`` with ``H`` along DICOM rows and ``W`` along
   columns (the orientation of ``pydicom``'s ``pixel_array``).

Per-slice metadata (``slice_sop_uids``, ``slice_sop_class_uids``, ``slice_files``, ``slice_positions``, ``ich_wrap_fixed`` when present) is
carried in the output's ``meta``; after z-resampling, positions are the new slab centres, list-valued per-slice keys
take the value of the source slice with the largest weight, and ``slice_source_indices`` /
``slice_source_weights`` record the full mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Resize, Spacing, SpatialPad, Transform
from monai.utils import convert_to_tensor

__all__ = [
    "PER_SLICE_META_KEYS",
    "CTSliceStack",
    "map_slice_labels",
    "pad_to_square_min",
    "resample_slices",
    "slice_resampling_weights",
]

#: List-valued meta keys (one entry per slice) that the stack keeps aligned with the slices.
PER_SLICE_META_KEYS = ("slice_sop_uids", "slice_sop_class_uids", "slice_files", "ich_wrap_fixed")
_PAD_VALUES = ("slice_min", "volume_min")
#: Modes for which the slice-major resize calls ``torch.nn.functional.interpolate`` directly (no anti-aliasing).
_DIRECT_MODES = ("bilinear", "nearest", "area")


def slice_resampling_weights(n_slices: int, spacing: float, thickness: float) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter weights that resample ``n_slices`` slices spaced ``spacing`` mm to slabs of ``thickness`` mm.

    Source slice ``k`` covers ``[k * s, (k + 1) * s)`` (slab edges measured from the first slab's lower edge). The
    output has ``M = max(1, round(n_slices * s / t))`` slabs ``[j * t, (j + 1) * t)``; weight ``W[j, k]`` is the
    overlap length of output slab ``j`` with source slab ``k``, rows normalised to sum to 1.

    Args:
        n_slices: number of source slices ``N`` (>= 1).
        spacing: source slice spacing ``s`` in mm (> 0).
        thickness: target slice thickness ``t`` in mm (> 0).

    Returns:
        ``(weights, centres)``: ``weights`` float64 ``[M, N]`` (rows sum to 1), ``centres`` float64 ``[M]`` = output
        slab centres in units of source slice index (``(j + 0.5) * t / s - 0.5``).
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if not spacing > 0 or not thickness > 0:
        raise ValueError(f"spacing and thickness must be > 0 mm, got spacing={spacing}, thickness={thickness}")
    length = n_slices * spacing
    m = max(1, int(round(length / thickness)))
    lo_out = np.arange(m)[:, None] * thickness
    lo_src = np.arange(n_slices)[None, :] * spacing
    overlap = np.minimum(lo_out + thickness, lo_src + spacing) - np.maximum(lo_out, lo_src)
    overlap = np.clip(overlap, 0.0, None)
    overlap[overlap < 1e-9 * spacing] = 0.0
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    centres = (np.arange(m) + 0.5) * thickness / spacing - 0.5
    return weights, centres


def map_slice_labels(labels: Sequence[int] | np.ndarray | torch.Tensor, weights: np.ndarray) -> np.ndarray:
    """Map per-slice labels through resampling weights: positive when any contributing source slice is positive.

    Args:
        labels: ``[N]`` binary (or non-negative) source slice labels.
        weights: ``[M, N]`` resampling weights (``slice_resampling_weights``).

    Returns:
        ``[M]`` array of the same dtype as ``labels``: ``max_k {labels[k] : weights[j, k] > 0}``.
    """
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab.ndim != 1 or lab.shape[0] != weights.shape[1]:
        raise ValueError(f"labels must be [N] with N = {weights.shape[1]} source slices, got shape {lab.shape}")
    contributes = weights > 0
    return np.where(contributes, lab[None, :], np.zeros((), dtype=lab.dtype)).max(axis=1).astype(lab.dtype)


def resample_slices(volume: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """Apply ``[M, N]`` slice weights along the last axis of ``volume`` ``[..., N]`` -> ``[..., M]`` (vectorised).

    Only the non-zero band of the weight matrix is used (each output slab touches at most
    ``ceil(t / s) + 1`` source slices), so the cost is ``O(M * band)`` per voxel column, not ``O(M * N)``.
    """
    x = convert_to_tensor(volume, track_meta=False)
    n = x.shape[-1]
    if weights.shape[1] != n:
        raise ValueError(f"weights expect {weights.shape[1]} slices, volume has {n}")
    nz = weights > 0
    first = nz.argmax(axis=1)
    band = int((nz.sum(axis=1)).max())
    idx = np.clip(first[:, None] + np.arange(band)[None, :], 0, n - 1)  # [M, band]
    w = np.take_along_axis(weights, idx, axis=1)
    w = np.where(first[:, None] + np.arange(band)[None, :] < n, w, 0.0)
    xf = x.to(torch.float32)
    out = torch.zeros((*x.shape[:-1], weights.shape[0]), dtype=torch.float32, device=x.device)
    for b in range(band):  # loop over the band width only (a handful), never over slices
        out += xf[..., torch.as_tensor(idx[:, b], device=x.device)] * torch.as_tensor(
            w[:, b], dtype=torch.float32, device=x.device
        )
    return out


def pad_to_square_min(img: torch.Tensor, per_slice: bool = True) -> torch.Tensor:
    """Pad ``[C, X, Y, Z]`` to ``X = Y`` (centred as MONAI ``SpatialPad``) with the minimum of each slice.

    Args:
        img: ``[C, X, Y, Z]`` tensor.
        per_slice: pad with the minimum over ``(X, Y)`` of each ``(c, z)`` slice; else with the volume minimum.

    Returns:
        ``[C, S, S, Z]`` with ``S = max(X, Y)`` (plain tensor; affine handling is the caller's).
    """
    c, x, y, z = img.shape
    s = max(x, y)
    if x == y:
        return img
    fill = img.amin(dim=(1, 2), keepdim=True) if per_slice else img.amin().reshape(1, 1, 1, 1)
    ox, oy = (s - x) // 2, (s - y) // 2
    if img.permute(3, 0, 2, 1).is_contiguous():  # keep slice-major memory (see CTSliceStack._resize_and_stack)
        out = fill.permute(3, 0, 2, 1).expand(z, c, s, s).clone()  # [Z, C, Y, X]
        out[:, :, oy : oy + y, ox : ox + x] = img.permute(3, 0, 2, 1)
        return out.permute(1, 3, 2, 0)
    out = fill.expand(c, s, s, z).clone()
    out[:, ox : ox + x, oy : oy + y, :] = img
    return out


def _check_spatial(name: str, value) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or (H, W), got {value!r}")
    return value


class CTSliceStack(Transform):
    """CT volume ``[C, X, Y, Z]`` -> slice stack ``[N, C, H, W]`` (inferior -> superior) with per-slice meta.

    Args:
        spatial_size: output ``H, W`` (int or pair), 224 by default.
        pixel_spacing: optional in-plane target spacing in mm (MONAI ``Spacing``; slice spacing kept).
        slice_thickness: optional target slice thickness in mm along z (box filter, see module docstring).
        pad_value: ``"slice_min"`` (default, per-slice minimum), ``"volume_min"`` or a number (HU).
        mode: interpolation for ``Resize`` (``"bilinear"``, ``"area"``, ``"nearest"``, ...), applied in-plane.
        anti_aliasing: MONAI ``Resize`` anti-aliasing when downsampling.

    Call: ``stack(img)`` returns the stack; ``stack.with_labels(img, slice_labels)`` returns ``(stack, labels[N])``
    with the per-slice labels ``[Z]`` mapped consistently with any z-resampling.
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        spatial_size: int | Sequence[int] = 224,
        pixel_spacing: float | Sequence[float] | None = None,
        slice_thickness: float | None = None,
        pad_value: str | float = "slice_min",
        mode: str = "bilinear",
        anti_aliasing: bool = False,
    ) -> None:
        self.spatial_size = _check_spatial("spatial_size", spatial_size)
        if pixel_spacing is not None:
            ps = (float(pixel_spacing),) * 2 if np.isscalar(pixel_spacing) else tuple(float(v) for v in pixel_spacing)
            if len(ps) != 2 or min(ps) <= 0:
                raise ValueError(f"pixel_spacing must be > 0 mm (one value or (x, y)), got {pixel_spacing!r}")
            pixel_spacing = ps
        self.pixel_spacing = pixel_spacing
        if slice_thickness is not None and not float(slice_thickness) > 0:
            raise ValueError(f"slice_thickness must be > 0 mm, got {slice_thickness}")
        self.slice_thickness = None if slice_thickness is None else float(slice_thickness)
        if isinstance(pad_value, str) and pad_value not in _PAD_VALUES:
            raise ValueError(f"pad_value must be one of {_PAD_VALUES} or a number, got {pad_value!r}")
        self.pad_value = pad_value
        self.mode = mode
        self.anti_aliasing = bool(anti_aliasing)
        self._spacing = (
            Spacing(pixdim=(*pixel_spacing, 0.0), mode="bilinear", padding_mode="border")
            if pixel_spacing is not None
            else None
        )
        self._resize = Resize(
            spatial_size=(*self.spatial_size, -1),
            mode="trilinear" if mode == "bilinear" else mode,
            anti_aliasing=self.anti_aliasing,
        )
        self._resize_2d = Resize(spatial_size=self.spatial_size, mode=mode, anti_aliasing=self.anti_aliasing)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        """Build the stack ``[N, C, H, W]`` of ``img`` ``[C, X, Y, Z]``."""
        return self._stack(img, None)[0]

    def with_labels(
        self, img: torch.Tensor, slice_labels: Sequence[int] | np.ndarray | torch.Tensor
    ) -> tuple[MetaTensor, np.ndarray]:
        """Build the stack and map the per-slice labels ``[Z]`` to its ``N`` slices (see :func:`map_slice_labels`).

        Returns:
            ``(stack [N, C, H, W], labels [N])``; labels keep their dtype.
        """
        if slice_labels is None:
            raise ValueError("slice_labels must be given ([Z] per-slice labels); use the call without labels otherwise")
        stack, weights = self._stack(img, slice_labels)
        labels = np.asarray(slice_labels.cpu() if isinstance(slice_labels, torch.Tensor) else slice_labels)
        if weights is not None:
            labels = map_slice_labels(labels, weights)
        return stack, labels

    def _stack(
        self, img: torch.Tensor, slice_labels: Sequence[int] | np.ndarray | torch.Tensor | None
    ) -> tuple[MetaTensor, np.ndarray | None]:
        """The stack and the z-resampling weights (``None`` without ``slice_thickness``)."""
        if not isinstance(img, torch.Tensor) or img.ndim != 4:
            shape = getattr(img, "shape", None)
            raise ValueError(f"expected a channel-first volume [C, X, Y, Z] (MetaTensor), got shape {shape}")
        source = str(img.meta.get("filename_or_obj", "")) if isinstance(img, MetaTensor) else ""
        where = f"{source}: " if source else ""
        n_src = int(img.shape[-1])
        if slice_labels is not None and len(slice_labels) != n_src:
            raise ValueError(f"{where}{len(slice_labels)} slice labels for a volume of {n_src} slices")
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        x = img if isinstance(img, MetaTensor) else MetaTensor(img)
        x = x.to(torch.float32)

        if self._spacing is not None:
            x = self._spacing(x)

        weights = None
        if self.slice_thickness is not None:
            dz = _slice_spacing(x, meta)
            weights, centres = slice_resampling_weights(n_src, dz, self.slice_thickness)
            data = resample_slices(x.as_tensor(), weights)
            affine = x.affine.clone().to(torch.float64)
            step = self.slice_thickness / dz
            shift = torch.eye(4, dtype=torch.float64)
            shift[2, 2] = step
            shift[2, 3] = 0.5 * step - 0.5
            x = MetaTensor(data, affine=affine @ shift, meta={k: v for k, v in x.meta.items() if k != "affine"})
            meta.update(_resampled_slice_meta(meta, weights, centres, dz, self.slice_thickness))

        if x.shape[1] != x.shape[2]:
            if self.pad_value == "slice_min" or self.pad_value == "volume_min":
                padded = pad_to_square_min(x.as_tensor(), per_slice=self.pad_value == "slice_min")
                s = padded.shape[1]
                affine = x.affine.clone().to(torch.float64)
                offset = torch.tensor([-((s - x.shape[1]) // 2), -((s - x.shape[2]) // 2), 0.0], dtype=torch.float64)
                affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ offset
                x = MetaTensor(padded, affine=affine, meta={k: v for k, v in x.meta.items() if k != "affine"})
            else:
                s = max(x.shape[1], x.shape[2])
                x = SpatialPad(spatial_size=(s, s, -1), mode="constant", value=float(self.pad_value))(x)

        stack, volume_affine = self._resize_and_stack(x)
        out_meta = {k: v for k, v in x.meta.items() if k != "affine"}
        for key in (*PER_SLICE_META_KEYS, "slice_positions", "slice_source_indices", "slice_source_weights"):
            if key in meta:
                out_meta[key] = meta[key]
        out_meta["stack_layout"] = "NCHW"
        out_meta["slice_spacing_mm"] = meta.get(
            "slice_spacing_mm", _slice_spacing(x, meta) if weights is None else None
        )
        out_meta["volume_affine"] = volume_affine
        return MetaTensor(stack, meta=out_meta), weights

    def _resize_and_stack(self, x: MetaTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In-plane resize with MONAI ``Resize`` and reorder ``[C, X, Y, Z]`` -> ``[N, C, H=Y, W=X]``.

        Slice-major memory (``x.permute(3, 0, 2, 1)`` contiguous, as when a loader stacks 2D slices along a leading
        axis and exposes a permuted view): resize the slices as the channels of one 2D image (no transposition at
        all). Otherwise (slice axis fastest in memory): resize the 3D volume with depth kept, then transpose the
        small resized volume. Both give the same values (bilinear in-plane, the depth axis untouched).
        """
        c, nx, ny, nz = x.shape
        h, w = self.spatial_size
        slices = x.as_tensor().permute(3, 0, 2, 1)  # [N, C, Y, X] view
        if (ny, nx) == (h, w):
            return slices.contiguous(), x.affine.clone()
        if slices.is_contiguous():
            flat = slices.reshape(nz * c, ny, nx)
            if self.mode in _DIRECT_MODES and not self.anti_aliasing:
                # what MONAI Resize computes here (interpolate with align_corners=None), minus its meta bookkeeping
                out = F.interpolate(flat[None], size=(h, w), mode=self.mode)[0].reshape(nz, c, h, w)
            else:
                out = self._resize_2d(MetaTensor(flat)).as_tensor().reshape(nz, c, h, w)
            zoom = torch.diag(torch.tensor([nx / w, ny / h, 1.0, 1.0], dtype=torch.float64))
            affine = x.affine.clone().to(torch.float64)
            affine[:3, 3] = affine[:3, 3] + affine[:3, :2] @ torch.tensor(
                [(nx / w - 1) / 2, (ny / h - 1) / 2], dtype=torch.float64
            )
            return out, affine @ zoom
        y = self._resize(x)
        return y.as_tensor().permute(3, 0, 2, 1).contiguous(), y.affine.clone()


def _slice_spacing(x: torch.Tensor, meta: Mapping) -> float:
    """Slice spacing (mm): from the loader's ``slice_positions`` when present, else from the affine's z column."""
    positions = meta.get("slice_positions")
    if positions is not None and len(positions) > 1:
        diffs = np.diff(np.asarray(positions, dtype=np.float64))
        return float(np.median(np.abs(diffs)))
    if isinstance(x, MetaTensor):
        return float(torch.linalg.norm(x.affine[:3, 2].to(torch.float64)))
    return 1.0


def _resampled_slice_meta(meta: Mapping, weights: np.ndarray, centres: np.ndarray, dz: float, t: float) -> dict:
    out: dict = {"slice_spacing_mm": t}
    nearest = weights.argmax(axis=1)
    out["slice_source_indices"] = [np.flatnonzero(row > 0).tolist() for row in weights]
    out["slice_source_weights"] = [row[row > 0].tolist() for row in weights]
    positions = meta.get("slice_positions")
    if positions is not None and len(positions) == weights.shape[1]:
        p = np.asarray(positions, dtype=np.float64)
        sign = 1.0 if len(p) < 2 or p[-1] >= p[0] else -1.0
        out["slice_positions"] = (p[0] + sign * centres * dz).tolist()
    for key in PER_SLICE_META_KEYS:
        values = meta.get(key)
        if values is not None and len(values) == weights.shape[1]:
            out[key] = [values[i] for i in nearest]
    return out
