"""Header-only reading, series grouping, ordering along the slice normal and geometry checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import ct_slice, save_slice
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from monai_ng.io.dicom_header import read_slice_header, slice_normal
from monai_ng.io.header_scan import group_by_series, scan_headers
from monai_ng.io.series_geometry import analyze_series_geometry


def write_slice(
    path: Path,
    *,
    sop: str,
    series: str = "1.2.826.0.1.3680043.8.498.1",
    z: float = 0.0,
    ipp: tuple[float, float, float] | None = None,
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.5),
    pixels: np.ndarray | None = None,
    instance: int = 1,
    **extra: object,
) -> Path:
    """Write one small CT slice (8x8 int16 unless ``pixels`` given); ``extra`` sets/overrides tags."""
    px = np.zeros((8, 8), np.int16) if pixels is None else pixels
    ds = ct_slice(
        px,
        sop=sop,
        series=series,
        ipp=ipp if ipp is not None else (0.0, 0.0, z),
        study="1.2.826.0.1.3680043.8.498.2",
        patient_id="anon-1",
        instance=instance,
        iop=iop,
        spacing=spacing,
        intercept=-1024,
        **extra,
    )
    return save_slice(ds, path)


def write_series(
    folder: Path, zs: list[float], series: str = "1.2.3.4", shuffle: bool = True, **kw: object
) -> list[Path]:
    """Slices at the given z, file names and InstanceNumbers deliberately unrelated to position."""
    order = np.random.default_rng(0).permutation(len(zs)) if shuffle else np.arange(len(zs))
    paths = []
    for rank, k in enumerate(order):
        paths.append(
            write_slice(
                folder / f"f{rank:03d}.dcm", sop=f"{series}.{k}", series=series, z=zs[k], instance=100 - rank, **kw
            )
        )
    return paths


def test_read_slice_header_fields(tmp_path: Path) -> None:
    p = write_slice(
        tmp_path / "a.dcm",
        sop="1.2.3.9",
        ipp=(-10.5, 20.25, 33.0),
        spacing=(0.7, 0.6),
        WindowCenter=[40, 80],
        WindowWidth=[80, 200],
        RescaleSlope=2,
        RescaleIntercept=-1000,
        GantryDetectorTilt=3.5,
    )
    h = read_slice_header(p)
    assert h.path == str(p)
    assert h.sop_instance_uid == "1.2.3.9"
    assert h.image_position == (-10.5, 20.25, 33.0)
    assert h.image_orientation == (1, 0, 0, 0, 1, 0)
    assert h.pixel_spacing == (0.7, 0.6)
    assert (h.rows, h.columns) == (8, 8)
    assert (h.rescale_slope, h.rescale_intercept) == (2.0, -1000.0)
    assert (h.window_center, h.window_width) == (40.0, 80.0)  # first of the multi-valued tags
    assert h.transfer_syntax == ExplicitVRLittleEndian
    assert h.patient_id == "anon-1"
    assert h.gantry_tilt == 3.5
    assert h.pixel_representation == 1 and h.bits_stored == 16
    assert h.sop_class_uid == CTImageStorage  # carried to the per-slice results (sop_class_uid in the JSON)


def test_header_read_skips_pixel_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_slice(tmp_path / "a.dcm", sop="1.2.3")
    seen = {}
    real = pydicom.dcmread

    def spy(*args: object, **kwargs: object) -> Dataset:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    # plain uncompressed little-endian files: the one-pass reader reads only the first bytes, not the pixels
    from monai_ng.io import _native_dicom

    opened: list[int] = []

    class Counting:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def read(self, n: int = -1) -> bytes:
            data = self.fh.read(n)
            opened.append(len(data))
            return data

        def fileno(self) -> int:
            return self.fh.fileno()

        def seek(self, offset: int) -> int:
            return self.fh.seek(offset)

    monkeypatch.setattr(_native_dicom, "open", lambda path, mode: Counting(open(path, mode)), raising=False)
    big = write_slice(tmp_path / "big.dcm", sop="1.2.4", pixels=np.ones((256, 256), np.int16))
    header = read_slice_header(big)
    assert header.rows == 256 and not seen  # pydicom not called
    assert sum(opened) <= 16384 < big.stat().st_size
    # files it hands over go to pydicom, which skips PixelData unread (specific tags) but sees elements after it
    monkeypatch.setattr(_native_dicom, "read_native_header", lambda path: None)
    assert read_slice_header(big) == header
    read_slice_header(p)
    assert "ImagePositionPatient" in seen["specific_tags"] and "PixelData" not in seen["specific_tags"]


@pytest.mark.parametrize(
    "iop, normal",
    [
        ((1, 0, 0, 0, 1, 0), (0, 0, 1)),  # axial, head first supine
        ((-1, 0, 0, 0, 1, 0), (0, 0, -1)),  # axial with normal pointing inferior
        ((0, 1, 0, 0, 0, -1), (-1, 0, 0)),  # sagittal: (1,0,0)x... by hand: (1*-1 - 0*0, 0*0 - 0*-1, 0) = (-1, 0, 0)
        ((1, 0, 0, 0, 0, -1), (0, 1, 0)),  # coronal: (0*-1 - 0*0, 0*0 - 1*-1, 0) = (0, 1, 0)
    ],
)
def test_slice_normal_by_hand(iop: tuple, normal: tuple) -> None:
    np.testing.assert_allclose(slice_normal(iop), normal, atol=1e-12)


def test_slice_normal_rejects_degenerate() -> None:
    with pytest.raises(ValueError, match="orthonormal"):
        slice_normal((1, 0, 0, 1, 0, 0), "x.dcm")


def test_order_by_position_not_instance_number(tmp_path: Path) -> None:
    zs = [12.0, -3.0, 0.0, 6.0, 9.0, 3.0]
    paths = write_series(tmp_path, zs)
    headers = [read_slice_header(p) for p in paths]
    g = analyze_series_geometry(headers)
    ordered_z = [headers[i].image_position[2] for i in g.order]
    assert ordered_z == sorted(zs)
    assert g.positions == sorted(zs)
    assert g.slice_spacing == 3.0 and g.step == (0.0, 0.0, 3.0)
    assert g.issues == [] and g.gaps == [] and not g.non_axial and g.tilt_degrees == 0.0
    # InstanceNumbers were written in a different order: ordering by them would differ
    by_instance = [h.image_position[2] for h in sorted(headers, key=lambda h: h.instance_number)]
    assert by_instance != sorted(zs)


def test_normal_pointing_inferior_still_orders_inferior_to_superior(tmp_path: Path) -> None:
    zs = [0.0, 2.0, 4.0, 6.0]
    headers = [read_slice_header(p) for p in write_series(tmp_path, zs, iop=(-1, 0, 0, 0, 1, 0))]
    g = analyze_series_geometry(headers)
    assert [headers[i].image_position[2] for i in g.order] == zs
    assert g.normal == (0.0, 0.0, -1.0)
    assert g.positions == [-z for z in zs]  # IPP . n
    assert g.step == (0.0, 0.0, 2.0)


def test_gap_detected(tmp_path: Path) -> None:
    headers = [read_slice_header(p) for p in write_series(tmp_path, [0, 2, 4, 8, 10])]
    g = analyze_series_geometry(headers)
    assert g.gaps == [(2, 4.0)]
    assert g.slice_spacing == 2.0
    assert g.step == (0.0, 0.0, 2.0)  # median spacing, not the gap-stretched mean
    assert any("gap of 4.000 mm" in s for s in g.issues)


def test_inconsistent_spacing_detected(tmp_path: Path) -> None:
    headers = [read_slice_header(p) for p in write_series(tmp_path, [0, 2, 4, 6.5, 8.5])]
    g = analyze_series_geometry(headers)
    assert g.gaps == [] and g.inconsistent_spacing
    assert any("inconsistent slice spacing" in s for s in g.issues)


def test_duplicates(tmp_path: Path) -> None:
    a = write_slice(tmp_path / "a.dcm", sop="1.1", series="9", z=0)
    b = write_slice(tmp_path / "b.dcm", sop="1.2", series="9", z=1)
    a_copy = write_slice(tmp_path / "a_copy.dcm", sop="1.1", series="9", z=0)
    other = write_slice(tmp_path / "c.dcm", sop="1.3", series="9", z=1)
    exact = analyze_series_geometry([read_slice_header(p) for p in (a, b, a_copy)])
    assert exact.order == [0, 1] and exact.dropped == [2] and exact.issues == [] and "a_copy.dcm" in exact.notes[0]
    dup = analyze_series_geometry([read_slice_header(p) for p in (a, b, other)])
    assert dup.duplicate_positions == [[1, 2]] and dup.order == [0, 1] and dup.dropped == [2]
    assert "duplicate position" in dup.issues[0] and "c.dcm" in dup.issues[0]
    conflict = write_slice(tmp_path / "d.dcm", sop="1.1", series="9", z=5)
    with pytest.raises(ValueError, match="conflicting duplicate"):
        analyze_series_geometry([read_slice_header(p) for p in (a, b, conflict)])


def test_gantry_tilt_from_positions(tmp_path: Path) -> None:
    # IPP steps (0, 1, 5) per slice with axial IOP: tilt = atan(1/5)
    paths = [write_slice(tmp_path / f"{k}.dcm", sop=f"1.{k}", ipp=(0.0, 1.0 * k, 5.0 * k)) for k in range(4)]
    g = analyze_series_geometry([read_slice_header(p) for p in paths])
    assert g.tilt_degrees == pytest.approx(np.degrees(np.arctan(0.2)), abs=1e-9)
    assert any("gantry tilt" in s for s in g.issues)


def test_non_axial(tmp_path: Path) -> None:
    paths = [
        write_slice(tmp_path / f"{k}.dcm", sop=f"1.{k}", ipp=(2.0 * k, 0, 0), iop=(0, 1, 0, 0, 0, -1)) for k in range(3)
    ]
    g = analyze_series_geometry([read_slice_header(p) for p in paths])
    assert g.non_axial and any("non-axial" in s for s in g.issues)
    assert g.positions == [-4.0, -2.0, 0.0]  # ascending along n = (-1, 0, 0): IPP x = 4, 2, 0


def test_scan_headers_parallel_matches_serial_and_records_failures(tmp_path: Path) -> None:
    write_series(tmp_path / "s1", [0, 1, 2], series="1.1")
    write_series(tmp_path / "s2", [0, 1], series="1.2")
    (tmp_path / "junk.dcm").write_text("not dicom")
    serial = scan_headers(tmp_path, workers=1, progress=False)
    parallel = scan_headers(tmp_path, workers=2, progress=False, chunk_size=2)
    assert serial.headers == parallel.headers
    assert len(serial.headers) == 5
    assert serial.failures == parallel.failures
    assert len(serial.failures) == 1 and serial.failures[0][0].endswith("junk.dcm")
    assert "not a DICOM file" in serial.failures[0][1]
    assert serial.files_per_second > 0
    groups = group_by_series(serial.headers)
    assert {k: len(v) for k, v in groups.items()} == {"1.1": 3, "1.2": 2}


def test_scan_headers_bad_args(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        scan_headers(tmp_path / "missing", progress=False)
    with pytest.raises(TypeError, match="workers"):
        scan_headers([], workers=1.5, progress=False)  # type: ignore[arg-type]
