"""Order the slices of one CT series along the slice normal, report its geometry problems, build its affine.

Ordering follows the DICOM geometry (PS3.3 C.7.6.2.1.1): a slice's position along the series is the projection of
its ImagePositionPatient (IPP) on the slice normal ``row x col`` of ImageOrientationPatient (IOP). InstanceNumber
and file names are never used for ordering (MONAI's ``PydicomReader`` sorts by InstanceNumber and averages gaps
away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from monai_ng.io.dicom_header import SliceHeader, slice_normal

__all__ = ["LPS_TO_RAS", "SeriesGeometry", "analyze_series_geometry", "dicom_affine", "order_series"]

#: ``diag(-1, -1, 1, 1)``: flips DICOM LPS to RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class SeriesGeometry:
    """Structured geometry report of one series, slices ordered inferior -> superior.

    Attributes:
        order: indices into the input header list, in output slice order.
        positions: projection of each ordered slice's IPP on the slice normal (mm), shape ``[Z]``.
        normal: unit slice normal (LPS), ``(nx, ny, nz)``.
        slice_spacing: median distance between consecutive distinct positions (mm); 0 for one slice.
        step: mean IPP step vector between consecutive ordered slices (LPS mm); the affine's third column.
        pixel_spacing: ``(row spacing, column spacing)`` in mm.
        shape: ``(rows, columns)``.
        dropped: indices of inputs removed as exact duplicates (same SOPInstanceUID and position) or, when
            duplicate positions are not raised, later files at an already occupied position.
        duplicate_positions: groups of input indices sharing one position with different SOPInstanceUIDs.
        gaps: ``(k, distance)`` where the distance between ordered slices ``k`` and ``k + 1`` exceeds
            ``gap_factor`` times the median spacing (missing slices).
        inconsistent_spacing: ``True`` if some spacing deviates from the median by more than
            ``spacing_tolerance`` (relative) without being a gap.
        tilt_degrees: angle between the slice-to-slice step and the normal (gantry tilt), or the
            GantryDetectorTilt tag when larger.
        non_axial: slice normal more than ``axial_tolerance_degrees`` away from the patient z axis.
        oblique_degrees: angle between the slice normal and the nearest patient axis (x, y or z).
        oblique: ``oblique_degrees`` is at least ``oblique_tolerance_degrees`` (an oblique acquisition, even when the
            slices step along the normal and GantryDetectorTilt is 0).
        issues: human-readable list of every problem found (empty = clean series); these are what
            ``on_geometry_issue`` acts on.
        notes: harmless events (exact duplicates dropped), never raised.
    """

    order: list[int]
    positions: list[float]
    normal: tuple[float, float, float]
    slice_spacing: float
    step: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    dropped: list[int] = field(default_factory=list)
    duplicate_positions: list[list[int]] = field(default_factory=list)
    gaps: list[tuple[int, float]] = field(default_factory=list)
    inconsistent_spacing: bool = False
    tilt_degrees: float = 0.0
    non_axial: bool = False
    oblique_degrees: float = 0.0
    oblique: bool = False
    issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain-dict view (JSON-serialisable)."""
        return asdict(self)


