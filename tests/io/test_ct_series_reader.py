"""CTSeriesReader / LoadCTSeries: HU, ordering, affine, voxel grid, RSNA quirks, decoding, native reader and NIfTI."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from dicom_factory import ct_slice, save_slice
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from monai_ng.io import CTSeriesReader, decode_slice_hu, fix_rsna_ich_wrap, sign_extend
from monai_ng.io.dicom_header import header_from_dataset, read_slice_header
from monai_ng.transforms import LoadCTSeries


def write_slice(path: Path, pixels: np.ndarray, *, sop: str, ipp, series: str = "1.2.3.4", **tags: object) -> Path:
    """One CT slice ``pixels [rows, cols]`` with the given tags (defaults: axial, 0.5 mm, slope 1, intercept 0)."""
    return save_slice(ct_slice(pixels, sop=sop, series=series, ipp=ipp, **tags), path)


def test_hu_layout_and_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    zs = [10.0, -5.0, 0.0, 5.0]  # written out of order, InstanceNumber decreasing with z
    stored = {z: rng.integers(0, 3000, size=(6, 5)).astype(np.uint16) for z in zs}
    for i, z in enumerate(zs):
        write_slice(
            tmp_path / f"x{i}.dcm",
            stored[z],
            sop=f"1.9.{i}",
            ipp=(0, 0, z),
            InstanceNumber=int(100 - z),
            RescaleSlope=2,
            RescaleIntercept=-1000,
        )
    out = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    assert isinstance(out, MetaTensor)
    assert out.shape == (1, 5, 6, 4)  # [C, X = columns, Y = rows, Z]
    assert out.dtype == torch.float32
    for k, z in enumerate(sorted(zs)):
        expected = stored[z].astype(np.float64) * 2 - 1000  # HU by hand
        np.testing.assert_array_equal(out[0, :, :, k].numpy(), expected.T)
    assert out.meta["slice_positions"] == sorted(zs)
    assert out.meta["slice_sop_uids"] == [f"1.9.{zs.index(z)}" for z in sorted(zs)]
    assert [Path(f).name for f in out.meta["slice_files"]] == [f"x{zs.index(z)}.dcm" for z in sorted(zs)]
    assert out.meta["geometry_issues"] == []


def test_affine_by_hand_oblique(tmp_path: Path) -> None:
    # rows along (cos a, sin a, 0), columns along (-sin a, cos a, 0): rotation about z; spacing (0.8, 0.6)
    a = np.deg2rad(20)
    row, col = np.array([np.cos(a), np.sin(a), 0]), np.array([-np.sin(a), np.cos(a), 0])
    origin = np.array([-12.0, 7.0, 30.0])
    for k in range(3):
        write_slice(
            tmp_path / f"{k}.dcm",
            np.full((4, 3), k, np.int16),
            sop=f"1.{k}",
            ipp=origin + k * np.array([0, 0, 2.5]),
            ImageOrientationPatient=[*row, *col],
            PixelSpacing=[0.8, 0.6],
        )
    out = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    affine = out.affine.numpy()
    for i, j, k in [(0, 0, 0), (2, 3, 1), (1, 2, 2)]:
        lps = origin + i * 0.6 * row + j * 0.8 * col + k * np.array([0, 0, 2.5])  # DICOM PS3.3 C.7.6.2.1.1
        ras = lps * np.array([-1, -1, 1])
        np.testing.assert_allclose(affine @ np.array([i, j, k, 1.0]), [*ras, 1.0], atol=1e-9)


def test_matches_monai_itk_reader(tmp_path: Path) -> None:
    pytest.importorskip("itk", reason="itk (dev extra) is needed for MONAI's ITKReader")
    from monai.transforms import LoadImage

    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series

    vol = make_phantom_volume("head", 5, size=16, seed=2, spacing=(3.0, 0.9, 0.7))
    vol.origin = (-20.0, 11.0, 40.0)
    write_dicom_series(vol, tmp_path, patient_id="p", instance_numbers="shuffled", seed=1)
    ours = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    ref = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(str(tmp_path))
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(ours[0].numpy(), vol.hu.transpose(2, 1, 0))


def test_sign_extend_values() -> None:
    raw = np.array([4000, 2047, 2048, 0, 4095], np.uint16)
    np.testing.assert_array_equal(sign_extend(raw, 12), [-96, 2047, -2048, 0, -1])
    already = np.array([-96, 2047, -2048, -1], np.int16)
    np.testing.assert_array_equal(sign_extend(already, 12), already)  # idempotent on correct data
    with pytest.raises(ValueError, match="bits_stored"):
        sign_extend(raw, 0)


def test_signed_12_bits_in_16_without_sign_extension(tmp_path: Path) -> None:
    hu = np.array([[-96, 2047], [-2048, 5]], np.int64)
    raw = (hu & 0x0FFF).astype(np.uint16)  # high 4 bits left at zero (RSNA abdominal quirk)
    p = write_slice(tmp_path / "a.dcm", raw, sop="1.1", ipp=(0, 0, 0), BitsStored=12, HighBit=11, PixelRepresentation=1)
    out = LoadCTSeries()(p)
    np.testing.assert_array_equal(out[0, :, :, 0].numpy(), hu.T)


def test_rsna_ich_wrapped_intercept(tmp_path: Path) -> None:
    hu = np.array([[-1000, -50, 0], [40, 1500, 3095]], np.int64)
    stored = np.mod(hu, 4096).astype(np.uint16)  # 12-bit storage of HU modulo 4096, intercept 0
    p = write_slice(tmp_path / "a.dcm", stored, sop="1.1", ipp=(0, 0, 0), BitsStored=12, HighBit=11)
    out = LoadCTSeries()(p)
    np.testing.assert_array_equal(out[0, :, :, 0].numpy(), hu.T)
    assert out.meta["ich_wrap_fixed"] == [True]
    raw = LoadCTSeries(fix_ich_wrap=False)(p)
    np.testing.assert_array_equal(raw[0, :, :, 0].numpy(), stored.T.astype(np.float32))
    # a normal 12-bit slice (intercept -1024) is left alone
    q = write_slice(
        tmp_path / "b.dcm", stored, sop="1.2", ipp=(0, 0, 0), BitsStored=12, HighBit=11, RescaleIntercept=-1024
    )
    h = read_slice_header(q)
    assert fix_rsna_ich_wrap(stored, h)[2] is False
    np.testing.assert_array_equal(LoadCTSeries()(q)[0, :, :, 0].numpy(), stored.T.astype(np.float64) - 1024)


def test_monochrome1(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [4000, 4095]], np.uint16)
    p = write_slice(
        tmp_path / "a.dcm",
        stored,
        sop="1.1",
        ipp=(0, 0, 0),
        PhotometricInterpretation="MONOCHROME1",
        BitsStored=12,
        HighBit=11,
        RescaleIntercept=-1024,
    )
    kept = LoadCTSeries()(p)
    np.testing.assert_array_equal(kept[0, :, :, 0].numpy(), stored.T.astype(np.float64) - 1024)
    assert kept.meta["photometric"] == "MONOCHROME1"
    inverted = LoadCTSeries(monochrome1="invert")(p)
    np.testing.assert_array_equal(inverted[0, :, :, 0].numpy(), (4095 - stored.T.astype(np.float64)) - 1024)


def test_multi_valued_window_first(tmp_path: Path) -> None:
    p = write_slice(
        tmp_path / "a.dcm",
        np.eye(2, dtype=np.int16),
        sop="1.1",
        ipp=(0, 0, 0),
        WindowCenter=[36, 80],
        WindowWidth=[90, 200],
    )
    out = LoadCTSeries()(p)
    assert (out.meta["window_center"], out.meta["window_width"]) == (36.0, 90.0)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # a CT slice, JPEG 2000 lossless
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ],
)
def test_lossless_compressed_equals_uncompressed(name: str, reference: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LoadCTSeries()(get_testdata_file(reference))
        out = LoadCTSeries()(get_testdata_file(name))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_allclose(out.affine.numpy(), ref.affine.numpy())
    assert float(out.max()) > float(out.min())


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000_lossless", "jpeg_lossless", "jpegls_lossless"])
def test_phantom_compressed_series(tmp_path: Path, syntax: str) -> None:
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series

    vol = make_phantom_volume("abdomen", 3, size=16, seed=5)
    write_dicom_series(vol, tmp_path, patient_id="p", transfer_syntax=syntax, seed=0)
    out = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    np.testing.assert_array_equal(out[0].numpy(), vol.hu.transpose(2, 1, 0))


def test_jpeg_lossless_8bit_file_decodes() -> None:
    # an ultrasound frame without patient geometry: decode the pixels (the loader itself needs IPP/IOP)
    path = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    ds = pydicom.dcmread(path)
    hu, info = decode_slice_hu(ds, header_from_dataset(ds, path))
    assert hu.shape == (ds.Rows, ds.Columns) and hu.dtype == np.float32
    assert float(hu.max()) > float(hu.min()) and not info["ich_wrap_fixed"]
    with pytest.raises(ValueError, match="missing ImagePositionPatient"):
        LoadCTSeries()(path)


def test_mixed_folder_needs_series_uid(tmp_path: Path) -> None:
    for s in ("1.1", "1.2"):
        for k in range(2):
            write_slice(
                tmp_path / f"{s}_{k}.dcm",
                np.full((2, 2), int(s[-1]), np.int16) + np.eye(2, dtype=np.int16),
                sop=f"{s}.{k}",
                ipp=(0, 0, k),
                series=s,
            )
    with pytest.raises(ValueError, match=r"mixed folder with 2 series.*series_uid="):
        LoadCTSeries()(tmp_path)
    out = LoadCTSeries(series_uid="1.2")(tmp_path)
    assert out.shape[-1] == 2 and float(out.min()) == 2.0 and out.meta["series_uid"] == "1.2"


def test_geometry_policy(tmp_path: Path) -> None:
    for k, z in enumerate([0, 1, 2, 4]):  # one missing slice
        write_slice(tmp_path / f"{k}.dcm", np.eye(2, dtype=np.int16), sop=f"1.{k}", ipp=(0, 0, z))
    with pytest.raises(ValueError, match="gap of 2.000 mm"):
        LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    with pytest.warns(UserWarning, match="missing slice"):
        out = LoadCTSeries(on_geometry_issue="warn")(tmp_path)
    assert out.meta["slice_positions"] == [0, 1, 2, 4] and out.affine[2, 2] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LoadCTSeries(on_geometry_issue="ignore")(tmp_path)
    with pytest.raises(ValueError, match="on_geometry_issue"):
        LoadCTSeries(on_geometry_issue="skip")


def test_nifti_same_world_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 5, 3)).astype(np.float32)
    # LPS-like storage: x and y axes flipped relative to RAS, z descending (superior -> inferior)
    affine = np.array([[-0.7, 0, 0, 10], [0, -0.9, 0, 20], [0, 0, -2.0, 50], [0, 0, 0, 1]])
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    out = LoadCTSeries()(path)
    assert out.shape == (1, 4, 5, 3)
    out_aff = out.affine.numpy()
    assert nib.aff2axcodes(out_aff) == ("L", "P", "S")  # the reader's grid; Z runs inferior -> superior
    inv = np.linalg.inv(affine)
    for idx in np.ndindex(4, 5, 3):
        world = out_aff @ np.array([*idx, 1.0])
        src = np.rint(inv @ world).astype(int)[:3]
        assert out[0][idx].item() == data[tuple(src)]
    pos = out.meta["slice_positions"]
    assert len(pos) == 3 and np.all(np.diff(pos) == 2.0)
    assert out.meta["slice_files"] == [str(path)] * 3


def _reference_hu(stored: np.ndarray, h, fix_ich_wrap: bool, monochrome1: str) -> np.ndarray:
    """HU from pydicom's ``pixel_array`` by the written rules, in int64 / float64 (independent of the loader)."""
    x = stored.astype(np.int64)
    b = h.bits_stored
    if h.pixel_representation == 1 and b < h.bits_allocated:
        x = ((x & ((1 << b) - 1)) ^ (1 << (b - 1))) - (1 << (b - 1))
    intercept = h.rescale_intercept
    if fix_ich_wrap and b == 12 and h.pixel_representation == 0 and int(intercept) > -100:
        x = x + 1000
        x = np.where(x >= 4096, x - 4096, x)
        intercept = -1000.0
    if h.photometric == "MONOCHROME1" and monochrome1 == "invert":
        x = -x - 1 if h.pixel_representation == 1 else (1 << b) - 1 - x
    return (x.astype(np.float64) * h.rescale_slope + intercept).astype(np.float32)


