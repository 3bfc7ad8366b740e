"""Phantom CT volumes: head, chest and abdomen-like anatomy in Hounsfield units with one lesion of known extent.

Each volume carries one lesion whose axial extent is known exactly (a centre-biased block of slices), so slice-level
localization code can be tested end to end with no real data.

Conventions used throughout :mod:`monai_ng.data.phantom`:
    * ``hu`` is ``int16`` ``[N, H, W]`` with slice 0 the most inferior slice (increasing patient z, DICOM LPS).
    * Row ``r`` of a slice runs along +y (patient posterior), column ``c`` along +x (patient left), as in an axial
      DICOM image with ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``.
    * The phantom's HU lie in ``[-1000, 2000]`` so that every supported pixel mode stores them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HU_MAX", "HU_MIN", "REGIONS", "PhantomVolume", "head_skull_ellipse", "make_phantom_volume"]

REGIONS = ("head", "chest", "abdomen")
HU_MIN = -1000
HU_MAX = 2000

# Default geometry per region: slice spacing (mm) and in-plane field of view (mm).
_Z_SPACING = {"head": 5.0, "chest": 2.5, "abdomen": 3.0}
_FOV_MM = {"head": 230.0, "chest": 360.0, "abdomen": 400.0}


@dataclass
class PhantomVolume:
    """A phantom CT volume in Hounsfield units.

    Attributes:
        hu: ``int16`` array ``[N, H, W]``, slice 0 most inferior, values in ``[HU_MIN, HU_MAX]``.
        spacing: ``(z, y, x)`` voxel spacing in mm (z = distance between slice centres).
        lesion_slices: ``bool`` array ``[N]``; True exactly on the slices that contain lesion voxels.
        region: ``"head"``, ``"chest"`` or ``"abdomen"``.
        origin: patient (LPS) position ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``.
        lesion_hu: mean HU of the lesion (None without a lesion).
        lesion_radius_mm: in-plane radius of the lesion in mm (None without a lesion).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    lesion_slices: np.ndarray
    region: str
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lesion_hu: float | None = None
    lesion_radius_mm: float | None = None

    @property
    def n_slices(self) -> int:
        """Number of axial slices ``N``."""
        return int(self.hu.shape[0])

    @property
    def label(self) -> int:
        """Scan label: 1 when any slice holds the lesion."""
        return int(self.lesion_slices.any())


def _as_rng(seed: int | np.random.Generator | None, rng: np.random.Generator | None = None) -> np.random.Generator:
    if rng is not None:
        return rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy, cx, ry, rx) -> np.ndarray:
    """Boolean mask of points inside an axis-aligned ellipse; centres / radii broadcast against ``[N, 1, 1]``."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lesion_block(n_slices: int, rng: np.random.Generator) -> tuple[int, int]:
    """Centre-biased block of slices ``[start, stop)``: centre ~ N(N/2, N/8), length 15-35 % of N (at least 1)."""
    length = int(np.clip(round(n_slices * rng.uniform(0.15, 0.35)), 1, n_slices))
    centre = rng.normal((n_slices - 1) / 2.0, n_slices / 8.0)
    start = int(np.clip(round(centre - (length - 1) / 2.0), 0, n_slices - length))
    return start, start + length


def head_skull_ellipse(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head phantom's outer skull ellipse at relative heights ``z`` (0 = inferior, 1 = superior).

    In-plane coordinates run over ``[-1, 1]`` across the field of view (pixel centres at ``(i + 0.5) / size * 2 - 1``);
    the skull narrows toward the vertex. The brain is the ellipse with both semi-axes 0.1 smaller.

    Returns:
        ``(cy, ry, rx)``: centre row and semi-axes, each shaped like ``z``.
    """
    z = np.asarray(z, dtype=np.float32)
    scale = 0.55 + 0.4 * np.sqrt(np.clip(1.0 - ((z - 0.3) / 1.0) ** 2, 0.0, 1.0))
    return -0.05 + 0.05 * z, 0.9 * scale, 0.75 * scale