def analyze_series_geometry(
    headers: Sequence[SliceHeader],
    gap_factor: float = 1.5,
    spacing_tolerance: float = 0.1,
    tilt_tolerance_degrees: float = 0.5,
    axial_tolerance_degrees: float = 30.0,
    position_tolerance: float = 1e-3,
    oblique_tolerance_degrees: float = 5.0,
) -> SeriesGeometry:
    """Order the slices of one series along the slice normal and report its geometry problems.

    The normal ``n = row x col`` comes from the first slice's IOP; every slice's position is ``IPP . n``. Slices
    are sorted by that projection, and the order is reversed when ``n`` points inferior (negative LPS z), so the
    output always runs inferior -> superior for axial-ish series (for sagittal/coronal series the order runs
    along ``n``).

    Args:
        headers: the slices of one series (any order).
        gap_factor: a spacing larger than ``gap_factor * median`` is a gap (missing slice).
        spacing_tolerance: relative deviation from the median spacing tolerated before reporting inconsistency.
        tilt_tolerance_degrees: angle between step and normal tolerated before reporting gantry tilt.
        axial_tolerance_degrees: angle between normal and patient z tolerated before reporting non-axial.
        position_tolerance: two positions closer than this (mm) are the same position.
        oblique_tolerance_degrees: an angle of at least this between the normal and the nearest patient axis is
            reported as an oblique acquisition.

    Returns:
        The :class:`SeriesGeometry`.

    Raises:
        ValueError: naming the file and reason for: no slices, mixed series, missing IPP/IOP/PixelSpacing,
            inconsistent IOP or image shape or pixel spacing (these cannot be stacked into one volume), and
            conflicting duplicates (one SOPInstanceUID at two different positions).
    """
    if len(headers) == 0:
        raise ValueError("no slices given")
    uids = {h.series_instance_uid for h in headers}
    if len(uids) > 1:
        raise ValueError(f"{headers[0].path}: slices belong to {len(uids)} series {sorted(uids)[:5]}; give one")
    for h in headers:
        for name, value in (
            ("ImagePositionPatient", h.image_position),
            ("ImageOrientationPatient", h.image_orientation),
            ("PixelSpacing", h.pixel_spacing),
        ):
            if value is None:
                raise ValueError(f"{h.path}: missing {name}; cannot place the slice in the series")
    first = headers[0]
    iop0 = np.asarray(first.image_orientation)
    n = slice_normal(iop0, first.path)
    for h in headers[1:]:
        if np.max(np.abs(np.asarray(h.image_orientation) - iop0)) > 1e-3:
            raise ValueError(
                f"{h.path}: ImageOrientationPatient {h.image_orientation} differs from {first.path} "
                f"{first.image_orientation} within series {first.series_instance_uid}"
            )
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise ValueError(
                f"{h.path}: image shape {(h.rows, h.columns)} differs from {(first.rows, first.columns)} of "
                f"{first.path} within series {first.series_instance_uid}"
            )
        if np.max(np.abs(np.asarray(h.pixel_spacing) - np.asarray(first.pixel_spacing))) > 1e-3:
            raise ValueError(
                f"{h.path}: PixelSpacing {h.pixel_spacing} differs from {first.pixel_spacing} of {first.path} "
                f"within series {first.series_instance_uid}"
            )
    issues: list[str] = []
    notes: list[str] = []
    ipp = np.asarray([h.image_position for h in headers], dtype=np.float64)
    proj = ipp @ n
    # exact duplicates (same SOP) are dropped; same SOP at another position is a conflict
    dropped: list[int] = []
    seen_sop: dict[str, int] = {}
    keep: list[int] = []
    for i, h in enumerate(headers):
        sop = h.sop_instance_uid
        if sop and sop in seen_sop:
            j = seen_sop[sop]
            if np.linalg.norm(ipp[i] - ipp[j]) > position_tolerance:
                raise ValueError(
                    f"{h.path}: SOPInstanceUID {sop} also in {headers[j].path} at a different position "
                    f"({tuple(ipp[j])} vs {tuple(ipp[i])}); conflicting duplicate"
                )
            dropped.append(i)
            notes.append(f"exact duplicate of {headers[j].path} dropped: {h.path}")
            continue
        seen_sop[sop] = i
        keep.append(i)
    # sort by projection, ties by InstanceNumber then path (deterministic)
    keep.sort(key=lambda i: (proj[i], headers[i].instance_number or 0, headers[i].path))
    if n[2] < 0:
        keep.reverse()
    duplicates: list[list[int]] = []
    order: list[int] = []
    for i in keep:
        if order and abs(proj[i] - proj[order[-1]]) <= position_tolerance:
            if duplicates and duplicates[-1][0] == order[-1]:
                duplicates[-1].append(i)
            else:
                duplicates.append([order[-1], i])
            dropped.append(i)
            continue
        order.append(i)
    for group in duplicates:
        issues.append(
            f"duplicate position {proj[group[0]]:.3f} mm shared by different SOPs: "
            + ", ".join(headers[g].path for g in group)
        )
    pos = proj[order]
    diffs = np.abs(np.diff(pos))
    spacing = float(np.median(diffs)) if len(diffs) else 0.0
    gaps: list[tuple[int, float]] = []
    inconsistent = False
    if len(diffs):
        for k, d in enumerate(diffs):
            if d > gap_factor * spacing:
                gaps.append((k, float(d)))
                issues.append(
                    f"gap of {d:.3f} mm (median spacing {spacing:.3f} mm) between {headers[order[k]].path} and "
                    f"{headers[order[k + 1]].path}: missing slice(s)"
                )
            elif abs(d - spacing) > spacing_tolerance * spacing:
                inconsistent = True
        if inconsistent:
            issues.append(
                f"inconsistent slice spacing: {float(diffs.min()):.3f}..{float(diffs.max()):.3f} mm "
                f"(median {spacing:.3f}) in series {first.series_instance_uid}"
            )
    if len(order) > 1:
        step = (ipp[order[-1]] - ipp[order[0]]) / (len(order) - 1)
        if gaps:  # mean step is stretched by gaps: use the median spacing along the step's direction
            step = step / np.linalg.norm(step) * spacing
        cosang = abs(float(step @ n)) / max(float(np.linalg.norm(step)), 1e-12)
        tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
    else:
        step = n * 1.0
        tilt = 0.0
    tilt = max(tilt, abs(first.gantry_tilt))
    if tilt > tilt_tolerance_degrees:
        issues.append(f"gantry tilt of {tilt:.2f} degrees in series {first.series_instance_uid}")
    axial_angle = float(np.degrees(np.arccos(min(1.0, abs(float(n[2]))))))
    non_axial = axial_angle > axial_tolerance_degrees
    if non_axial:
        issues.append(
            f"non-axial acquisition: slice normal {tuple(np.round(n, 3))} is {axial_angle:.1f} degrees from the "
            f"patient z axis in series {first.series_instance_uid}"
        )
    nearest = int(np.argmax(np.abs(n)))
    oblique_angle = float(np.degrees(np.arccos(min(1.0, abs(float(n[nearest]))))))
    oblique = oblique_angle >= oblique_tolerance_degrees
    if oblique and not (nearest == 2 and non_axial):  # a non-axial series already reports its angle from z
        issues.append(
            f"oblique acquisition: slice normal {tuple(np.round(n, 3))} is {oblique_angle:.1f} degrees from the "
            f"patient {'xyz'[nearest]} axis in series {first.series_instance_uid}"
        )
    return SeriesGeometry(
        order=[int(i) for i in order],
        positions=[float(p) for p in pos],
        normal=tuple(float(v) for v in n),  # type: ignore[arg-type]
        slice_spacing=spacing,
        step=tuple(float(v) for v in step),  # type: ignore[arg-type]
        pixel_spacing=tuple(float(v) for v in first.pixel_spacing),  # type: ignore[arg-type,union-attr]
        shape=(first.rows, first.columns),
        dropped=sorted(int(i) for i in dropped),
        duplicate_positions=[[int(g) for g in group] for group in duplicates],
        gaps=gaps,
        inconsistent_spacing=inconsistent,
        tilt_degrees=tilt,
        non_axial=non_axial,
        oblique_degrees=oblique_angle,
        oblique=oblique,
        issues=issues,
        notes=notes,
    )