def _fast_path_cases(tmp_path: Path) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(7)
    full16 = rng.integers(0, 1 << 16, size=(9, 7), dtype=np.uint16)  # every bit pattern, high bits included
    full16[0, :4] = [0, 0xFFFF, 0x0FFF, 0xF000]
    int16 = rng.integers(-(1 << 15), 1 << 15, size=(9, 7)).astype(np.int16)
    int16[0, :2] = [-(1 << 15), (1 << 15) - 1]
    low12 = (full16 & 0x0FFF).astype(np.uint16)
    cases = {
        "signed16": (int16, {"RescaleIntercept": -1024}),
        "unsigned16": (full16, {"RescaleIntercept": -1024}),
        "unsigned12_garbage_high_bits": (full16, {"BitsStored": 12, "HighBit": 11, "RescaleIntercept": -1024}),
        "ich_wrap": (low12, {"BitsStored": 12, "HighBit": 11, "RescaleIntercept": 0}),
        "ich_wrap_garbage_high_bits": (full16, {"BitsStored": 12, "HighBit": 11, "RescaleIntercept": 24}),
        "signed12_zero_high_bits": (
            low12,
            {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1, "RescaleIntercept": -10},
        ),
        "signed12_garbage_high_bits": (
            full16,
            {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1, "RescaleIntercept": 0},
        ),
        "monochrome1_unsigned12": (
            full16,
            {"BitsStored": 12, "HighBit": 11, "PhotometricInterpretation": "MONOCHROME1", "RescaleIntercept": -1024},
        ),
        "monochrome1_signed16": (int16, {"PhotometricInterpretation": "MONOCHROME1", "RescaleIntercept": 0}),
        "fractional_slope_intercept": (int16, {"RescaleSlope": 0.37, "RescaleIntercept": -1024.25}),
        "intercept_beyond_float32_integers": (full16, {"RescaleIntercept": float((1 << 24) + 1)}),
        "eight_bit_odd_length": (
            rng.integers(0, 256, size=(3, 5), dtype=np.uint8),
            {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7, "RescaleIntercept": -100},
        ),
        "signed32": (
            rng.integers(-(1 << 31), 1 << 31, size=(4, 6)).astype(np.int32),
            {"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31, "RescaleIntercept": -1001},
        ),
    }
    out = []
    for k, (name, (pixels, tags)) in enumerate(cases.items()):
        out.append((name, write_slice(tmp_path / f"{name}.dcm", pixels, sop=f"1.5.{k}", ipp=(0, 0, k), **tags)))
    # the same signed slice in Implicit VR Little Endian
    ds = pydicom.dcmread(out[0][1])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    implicit = tmp_path / "implicit.dcm"
    ds.save_as(implicit, enforce_file_format=True)
    out.append(("implicit_vr", implicit))
    return out


def test_fast_path_equals_pydicom_bit_exact(tmp_path: Path) -> None:
    from monai_ng.io.pixel_decoding import _native_stored_pixels, stored_pixels

    for name, path in _fast_path_cases(tmp_path):
        ds, ref_ds = pydicom.dcmread(path), pydicom.dcmread(path)
        h = header_from_dataset(ds, str(path))
        fast = _native_stored_pixels(ds, h)
        assert fast is not None, name  # the fast path is taken
        ref = ref_ds.pixel_array
        assert fast.dtype == ref.dtype and fast.shape == ref.shape, name
        np.testing.assert_array_equal(fast, ref, err_msg=name)
        np.testing.assert_array_equal(stored_pixels(ds, h), ref, err_msg=name)
        for fix in (True, False):
            for mono in ("hu", "invert"):
                hu_fast, info_fast = decode_slice_hu(ds, h, fix, mono)
                hu_ref, info_ref = decode_slice_hu(ref_ds, h, fix, mono, fast=False)
                assert hu_fast.dtype == hu_ref.dtype == np.float32
                assert hu_fast.tobytes() == hu_ref.tobytes(), (name, fix, mono)  # bit-exact
                assert info_fast == info_ref
                assert hu_fast.tobytes() == _reference_hu(ref, h, fix, mono).tobytes(), (name, fix, mono)
    # the quirks really are exercised
    ich = pydicom.dcmread(tmp_path / "ich_wrap.dcm")
    hu, info = decode_slice_hu(ich, header_from_dataset(ich, "ich_wrap.dcm"))
    assert info["ich_wrap_fixed"] and float(hu.min()) >= -1000 and float(hu.max()) <= 3095


def test_fast_path_writes_into_out_and_checks_it(tmp_path: Path) -> None:
    stored = np.array([[-1000, 0], [40, 3000]], np.int16)
    p = write_slice(tmp_path / "a.dcm", stored, sop="1.1", ipp=(0, 0, 0), RescaleIntercept=-24)
    ds = pydicom.dcmread(p)
    h = header_from_dataset(ds, str(p))
    buffer = np.full((3, 2, 2), np.nan, np.float32)
    hu, _ = decode_slice_hu(ds, h, out=buffer[1])
    assert np.shares_memory(hu, buffer)
    np.testing.assert_array_equal(buffer[1], stored - 24.0)
    assert np.isnan(buffer[0]).all() and np.isnan(buffer[2]).all()
    with pytest.raises(ValueError, match=r"a\.dcm: out must be float32"):
        decode_slice_hu(ds, h, out=np.empty((2, 2), np.float64))


def test_fast_path_declines_unusual_data(tmp_path: Path) -> None:
    from monai_ng.io.pixel_decoding import _native_stored_pixels, stored_pixels

    for name in ("MR_small_RLE.dcm", "MR_small_bigendian.dcm", "693_J2KR.dcm"):
        path = get_testdata_file(name)
        ds = pydicom.dcmread(path)
        h = header_from_dataset(ds, path)
        assert _native_stored_pixels(ds, h) is None, name
        np.testing.assert_array_equal(stored_pixels(ds, h), pydicom.dcmread(path).pixel_array)
    # PixelData one slice short: deferred to pydicom, which names the problem
    p = write_slice(tmp_path / "short.dcm", np.zeros((4, 4), np.int16), sop="1.1", ipp=(0, 0, 0))
    ds = pydicom.dcmread(p)
    ds.PixelData = ds.PixelData[:-8]
    h = header_from_dataset(ds, str(p))
    assert _native_stored_pixels(ds, h) is None
    with pytest.raises(ValueError, match="short.dcm: cannot decode pixel data"):
        decode_slice_hu(ds, h)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64])
