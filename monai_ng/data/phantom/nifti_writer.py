"""Write a phantom volume as NIfTI with the RAS affine matching its DICOM geometry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monai_ng.data.phantom.volume import PhantomVolume

__all__ = ["nifti_affine", "write_nifti"]


def nifti_affine(volume: PhantomVolume) -> np.ndarray:
    """RAS voxel-to-world affine ``[4, 4]`` for the NIfTI array ``[x, y, z] = hu.transpose(2, 1, 0)``.

    DICOM is LPS, so x and y flip sign: world_RAS = (-(x0 + i dx), -(y0 + j dy), z0 + k dz) for voxel (i, j, k).
    """
    dz, dy, dx = volume.spacing
    x0, y0, z0 = volume.origin
    affine = np.diag([-dx, -dy, dz, 1.0])
    affine[:3, 3] = [-x0, -y0, z0]
    return affine


def write_nifti(volume: PhantomVolume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as NIfTI (int16, ``[x, y, z]`` = columns, rows, slices) with an RAS affine.

    The affine matches the DICOM geometry written by ``write_dicom_series`` (no tilt): voxel (i, j, k) is column i,
    row j of slice k (inferior -> superior). ``scl_slope`` / ``scl_inter`` are left at 1 / 0 (data are HU).

    Returns:
        The path written.
    """
    import nibabel as nib

    if not isinstance(volume, PhantomVolume):
        raise TypeError(f"volume must be a PhantomVolume, got {type(volume).__name__}")
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"{path}: NIfTI path must end with .nii or .nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(volume.hu.transpose(2, 1, 0))
    img = nib.Nifti1Image(data, nifti_affine(volume))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(nifti_affine(volume), code=1)
    img.set_sform(nifti_affine(volume), code=1)
    nib.save(img, str(path))
    return path