def order_series(headers: Sequence[SliceHeader], **geometry_kwargs: float) -> tuple[list[SliceHeader], SeriesGeometry]:
    """Headers of one series in output order (inferior -> superior), with the geometry report.

    Args:
        headers: the slices of one series.
        **geometry_kwargs: thresholds for :func:`analyze_series_geometry`.

    Returns:
        ``(ordered headers, geometry)``; exact duplicates and later files at an occupied position are left out.
    """
    geometry = analyze_series_geometry(headers, **geometry_kwargs)
    return [headers[i] for i in geometry.order], geometry


def dicom_affine(headers: Sequence[SliceHeader], geometry: SeriesGeometry, lps_to_ras: bool = True) -> np.ndarray:
    """Voxel -> world affine of a ``[X, Y, Z]`` volume (X = column index, Y = row index, Z = ordered slice).

    ``world = IPP_0 + i * dc * row_dir + j * dr * col_dir + k * step`` (DICOM PS3.3 C.7.6.2.1.1), with
    ``PixelSpacing = (dr, dc)`` and ``step`` the series' slice step (see :class:`SeriesGeometry`).

    Returns:
        ``[4, 4]`` float64, RAS when ``lps_to_ras`` else LPS.
    """
    first = headers[geometry.order[0]]
    iop = np.asarray(first.image_orientation, dtype=np.float64)
    dr, dc = geometry.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * dc
    affine[:3, 1] = iop[3:] * dr
    affine[:3, 2] = np.asarray(geometry.step)
    affine[:3, 3] = np.asarray(first.image_position, dtype=np.float64)
    return LPS_TO_RAS @ affine if lps_to_ras else affine