def test_sign_extend_matches_formula(dtype) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    px = rng.integers(max(info.min, -(1 << 40)), min(info.max, 1 << 40), size=200, endpoint=True).astype(dtype)
    for bits in range(1, 33):
        x = px.astype(np.int64) & ((1 << bits) - 1)
        expected = np.where(x >= (1 << (bits - 1)), x - (1 << bits), x)
        got = sign_extend(px, bits)
        assert got.dtype == (np.int32 if bits <= 31 else np.int64), (dtype, bits)
        np.testing.assert_array_equal(got, expected, err_msg=f"{dtype} {bits}")


# ---------------------------------------------------------------- one-pass reader (read_native_slice)
def _assert_native_equals_pydicom(path: Path | str, expect_native: bool = True) -> None:
    """The one-pass reader's header and HU equal pydicom's, bit for bit (or it declines)."""
    from monai_ng.io._native_dicom import read_native_header, read_native_slice
    from monai_ng.io.dicom_header import HEADER_TAGS, lenient_value_reading

    path = str(path)
    native = read_native_slice(path)
    assert (native is not None) == expect_native, path
    assert (read_native_header(path) is not None) == expect_native, path
    if native is None:
        return
    with lenient_value_reading():
        ds = pydicom.dcmread(path)
        header = header_from_dataset(ds, path)
    assert native.header == header, path
    # header-only reading (scan_headers): from a prefix, from a short prefix that needs the rest, and via pydicom
    with lenient_value_reading():
        partial = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        assert header_from_dataset(partial, path) == header
    assert read_native_header(path) == read_native_header(path, prefix_bytes=150) == read_slice_header(path) == header
    for fix in (True, False):
        for mono in ("hu", "invert"):
            hu_native, info_native = decode_slice_hu(native, native.header, fix, mono)
            hu_ref, info_ref = decode_slice_hu(ds, header, fix, mono, fast=False)
            assert hu_native.tobytes() == hu_ref.tobytes() and info_native == info_ref, (path, fix, mono)