def _head(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    cy, ry, rx = head_skull_ellipse(zz)
    outer = _ellipse(yy, xx, cy, 0.0, ry, rx)
    inner = _ellipse(yy, xx, cy, 0.0, ry - 0.1, rx - 0.1)
    hu = np.full(np.broadcast_shapes(zz.shape, yy.shape, xx.shape), -1000.0, dtype=np.float32)
    hu[outer] = 1000.0 + 300.0 * rng.random()
    hu[inner] = 33.0
    white = _ellipse(yy, xx, cy, 0.0, 0.6 * ry, 0.55 * rx)
    hu[white & inner] = 28.0
    # Lateral ventricles: two CSF ellipses in the middle third of the volume.
    vent_on = (zz > 0.35) & (zz < 0.7)
    for side in (-1.0, 1.0):
        vent = _ellipse(yy, xx, cy - 0.05, side * 0.12 * rx, 0.3 * ry, 0.07) & vent_on
        hu[vent] = 5.0
    geometry = {"cy": cy, "ry": ry - 0.1, "rx": rx - 0.1}
    return hu, geometry


def _chest(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipse(yy, xx, 0.0, 0.0, 0.62, 0.92)
    hu[body] = -100.0  # subcutaneous fat
    muscle = _ellipse(yy, xx, 0.0, 0.0, 0.56, 0.85)
    hu[muscle] = 45.0
    # Lungs grow from the diaphragm (bottom) upward, then taper at the apex.
    lung_scale = np.clip(0.35 + 1.6 * zz - 1.2 * zz**2, 0.2, 1.0)
    for side in (-1.0, 1.0):
        lung = _ellipse(yy, xx, 0.0, side * 0.42, 0.45 * lung_scale, 0.32 * lung_scale)
        hu[lung] = -820.0
    spine = _ellipse(yy, xx, 0.45, 0.0, 0.1, 0.1)
    hu[spine] = 700.0
    aorta = _ellipse(yy, xx, 0.25, 0.1, 0.08, 0.08)
    hu[aorta] = 320.0
    # Contrast-filled pulmonary artery branch running obliquely through the right lung (image left).
    vy = -0.05 + 0.15 * zz
    vx = -0.42 + 0.05 * zz
    vessel = _ellipse(yy, xx, vy, vx, 0.16, 0.16)
    hu[vessel] = 330.0 + 40.0 * rng.random()
    geometry = {"vy": vy, "vx": vx}
    return hu, geometry


def _abdomen(zz, yy, xx, rng) -> tuple[np.ndarray, dict]:
    shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    width = 0.85 + 0.08 * zz
    body = _ellipse(yy, xx, 0.0, 0.0, 0.65, width)
    hu[body] = -100.0
    inner = _ellipse(yy, xx, 0.0, 0.0, 0.58, width - 0.07)
    hu[inner] = 20.0
    # Liver (patient right = image left) dominates the upper slices, shrinking downward.
    liver_scale = np.clip(1.4 * zz - 0.1, 0.0, 1.0)
    liver = _ellipse(yy, xx, -0.05, -0.35, 0.4 * liver_scale + 1e-3, 0.38 * liver_scale + 1e-3) & (liver_scale > 0)
    hu[liver] = 62.0
    spleen_scale = np.clip(2.0 * zz - 0.9, 0.0, 1.0)
    spleen = _ellipse(yy, xx, 0.1, 0.5, 0.18 * spleen_scale + 1e-3, 0.14 * spleen_scale + 1e-3) & (spleen_scale > 0)
    hu[spleen] = 50.0
    kidney_on = (zz > 0.3) & (zz < 0.75)
    for side in (-1.0, 1.0):
        kidney = _ellipse(yy, xx, 0.32, side * 0.3, 0.14, 0.09) & kidney_on
        hu[kidney] = 160.0
    # Bowel loops (fluid with gas) in the lower half.
    bowel_on = zz < 0.55
    for cy, cx in ((-0.3, 0.15), (-0.15, 0.4), (-0.35, -0.2)):
        loop = _ellipse(yy, xx, cy, cx, 0.1, 0.12) & bowel_on
        hu[loop] = 15.0
        gas = _ellipse(yy, xx, cy - 0.04, cx, 0.04, 0.06) & bowel_on
        hu[gas] = -900.0
    spine = _ellipse(yy, xx, 0.45, 0.0, 0.1, 0.1)
    hu[spine] = 650.0
    aorta = _ellipse(yy, xx, 0.3, 0.08, 0.06, 0.06)
    hu[aorta] = 180.0 + 60.0 * rng.random()
    geometry = {}
    return hu, geometry


def make_phantom_volume(
    region: str,
    n_slices: int,
    size: int = 64,
    lesion: bool = True,
    seed: int | np.random.Generator | None = None,
    rng: np.random.Generator | None = None,
    *,
    spacing: tuple[float, float, float] | None = None,
    noise_hu: float = 6.0,
    lesion_hu: tuple[float, float] | None = None,
    lesion_scale: tuple[float, float] | None = None,
) -> PhantomVolume:
    """Make an anatomy-like CT phantom with an optional lesion of known axial extent.

    Head: skull ring (~1000-1300 HU) narrowing toward the vertex around brain (28-33 HU) with CSF ventricles; lesion =
    hemorrhage blob (~70 HU). Chest: body, fat, lungs (-820 HU) growing from the diaphragm, spine, aorta and a bright
    contrast-filled pulmonary artery branch; lesion = filling defect (~45 HU) inside that vessel. Abdomen: body, liver,
    spleen, kidneys, bowel loops with gas, spine, aorta; lesion = active extravasation blob (~260 HU).

    The lesion occupies a centre-biased contiguous block of slices (centre ~ N(N/2, N/8), 15-35 % of the slices) and is
    visible (several pixels) on every slice of that block and on no other. The anatomy and the noise do not depend on
    ``lesion``: the same seed with ``lesion=False`` gives the same volume except on the lesion slices.

    Args:
        region: ``"head"``, ``"chest"`` or ``"abdomen"``.
        n_slices: number of axial slices ``N`` (>= 1).
        size: in-plane size ``H = W`` in pixels (>= 16).
        lesion: whether to insert the lesion.
        seed: integer seed or generator (ignored when ``rng`` is given).
        rng: numpy generator to draw from.
        spacing: ``(z, y, x)`` in mm; default depends on the region (FOV 230 / 360 / 400 mm over ``size`` pixels).
        noise_hu: standard deviation of additive Gaussian noise (HU).
        lesion_hu: ``(low, high)``: draw the lesion's mean HU uniformly from this range instead of the region's
            fixed value (70 / 45 / 260), e.g. ``(50, 90)`` for acute blood of varied contrast.
        lesion_scale: ``(low, high)``: multiply the lesion's in-plane radius by a factor drawn uniformly from this
            range (the radius never drops below ~2.6 pixels). Both draws come after all other draws, so leaving them
            None gives exactly the volumes of earlier versions.

    Returns:
        ``PhantomVolume`` with ``hu`` ``int16 [N, H, W]`` ordered inferior -> superior.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if not isinstance(n_slices, (int, np.integer)) or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if noise_hu < 0:
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    for what, value in (("lesion_hu", lesion_hu), ("lesion_scale", lesion_scale)):
        if value is not None and (len(value) != 2 or not value[0] <= value[1]):
            raise ValueError(f"{what} must be a (low, high) range with low <= high, got {value!r}")
    if lesion_scale is not None and lesion_scale[0] <= 0:
        raise ValueError(f"lesion_scale must be positive, got {lesion_scale!r}")
    if spacing is None:
        pixel = _FOV_MM[region] / size
        spacing = (_Z_SPACING[region], pixel, pixel)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    spacing = tuple(float(s) for s in spacing)

    generator = _as_rng(seed, rng)
    seeds = generator.integers(0, 2**63 - 1, size=3)
    anatomy_rng, noise_rng, lesion_rng = (np.random.default_rng(int(s)) for s in seeds)

    n = int(n_slices)
    zz = ((np.arange(n, dtype=np.float32) + 0.5) / n)[:, None, None]
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy = axis[None, :, None]
    xx = axis[None, None, :]
    builder = {"head": _head, "chest": _chest, "abdomen": _abdomen}[region]
    hu, geom = builder(*np.broadcast_arrays(zz, yy, xx), anatomy_rng)
    geom = {key: np.broadcast_to(value, (n, size, size))[:, 0, 0] for key, value in geom.items()}  # per slice [N]
    hu = np.broadcast_to(hu, (n, size, size)).copy()
    hu += noise_rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)

    lesion_slices = np.zeros(n, dtype=bool)
    start, stop = _lesion_block(n, lesion_rng)
    # Lesion position / appearance is drawn even when lesion=False so that the other draws do not shift.
    jitter = lesion_rng.uniform(-1.0, 1.0, size=2)
    value_hu = {"head": 70.0, "chest": 45.0, "abdomen": 260.0}[region]
    if lesion_hu is not None:
        value_hu = float(lesion_rng.uniform(*lesion_hu))
    scale = 1.0 if lesion_scale is None else float(lesion_rng.uniform(*lesion_scale))
    radius_mm = None
    if lesion:
        lesion_slices[start:stop] = True
        k = np.arange(n)[:, None, None]
        on = (k >= start) & (k < stop)
        min_r = 2.6 * 2.0 / size  # at least ~2.6 pixels of radius on every lesion slice
        if region == "head":
            k_mid = (start + stop - 1) // 2
            cy = float(geom["cy"][k_mid]) + 0.125 * jitter[0]
            ry_min = float(geom["ry"][start:stop].min())
            rx_min = float(geom["rx"][start:stop].min())
            cx = 0.35 * rx_min * (1.0 if jitter[1] >= 0 else -1.0)
            r = max(0.18 * min(ry_min, rx_min) * scale, min_r)
            mask = _ellipse(yy, xx, cy, cx, r, r) & on
            hu[mask] = value_hu + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)
        elif region == "chest":
            vy = geom["vy"][:, None, None]
            vx = geom["vx"][:, None, None]
            r = max(0.08 * scale, min_r)
            mask = _ellipse(yy, xx, vy + 0.03 * jitter[0], vx + 0.03 * jitter[1], r, r) & on
            hu[mask] = value_hu + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)
        else:
            cy, cx = -0.05 + 0.1 * jitter[0], -0.05 + 0.1 * jitter[1]
            r = max(0.1 * scale, min_r)
            mask = _ellipse(yy, xx, cy, cx, r, r * 1.2) & on
            hu[mask] = value_hu + noise_rng.normal(0.0, noise_hu, size=int(mask.sum())).astype(np.float32)
        radius_mm = round(r * size / 2.0 * spacing[2], 2)  # r is in half-widths of the field of view

    hu = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    dz, dy, dx = spacing
    origin_z = float(anatomy_rng.uniform(-400.0, 100.0))
    origin = (-(size - 1) / 2.0 * dx, -(size - 1) / 2.0 * dy, round(origin_z, 2))
    return PhantomVolume(
        hu=hu,
        spacing=spacing,
        lesion_slices=lesion_slices,
        region=region,
        origin=origin,
        lesion_hu=value_hu if lesion else None,
        lesion_radius_mm=radius_mm,
    )
