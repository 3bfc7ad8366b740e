"""``LoadCTSeries``: one CT series (DICOM folder / file list, or NIfTI) as a channel-first HU ``MetaTensor``.

A thin convenience over :class:`~monai_ng.io.ct_series_reader.CTSeriesReader`: the same result as
``LoadImage(reader=CTSeriesReader(...), ensure_channel_first=True)`` (shape ``[1, X, Y, Z]``, float32 HU, RAS
affine, per-slice meta, on the reader's voxel grid), except that the decoded volume is wrapped without a copy (a
DICOM series stays a slice-major strided view, which ``CTSliceStack`` resizes fastest) and ``filename_or_obj`` is
the folder of a file list rather than its first file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import MetaKeys

from monai_ng.io.ct_series_reader import CTSeriesReader
from monai_ng.transforms.forwarding import wrapped_arguments

__all__ = ["LoadCTSeries"]


class LoadCTSeries(Transform):
    """Load a CT series from a DICOM folder, a list of DICOM files, a DICOM file or a NIfTI file.

    Output: ``MetaTensor`` ``[1, X, Y, Z]`` float32 HU, RAS affine, slices inferior -> superior; see
    :mod:`monai_ng.io.ct_series_reader` for the grid and the meta contents.

    Args:
        series_uid: which SeriesInstanceUID to load when the input mixes several series; without it a mixed input
            raises.
        on_geometry_issue: ``"raise"``, ``"warn"`` or ``"ignore"`` (see :class:`CTSeriesReader`).
        fix_ich_wrap: apply the RSNA ICH 12-bit wrapped-intercept fix.
        monochrome1: ``"hu"`` (default) or ``"invert"``.
        skip_unreadable: in a folder, skip files that are not readable DICOM images instead of raising.
        gap_factor, spacing_tolerance, tilt_tolerance_degrees, axial_tolerance_degrees: geometry thresholds.
        axcodes: target axis codes of the voxel grid (``"LPS"`` by default).
    """

    def __init__(
        self,
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
    ) -> None:
        self.reader = CTSeriesReader(**wrapped_arguments(CTSeriesReader, locals()))

    def __call__(
        self, data: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
    ) -> MetaTensor:
        """Load ``data`` (folder, file list, single DICOM file, or ``.nii`` / ``.nii.gz`` path).

        Args:
            data: what to load.
            series_uid: SeriesInstanceUID to pick for this call (overrides the constructor's).

        Returns:
            ``MetaTensor`` ``[1, X, Y, Z]`` float32 HU.
        """
        array, meta = self.reader.get_data(self.reader.read(data, series_uid=series_uid))
        affine = meta.pop(MetaKeys.AFFINE)
        return MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine), meta=meta)