def test_native_reader_equals_pydicom_on_quirk_files(tmp_path: Path) -> None:
    for _, path in _fast_path_cases(tmp_path):
        _assert_native_equals_pydicom(path)


@pytest.mark.parametrize("pixel_mode", ["signed16", "unsigned16", "unsigned12", "unsigned12_wrapped", "signed12_in16"])
@pytest.mark.parametrize("syntax", ["explicit_le", "implicit_le"])
def test_native_reader_equals_pydicom_on_phantom_series(tmp_path: Path, pixel_mode: str, syntax: str) -> None:
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series

    vol = make_phantom_volume("head", 3, size=16, seed=1)
    monochrome1 = pixel_mode == "unsigned12"
    write_dicom_series(
        vol, tmp_path, patient_id="p1", transfer_syntax=syntax, pixel_mode=pixel_mode, monochrome1=monochrome1, seed=2
    )
    for path in sorted(tmp_path.iterdir()):
        _assert_native_equals_pydicom(path)


def test_native_reader_equals_pydicom_on_rsna_ich_and_sample_files(tmp_path: Path) -> None:
    from monai_ng.data.phantom import write_rsna_ich

    write_rsna_ich(tmp_path, n_scans=3, seed=4, size=16, slices=(2, 3), quirk_rate=0.5)
    files = sorted((tmp_path / "stage_2_train").glob("*.dcm"))
    assert files
    multi_valued = 0
    for path in files:  # ID_<hex> UIDs, multi-valued windows in some files (first value used)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _assert_native_equals_pydicom(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        multi_valued += isinstance(ds.get("WindowCenter"), pydicom.multival.MultiValue)
    assert 0 < multi_valued < len(files)
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "693_UNCR.dcm"):
        _assert_native_equals_pydicom(get_testdata_file(name))
    for name in ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "rtdose.dcm", "liver.dcm", "SC_rgb.dcm"):
        _assert_native_equals_pydicom(get_testdata_file(name), expect_native=False)  # pydicom decides these


