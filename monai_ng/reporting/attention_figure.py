"""The attention figure of one scan: slice attention, its fitted normal (the NG reference) and the top-k slices.

Drawn with matplotlib's Agg canvas on a :class:`matplotlib.figure.Figure` object (never ``pyplot``), so it needs no
display, does not touch the global backend and leaks no figure. The rendered RGB array is returned so the same
picture can go into a DICOM Secondary Capture (:mod:`monai_ng.reporting.dicom_documents`); the PNG is that exact
array, losslessly encoded with Pillow and without metadata.

Nothing identifying is drawn: the title carries the probability and finding only, plus ``scan_id`` when the caller
says it is not an identifier (``show_scan_id=True``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from monai_ng.reporting.atomic_file import write_atomic
from monai_ng.reporting.scan_result import ScanResult, check_scan_id, fit_normal_reference

__all__ = ["render_attention_figure", "encode_png", "write_attention_png"]


def _check_thumbnails(
    thumbnails: Mapping[int, np.ndarray] | None, wanted: list[int], scan_id: str
) -> dict[int, np.ndarray]:
    if thumbnails is None:
        return {}
    if not isinstance(thumbnails, Mapping):
        raise TypeError(
            f"scan {scan_id!r}: thumbnails must map slice index -> 2-D array, got {type(thumbnails).__name__}"
        )
    missing = [i for i in wanted if i not in thumbnails]
    if missing:
        raise ValueError(f"scan {scan_id!r}: thumbnails lack the top-k slice indices {missing}")
    out = {}
    for i in wanted:
        img = np.asarray(thumbnails[i])
        if img.ndim != 2 or min(img.shape) < 1:
            raise ValueError(f"scan {scan_id!r}: thumbnail of slice {i} must be a 2-D [H, W] array, got {img.shape}")
        if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
            raise TypeError(f"scan {scan_id!r}: thumbnail of slice {i} must be real numbers, got dtype {img.dtype}")
        img = img.astype(np.float64)
        if not np.all(np.isfinite(img)):
            raise ValueError(f"scan {scan_id!r}: thumbnail of slice {i} must be finite (it holds NaN or inf)")
        if img.min() < 0.0 or img.max() > 1.0:
            raise ValueError(
                f"scan {scan_id!r}: thumbnail of slice {i} must be windowed to [0, 1] "
                f"(got min {img.min()}, max {img.max()}); window it before passing it"
            )
        out[i] = img
    return out


def render_attention_figure(
    result: ScanResult,
    top_k: int = 5,
    thumbnails: Mapping[int, np.ndarray] | None = None,
    show_scan_id: bool = False,
    dpi: int = 100,
) -> np.ndarray:
    """Render the attention figure of one scan.

    The upper panel plots the slice attention against slice position — z in mm when every slice has one, else the
    slice index — with the Normal Guidance reference fitted to it (:func:`fit_normal_reference`, scaled to the
    attention's total mass so both share one axis), a dotted line at its mean, and the top-k slices marked with
    their rank. Thumbnails, when given, fill a lower row, best slice first.

    Args:
        result: the scan's result.
        top_k: number of slices to mark (``min(top_k, N)``).
        thumbnails: optional ``{slice index: [H, W] array}`` already windowed to [0, 1] by the caller (e.g. in the
            bundle's window); it must hold every top-k index, other entries are ignored.
        show_scan_id: put ``scan_id`` in the title; only when the caller knows it is not a patient identifier.
        dpi: resolution; the figure is 10 in wide (1000 px at the default 100 dpi).

    Returns:
        ``[H, W, 3]`` uint8 RGB image.
    """
    if not isinstance(result, ScanResult):
        raise TypeError(f"result must be a ScanResult, got {type(result).__name__}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 20 <= dpi <= 600:
        raise ValueError(f"dpi must be an int in [20, 600], got {dpi!r}")
    top = result.top_k(top_k)
    thumbs = _check_thumbnails(thumbnails, [s.index for s in top], result.scan_id)

    scores = result.scores
    index = np.arange(result.num_slices, dtype=np.float64)
    if result.has_positions:
        x = np.array([s.z_mm for s in result.slices], dtype=np.float64)
        x_label = "slice position z (mm), inferior → superior"
    else:
        x = index
        x_label = "slice index, inferior → superior"
    mass = float(scores.sum())

    fig = Figure(figsize=(10.0, 6.8 if thumbs else 4.2), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if thumbs else 1, max(len(thumbs), 1), height_ratios=[1.6, 1.0] if thumbs else None)
    ax = fig.add_subplot(grid[0, :])
    ax.plot(x, scores, "-o", color="#1f77b4", ms=3, lw=1.2, label="attention (head-averaged)")
    if mass > 0:
        mu, sigma, reference = fit_normal_reference(scores)
        mu_x = float(np.interp(mu, index, x))
        where = f"z = {mu_x:.1f} mm" if result.has_positions else f"slice {mu:.1f}"
        ax.plot(
            x,
            reference * mass,
            "--",
            color="#ff7f0e",
            lw=1.5,
            label=f"fitted normal (NG reference): mean {where}, sd {sigma:.1f} slices",
        )
        ax.axvline(mu_x, color="#ff7f0e", ls=":", lw=1.0)
    tx = [x[s.index] for s in top]
    ty = [s.score for s in top]
    ax.scatter(tx, ty, s=60, facecolors="none", edgecolors="#d62728", linewidths=1.5, zorder=3, label=f"top {len(top)}")
    for rank, s in enumerate(top, start=1):
        ax.annotate(
            str(rank), (x[s.index], s.score), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
        )
    ax.set_xlabel(x_label)
    ax.set_ylabel("attention")
    ax.set_ylim(bottom=0.0, top=max(float(scores.max()), 1e-12) * 1.25)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    verdict = "finding" if result.finding else "no finding"
    title = (
        f"NG attention MIL: P(finding) = {result.scan_probability:.2f} ({verdict} at threshold {result.threshold:.2f})"
    )
    if show_scan_id:
        title = f"scan {result.scan_id} | {title}"
    ax.set_title(title, fontsize=10)

    for col, s in enumerate(top if thumbs else ()):
        rank = col + 1
        tax = fig.add_subplot(grid[1, col])
        tax.imshow(thumbs[s.index], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        where = f"slice {s.index}, z {s.z_mm:.1f} mm" if s.z_mm is not None else f"slice {s.index}"
        tax.set_title(f"#{rank}: {where}\na = {s.score:.3f}", fontsize=8)
        tax.set_xticks([])
        tax.set_yticks([])
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """Losslessly encode an ``[H, W, 3]`` uint8 RGB array as PNG bytes, with no metadata chunks."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an [H, W, 3] uint8 array, got shape {rgb.shape} dtype {rgb.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_attention_png(
    result: ScanResult,
    out_dir: str | os.PathLike[str],
    top_k: int = 5,
    thumbnails: Mapping[int, np.ndarray] | None = None,
    show_scan_id: bool = False,
    dpi: int = 100,
) -> tuple[Path, np.ndarray]:
    """Render the figure (see :func:`render_attention_figure`) and write ``<out_dir>/<scan_id>.png`` atomically.

    Returns:
        ``(path, rgb)``: the PNG written and the ``[H, W, 3]`` uint8 array it holds (for the Secondary Capture).
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    rgb = render_attention_figure(result, top_k=top_k, thumbnails=thumbnails, show_scan_id=show_scan_id, dpi=dpi)
    path = write_atomic(folder / f"{check_scan_id(result.scan_id)}.png", encode_png(rgb))
    return path, rgb
