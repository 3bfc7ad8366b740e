"""Inference-time loading: one scan -> its ``[S, C, H, W]`` slice stack plus the per-slice facts the outputs need.

:class:`LoadSliceStackd` applies exactly the preprocessing of the embedding step (the same
:class:`~monai_ng.embedding.stack_loading.CTSliceStackLoader`: ``LoadCTSeries`` -> square pad + resize -> windows or
z-score), so a bundle's inference sees the slices the MIL network was trained on. It keeps what the outputs need
from the loader's meta under ``slice_meta`` (plain Python, no patient identifier): slice positions ``z_mm``
(inferior -> superior), SOPInstanceUIDs and files of DICOM slices, the study and series UIDs.

A scan that cannot be loaded does not stop the run: the item carries ``image=None`` and ``error`` (the reason,
naming the file), and :class:`~monai_ng.bundle.prediction_writer.PredictionWriter` records it in ``failures.csv``.

:func:`collate_scans` and :func:`prepare_scan_batch` are the ``DataLoader`` collate and the evaluator's
``prepare_batch`` for these items.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_ng.embedding.stack_loading import CTSliceStackLoader
from monai_ng.transforms.series import LoadCTSeries

__all__ = ["SLICE_META_KEY", "ERROR_KEY", "LoadSliceStackd", "collate_scans", "prepare_scan_batch", "slice_z_positions"]

SLICE_META_KEY = "slice_meta"
ERROR_KEY = "error"


def slice_z_positions(volume: MetaTensor) -> list[float] | None:
    """Patient z (mm) of each slice of a ``[1, X, Y, Z]`` volume, inferior -> superior; None when not monotonic.

    DICOM: the reader's ``slice_positions`` (position along the slice normal, which is z for axial series). NIfTI:
    the z of each slice centre from the affine (RAS z = LPS z, superior positive).
    """
    positions = volume.meta.get("slice_positions") if isinstance(volume, MetaTensor) else None
    if positions is not None and len(positions) == volume.shape[-1]:
        z = np.asarray(positions, dtype=np.float64)
    elif isinstance(volume, MetaTensor):
        affine = np.asarray(volume.affine, dtype=np.float64)
        k = np.arange(volume.shape[-1], dtype=np.float64)
        centre = np.array([(volume.shape[1] - 1) / 2.0, (volume.shape[2] - 1) / 2.0])
        z = affine[2, 0] * centre[0] + affine[2, 1] * centre[1] + affine[2, 2] * k + affine[2, 3]
    else:
        return None
    if z.size > 1 and not np.all(np.diff(z) > 0):
        return None
    return [float(v) for v in z] if np.all(np.isfinite(z)) else None


class LoadSliceStackd(MapTransform):
    """Load ``data[key]`` (DICOM file list / folder / NIfTI path) as the embedding step's ``[S, C, H, W]`` stack.

    Args:
        keys: the image key (``"image"``).
        loader: the bundle's :class:`CTSliceStackLoader` (window preset / z-score, channels, image size) -- the one
            the embedding step used.
        on_geometry_issue: passed to ``LoadCTSeries`` (``"warn"``: gaps are logged, not fatal).
        catch_errors: record a load failure in the item (``image=None``, ``error``) instead of raising.

    Output item: ``image`` float32 ``[S, C, H, W]`` in the loader's intensity range (slices inferior -> superior),
    ``slice_meta`` ``{"z_mm", "sop_instance_uids", "sop_class_uids", "files", "study_uid", "series_uid", "source"}`` and ``error``
    (None on success). ``seconds`` accumulates the wall-clock time spent loading (in this process).
    """

    def __init__(
        self,
        keys: KeysCollection,
        loader: CTSliceStackLoader,
        on_geometry_issue: str = "warn",
        catch_errors: bool = True,
    ) -> None:
        super().__init__(keys)
        if not isinstance(loader, CTSliceStackLoader):
            raise TypeError(f"loader must be a CTSliceStackLoader, got {type(loader).__name__}")
        self.loader = loader
        self.load = LoadCTSeries(on_geometry_issue=on_geometry_issue)
        self.catch_errors = catch_errors
        self.seconds = 0.0

    def _load(self, source: str | Sequence[str]) -> tuple[torch.Tensor, dict[str, Any]]:
        volume = self.load(source)
        stack = self.loader.stack_from_hu(volume)
        meta = volume.meta
        n = int(stack.shape[0])
        uids = meta.get("slice_sop_uids")
        classes = meta.get("slice_sop_class_uids")
        files = meta.get("slice_files")
        slice_meta = {
            "z_mm": slice_z_positions(volume),
            "sop_instance_uids": [str(u) for u in uids] if uids is not None and len(uids) == n else None,
            "sop_class_uids": [str(c) for c in classes] if classes is not None and len(classes) == n else None,
            "files": [str(f) for f in files] if files is not None and len(files) == n else None,
            "study_uid": str(meta["study_uid"]) if meta.get("study_uid") else None,
            "series_uid": str(meta["series_uid"]) if meta.get("series_uid") else None,
        }
        return stack, slice_meta

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        start = time.perf_counter()
        try:
            return self._call(data)
        finally:
            self.seconds += time.perf_counter() - start

    def _call(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            try:
                stack, slice_meta = _run_loader(self, source)
            except Exception as exc:  # one bad scan is recorded, the run goes on
                if not self.catch_errors:
                    raise
                d[key] = None
                d[SLICE_META_KEY] = None
                d[ERROR_KEY] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                continue
            d[key] = stack
            d[SLICE_META_KEY] = slice_meta
            d[ERROR_KEY] = None
        return d


def _run_loader(transform: LoadSliceStackd, source: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(source, (list, tuple)) and len(source) == 1:
        source = source[0]
    return transform._load(source)


def collate_scans(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate scan items (batch size 1 is the norm: scans differ in slice count).

    Returns:
        ``image`` ``[B, S, C, H, W]`` (an empty tensor when a scan of the batch failed to load or when the scans'
        slice counts differ -- use batch size 1), and every other key as a list over the batch.
    """
    if not items:
        raise ValueError("collate_scans got an empty batch")
    out: dict[str, Any] = {k: [item.get(k) for item in items] for k in items[0] if k != "image"}
    images = [item.get("image") for item in items]
    if any(img is None for img in images) or len({tuple(img.shape) for img in images}) != 1:
        if all(img is not None for img in images):
            raise ValueError(
                f"scans of one batch have different shapes {[tuple(i.shape) for i in images]}; use batch_size 1"
            )
        out["image"] = torch.empty(0)
    else:
        out["image"] = torch.stack([torch.as_tensor(img).as_subclass(torch.Tensor) for img in images])
    return out


def prepare_scan_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    """MONAI ``prepare_batch`` for :func:`collate_scans` batches: ``(image [B, S, C, H, W] on device, None)``."""
    if not isinstance(batchdata, Mapping) or "image" not in batchdata:
        raise TypeError("prepare_scan_batch expects a dict from collate_scans with an 'image' entry")
    return batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs), None