def test_native_reader_walks_sequences_and_defers_unusual_files(tmp_path: Path) -> None:
    from pydicom.sequence import Sequence

    from monai_ng.io._native_dicom import read_native_header, read_native_slice

    stored = np.arange(12, dtype=np.int16).reshape(3, 4) * 7 - 30

    def with_sequence(name: str, undefined: bool) -> Path:
        p = write_slice(tmp_path / name, stored, sop=f"1.7.{len(name)}{int(undefined)}", ipp=(0, 0, 1))
        ds = pydicom.dcmread(p)
        inner = Dataset()
        inner.ReferencedSOPInstanceUID = "1.2.3.4.5"
        nested = Dataset()
        nested.CodeValue = "X\\Y"  # a backslash inside a skipped sequence does not matter
        inner.ConceptNameCodeSequence = Sequence([nested])
        ds.ReferencedImageSequence = Sequence([inner, Dataset()])
        for elem in (ds["ReferencedImageSequence"], inner["ConceptNameCodeSequence"]):
            elem.is_undefined_length = undefined
        for item in (inner, nested):
            item.is_undefined_length_sequence_item = undefined
        ds.save_as(p, enforce_file_format=True)
        return p

    for undefined in (False, True):
        p = with_sequence(f"seq{int(undefined)}.dcm", undefined)
        _assert_native_equals_pydicom(p)
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        q = tmp_path / f"seq{int(undefined)}_implicit.dcm"
        ds.save_as(q, enforce_file_format=True)
        _assert_native_equals_pydicom(q)
    # unusual values are left to pydicom: multi-valued or non-ASCII text, empty or non-numeric numbers, wrong VR
    p = write_slice(tmp_path / "ok.dcm", stored, sop="1.8", ipp=(0, 0, 2), PatientID="ab  ", Modality="CT ")
    _assert_native_equals_pydicom(p)
    for k, tags in enumerate(
        [
            {"PatientID": "M\u00fcller", "SpecificCharacterSet": "ISO_IR 100"},
            {"PatientID": "a\\b"},
            {"WindowCenter": ""},
            {"InstanceNumber": "7.0"},
        ]
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = write_slice(tmp_path / f"odd{k}.dcm", stored, sop=f"1.9.{k}", ipp=(0, 0, 3), **tags)
            assert read_native_slice(q) is None, tags
            out = LoadCTSeries()(q)  # still loads, through pydicom
        np.testing.assert_array_equal(out[0, :, :, 0].numpy(), stored.T)
    # truncated files and non-DICOM files: None here, the loader's pydicom path names the problem
    data = p.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 5])
    (tmp_path / "text.dcm").write_bytes(b"not a dicom file")
    assert read_native_slice(tmp_path / "cut.dcm") is None and read_native_slice(tmp_path / "text.dcm") is None
    # a cut in the pixels still has a whole header (as pydicom's header-only read); a cut in the header has not
    assert read_native_header(tmp_path / "cut.dcm") == read_slice_header(p).__class__(
        **{**read_slice_header(p).to_dict(), "path": str(tmp_path / "cut.dcm")}
    )
    (tmp_path / "cut_header.dcm").write_bytes(data[:300])
    assert read_native_header(tmp_path / "cut_header.dcm") is None
    with pytest.raises(ValueError, match="cut_header.dcm"):
        read_slice_header(tmp_path / "cut_header.dcm")
    assert read_native_slice(tmp_path / "missing.dcm") is None
    with pytest.raises(ValueError, match="text.dcm: not a DICOM file"):
        LoadCTSeries()(tmp_path / "text.dcm")


