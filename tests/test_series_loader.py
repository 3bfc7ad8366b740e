"""LoadCTSeries / LoadCTSeriesd: HU, ordering, affine, RSNA quirks, decoding and NIfTI."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from monai_ng.transforms import LoadCTSeries, LoadCTSeriesd, sign_extend
from monai_ng.transforms.dicom_headers import header_from_dataset, read_slice_header
from monai_ng.transforms.series_loader import decode_slice_hu, fix_rsna_ich_wrap


def write_slice(path: Path, pixels: np.ndarray, *, sop: str, ipp, series: str = "1.2.3.4", **tags: object) -> Path:
    """One CT slice ``pixels [rows, cols]`` with the given tags (defaults: axial, 0.5 mm, slope 1, intercept 0)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.SeriesInstanceUID = series
    ds.StudyInstanceUID = "1.2.3"
    ds.PatientID = "anon"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


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
        np.zeros((2, 2), np.int16),
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
                np.full((2, 2), int(s[-1]), np.int16),
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
        write_slice(tmp_path / f"{k}.dcm", np.zeros((2, 2), np.int16), sop=f"1.{k}", ipp=(0, 0, z))
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
    assert np.all(np.diag(out_aff)[:3] > 0)  # RAS+, Z runs inferior -> superior
    inv = np.linalg.inv(affine)
    for idx in np.ndindex(4, 5, 3):
        world = out_aff @ np.array([*idx, 1.0])
        src = np.rint(inv @ world).astype(int)[:3]
        assert out[0][idx].item() == data[tuple(src)]
    pos = out.meta["slice_positions"]
    assert len(pos) == 3 and np.all(np.diff(pos) == 2.0)
    assert out.meta["slice_files"] == [str(path)] * 3


def test_dictionary_version(tmp_path: Path) -> None:
    for s in ("1.1", "1.2"):
        write_slice(tmp_path / f"{s}.dcm", np.full((2, 2), 7, np.int16), sop=f"{s}.0", ipp=(0, 0, 0), series=s)
    t = LoadCTSeriesd(keys="image", series_uid_key="series")
    d = t({"image": str(tmp_path), "series": "1.1", "label": 1})
    assert d["label"] == 1 and d["image"].meta["series_uid"] == "1.1"
    files = [str(tmp_path / "1.2.dcm")]
    d2 = LoadCTSeriesd(keys="image")({"image": files})
    assert d2["image"].meta["slice_sop_uids"] == ["1.2.0"]
