"""The attention figure: PNG equals the returned RGB array, no identifiers, clear errors on bad thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from monai_ng.reporting.attention_figure import encode_png, render_attention_figure, write_attention_png
from monai_ng.reporting.scan_result import ScanResult, SliceScore


def _thumbs(n=8):
    return {i: np.full((16, 16), i / n) for i in range(n)}


def test_png_holds_exactly_the_returned_rgb(tmp_path, scan_result):
    out = tmp_path / "out"
    out.mkdir()
    path, rgb = write_attention_png(scan_result, out, top_k=5, thumbnails=_thumbs())
    assert path == out / "scan001.png"
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[1:] == (1000, 3)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(decoded, rgb)
    assert sorted(p.name for p in out.iterdir()) == ["scan001.png"]


def test_thumbnails_add_a_row_and_are_drawn(scan_result):
    plain = render_attention_figure(scan_result, top_k=3)
    with_thumbs = render_attention_figure(scan_result, top_k=3, thumbnails=_thumbs())
    assert plain.shape == (420, 1000, 3)
    assert with_thumbs.shape == (680, 1000, 3)
    white = render_attention_figure(scan_result, top_k=3, thumbnails={i: np.ones((4, 4)) for i in range(8)})
    black = render_attention_figure(scan_result, top_k=3, thumbnails={i: np.zeros((4, 4)) for i in range(8)})
    lower = slice(500, 640)  # the thumbnail row
    assert white[lower].mean() > black[lower].mean() + 30


def test_rendering_is_deterministic_and_dpi_scales(scan_result):
    a = render_attention_figure(scan_result)
    np.testing.assert_array_equal(a, render_attention_figure(scan_result))
    assert render_attention_figure(scan_result, dpi=50).shape == (210, 500, 3)


def test_no_identifier_in_png_and_scan_id_only_on_request(tmp_path, make_series, make_result, identifier_markers):
    headers = make_series(tmp_path / "ct")
    # a scan id equal to an identifier marker: still absent from the picture unless show_scan_id=True
    result = make_result(headers, scan_id="PIDMARKER7731")
    default = render_attention_figure(result)
    shown = render_attention_figure(result, show_scan_id=True)
    assert not np.array_equal(default, shown)
    anonymous = make_result(headers, scan_id="other")
    np.testing.assert_array_equal(default, render_attention_figure(anonymous))  # title independent of scan_id
    raw = encode_png(default)
    for marker in identifier_markers:
        assert marker.encode() not in raw
    assert b"tEXt" not in raw and b"iTXt" not in raw and b"zTXt" not in raw  # no metadata chunks at all


def test_slice_index_axis_without_positions():
    r = ScanResult("s", 0.2, tuple(SliceScore(i, s) for i, s in enumerate([0.1, 0.6, 0.3])))
    rgb = render_attention_figure(r, top_k=1, thumbnails={1: np.eye(3)})
    assert rgb.shape == (680, 1000, 3)


def test_encode_png_round_trip_and_bad_arrays():
    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgb)))), rgb)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        encode_png(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        encode_png(rgb[..., 0])


@pytest.mark.parametrize(
    "thumbs, exc, message",
    [
        ({2: np.zeros((4, 4))}, ValueError, r"lack the top-k slice indices \[3, 4\]"),
        ({2: np.zeros(4), 3: np.zeros((4, 4)), 4: np.zeros((4, 4))}, ValueError, "must be a 2-D"),
        ({2: np.full((4, 4), 1.5), 3: np.zeros((4, 4)), 4: np.zeros((4, 4))}, ValueError, r"windowed to \[0, 1\]"),
        ({2: np.full((4, 4), np.nan), 3: np.zeros((4, 4)), 4: np.zeros((4, 4))}, ValueError, "finite"),
        ([np.zeros((4, 4))], TypeError, "thumbnails must map slice index"),
    ],
)
def test_bad_thumbnails_are_refused(scan_result, thumbs, exc, message):
    with pytest.raises(exc, match=message):
        render_attention_figure(scan_result, top_k=3, thumbnails=thumbs)


def test_bad_arguments(scan_result, tmp_path):
    with pytest.raises(TypeError, match="result must be a ScanResult"):
        render_attention_figure({"scores": [1.0]})
    with pytest.raises(ValueError, match="dpi must be an int"):
        render_attention_figure(scan_result, dpi=5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_attention_png(scan_result, tmp_path / "missing")