def test_loader_same_volume_and_meta_with_and_without_native_reader(tmp_path: Path, monkeypatch) -> None:
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series
    from monai_ng.io import ct_series_reader

    vol = make_phantom_volume("chest", 4, size=16, seed=3)
    write_dicom_series(vol, tmp_path, patient_id="p2", pixel_mode="unsigned12_wrapped", rescale=(1.0, 0.0), seed=1)
    fast = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    monkeypatch.setattr(ct_series_reader, "read_native_slice", lambda path: None)
    slow = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    assert fast.numpy().tobytes() == slow.numpy().tobytes()
    assert torch.equal(fast.affine, slow.affine)
    for key in ("slice_sop_uids", "slice_files", "slice_positions", "geometry", "ich_wrap_fixed", "window_center"):
        assert fast.meta[key] == slow.meta[key], key
    assert all(fast.meta["ich_wrap_fixed"])


# ---------------------------------------------------------------- CTSeriesReader as a MONAI ImageReader; voxel grid
def _phantom(tmp_path: Path, **kw: object):
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series

    vol = make_phantom_volume("head", 4, size=16, seed=3, spacing=(2.5, 0.8, 0.6))
    vol.origin = (-7.0, 4.0, 30.0)
    write_dicom_series(vol, tmp_path / "dcm", patient_id="p", seed=1, **kw)
    return vol, tmp_path / "dcm"


def test_reader_is_a_monai_image_reader_in_load_image_and_compose(tmp_path: Path) -> None:
    from monai.data import ImageReader
    from monai.transforms import Compose, LoadImage, LoadImaged

    vol, folder = _phantom(tmp_path)
    reader = CTSeriesReader(on_geometry_issue="raise")
    assert isinstance(reader, ImageReader)
    ours = LoadCTSeries(on_geometry_issue="raise")(folder)
    img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(folder))
    assert isinstance(img, MetaTensor) and img.shape == ours.shape == (1, 16, 16, 4)
    np.testing.assert_array_equal(img.numpy(), ours.numpy())
    np.testing.assert_array_equal(img[0].numpy(), vol.hu.transpose(2, 1, 0))
    assert torch.equal(img.affine, ours.affine)
    for key in ("slice_sop_uids", "slice_files", "slice_positions", "geometry_issues", "series_uid"):
        assert img.meta[key] == ours.meta[key], key
    pipe = Compose([LoadImaged(keys="image", reader=CTSeriesReader(), ensure_channel_first=True, image_only=True)])
    d = pipe({"image": str(folder), "label": 1})
    np.testing.assert_array_equal(d["image"].numpy(), ours.numpy())
    files = sorted(str(p) for p in folder.iterdir())
    from_list = LoadImage(reader=CTSeriesReader(), image_only=True, ensure_channel_first=True)(files)
    np.testing.assert_array_equal(from_list.numpy(), ours.numpy())  # a file list is one series, not channels
    array, meta = reader.get_data(reader.read(str(folder)))  # the raw ImageReader contract
    assert array.shape == (16, 16, 4) and array.dtype == np.float32 and meta["original_channel_dim"] == "no_channel"
    assert meta["spatial_shape"].tolist() == [16, 16, 4] and meta["affine"].shape == (4, 4)


def test_reader_verify_suffix_and_bad_input(tmp_path: Path) -> None:
    _, folder = _phantom(tmp_path)
    reader = CTSeriesReader()
    one = sorted(folder.iterdir())[0]
    assert reader.verify_suffix(str(folder)) and reader.verify_suffix([str(folder)]) and reader.verify_suffix(one)
    assert reader.verify_suffix("ct.nii.gz") and reader.verify_suffix(("ct.nii",))
    assert not reader.verify_suffix("image.png") and not reader.verify_suffix(["a.nii", "b.nii"])
    assert not reader.verify_suffix([])
    with pytest.raises(ValueError, match="no such file or folder"):
        reader.read(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not NIfTI"):
        reader.read([str(one), str(tmp_path / "x.nii")])
    with pytest.raises(TypeError, match="expected a path"):
        reader.read(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="axcodes"):
        CTSeriesReader(axcodes="LPX")
    with pytest.raises(ValueError, match="axcodes"):
        CTSeriesReader(axcodes="LRS")


def test_dicom_and_nifti_phantom_load_to_the_same_grid(tmp_path: Path) -> None:
    from monai_ng.data.phantom import write_nifti

    vol, folder = _phantom(tmp_path)
    nifti = write_nifti(vol, tmp_path / "ct.nii.gz")  # stored in the DICOM order (LPS axes)
    canonical = nib.as_closest_canonical(nib.load(str(nifti)))  # the same image stored RAS+ (x and y flipped)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    ras_path = tmp_path / "ct_ras.nii.gz"
    nib.save(canonical, ras_path)
    dicom = LoadCTSeries(on_geometry_issue="raise")(folder)
    for path in (nifti, ras_path):
        out = LoadCTSeries()(path)
        assert out.shape == dicom.shape
        np.testing.assert_array_equal(out.numpy(), dicom.numpy())  # bit for bit: flips only
        np.testing.assert_allclose(out.affine.numpy(), dicom.affine.numpy(), atol=1e-4)
        np.testing.assert_allclose(out.meta["slice_positions"], dicom.meta["slice_positions"], atol=1e-4)
    ras = LoadCTSeries(axcodes="RAS")(folder)  # another target grid: both in-plane axes flipped
    np.testing.assert_array_equal(ras.numpy(), dicom.numpy()[:, ::-1, ::-1])
    assert nib.aff2axcodes(ras.affine.numpy()) == ("R", "A", "S")


def test_flipped_dicom_series_comes_out_on_the_lps_grid(tmp_path: Path) -> None:
    # rows toward patient right, columns toward anterior (e.g. a prone scan): both in-plane axes stored flipped
    rng = np.random.default_rng(4)
    stored = [rng.integers(-1000, 1000, size=(3, 5)).astype(np.int16) for _ in range(4)]
    for k, px in enumerate(stored):
        save_slice(
            ct_slice(px, sop=f"1.4.{k}", series="1.4", ipp=(10.0, 20.0, 3.0 * k), iop=(-1, 0, 0, 0, -1, 0)),
            tmp_path / f"s{k}.dcm",
        )
    out = LoadCTSeries(on_geometry_issue="raise")(tmp_path)
    assert out.shape == (1, 5, 3, 4) and nib.aff2axcodes(out.affine.numpy()) == ("L", "P", "S")
    for k, px in enumerate(stored):
        np.testing.assert_array_equal(out[0, :, :, k].numpy(), px.T[::-1, ::-1])
    assert out.meta["slice_sop_uids"] == [f"1.4.{k}" for k in range(4)]
    assert out.as_tensor().permute(3, 0, 2, 1).is_contiguous()  # still slice-major in memory
    np.testing.assert_allclose(out.meta["original_affine"][:3, :2], np.diag([1.0, 1.0, 0])[:, :2] * 0.5)


def test_sagittal_dicom_series_keeps_its_slice_axis(tmp_path: Path) -> None:
    # rows along +y (posterior), columns along -z (inferior): slices are sagittal, stepping along x
    rng = np.random.default_rng(5)
    stored = [rng.integers(0, 100, size=(3, 4)).astype(np.int16) for _ in range(3)]
    for k, px in enumerate(stored):
        save_slice(
            ct_slice(px, sop=f"1.5.{k}", series="1.5", ipp=(2.0 * k, 0, 0), iop=(0, 1, 0, 0, 0, -1)),
            tmp_path / f"{k}.dcm",
        )
    out = LoadCTSeries(on_geometry_issue="ignore")(tmp_path)
    assert out.shape == (1, 4, 3, 3)  # stored order: slices stay on the last axis with their meta
    assert nib.aff2axcodes(out.affine.numpy()) == ("P", "I", "R")
    for k, uid in enumerate(out.meta["slice_sop_uids"]):
        np.testing.assert_array_equal(out[0, :, :, k].numpy(), stored[int(uid.split(".")[-1])].T)
    assert out.meta["slice_sop_uids"] == ["1.5.2", "1.5.1", "1.5.0"]  # along the normal -x (LPS): right to left
