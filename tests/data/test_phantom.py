"""Tests for the phantom CT generator (monai_ng.data.phantom) and its CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from monai_ng.data.phantom import (
    HU_MAX,
    HU_MIN,
    PIXEL_MODES,
    TRANSFER_SYNTAXES,
    make_phantom_volume,
    nifti_affine,
    write_dicom_series,
    write_nifti,
    write_rsna_abdominal,
    write_rsna_ich,
    write_rsna_pe,
)
from monai_ng.data.rsna_schema import ABDOMINAL_TRAIN_COLUMNS, ICH_SUBTYPES, PE_COLUMNS


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")  # RSNA ICH style ID_ UIDs
        ds = pydicom.dcmread(path)
        _ = ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID
    return ds


def _hu_from_file(ds: pydicom.Dataset) -> np.ndarray:
    """Independent decode: modality LUT, plus the documented inverse of the ICH wrap quirk."""
    px = ds.pixel_array.astype(np.int64)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if ds.BitsStored == 12 and ds.PixelRepresentation == 0 and intercept > -100:
        px = (px + 1000) % 4096 - 1000
    return px * slope + intercept


# ----------------------------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("region", ["head", "chest", "abdomen"])
def test_volume_shape_range_and_lesion_extent(region):
    vol = make_phantom_volume(region, 14, size=24, seed=3)
    assert vol.hu.dtype == np.int16 and vol.hu.shape == (14, 24, 24)
    assert HU_MIN <= vol.hu.min() and vol.hu.max() <= HU_MAX
    idx = np.flatnonzero(vol.lesion_slices)
    assert idx.size >= 1 and np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # one contiguous block
    # same seed without lesion: identical except exactly on the lesion slices
    clean = make_phantom_volume(region, 14, size=24, seed=3, lesion=False)
    assert not clean.lesion_slices.any() and clean.label == 0 and vol.label == 1
    differs = (vol.hu != clean.hu).any(axis=(1, 2))
    assert np.array_equal(differs, vol.lesion_slices)
    assert ((vol.hu != clean.hu).sum(axis=(1, 2))[idx] >= 9).all()  # visible (>= 9 px) on every lesion slice
    assert np.array_equal(make_phantom_volume(region, 14, size=24, seed=3).hu, vol.hu)  # deterministic


def test_lesion_is_centre_biased():
    n = 20
    centres = []
    for seed in range(150):
        idx = np.flatnonzero(make_phantom_volume("head", n, size=16, seed=seed, noise_hu=0).lesion_slices)
        centres.append(idx.mean())
        assert 0.1 * n <= idx.size <= 0.4 * n
    centres = np.asarray(centres)
    assert abs(centres.mean() - (n - 1) / 2) < 1.0
    assert np.mean(np.abs(centres - (n - 1) / 2) < n / 4) > 0.8  # most blocks sit in the central half


def test_head_narrows_toward_vertex():
    vol = make_phantom_volume("head", 20, size=48, seed=0, lesion=False, noise_hu=0)
    inside = (vol.hu > -500).sum(axis=(1, 2))
    assert inside[-1] < inside[10] and inside[-1] < inside[0]  # order matters: top slice smallest
    assert (vol.hu >= 1000).any(axis=(1, 2)).all()  # skull ring on every slice


@pytest.mark.parametrize("region", ["head", "chest", "abdomen"])
def test_lesion_contrast_and_size_ranges(region):
    """``lesion_hu`` / ``lesion_scale`` vary the lesion only: same anatomy, noise and lesion slices as the default."""
    plain = make_phantom_volume(region, 16, size=64, seed=5)
    varied = make_phantom_volume(region, 16, size=64, seed=5, lesion_hu=(50.0, 90.0), lesion_scale=(0.6, 1.4))
    assert np.array_equal(plain.lesion_slices, varied.lesion_slices)
    clean = ~plain.lesion_slices
    assert np.array_equal(plain.hu[clean], varied.hu[clean])
    assert plain.lesion_hu == {"head": 70.0, "chest": 45.0, "abdomen": 260.0}[region]
    assert 50.0 <= varied.lesion_hu <= 90.0 and varied.lesion_radius_mm > 0
    draws = [
        make_phantom_volume(region, 16, size=64, seed=s, lesion_hu=(50.0, 90.0), lesion_scale=(0.6, 1.4))
        for s in range(12)
    ]
    assert len({round(v.lesion_hu) for v in draws}) > 6  # contrast varies
    assert len({v.lesion_radius_mm for v in draws}) > 3  # size varies (small draws clamp at ~2.6 px)
    negative = make_phantom_volume(region, 16, size=64, seed=5, lesion=False, lesion_hu=(50.0, 90.0))
    assert negative.lesion_hu is None and negative.lesion_radius_mm is None


def test_head_lesion_hu_is_the_drawn_contrast():
    vol = make_phantom_volume("head", 12, size=64, seed=2, lesion_hu=(85.0, 85.0), noise_hu=0)
    clean = make_phantom_volume("head", 12, size=64, seed=2, lesion=False, noise_hu=0)
    changed = vol.hu != clean.hu
    assert changed.any() and (vol.hu[changed] == 85).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"region": "head", "n_slices": 4, "lesion_hu": (90.0, 50.0)}, "lesion_hu"),
        ({"region": "head", "n_slices": 4, "lesion_scale": (0.0, 1.0)}, "lesion_scale"),
        ({"region": "leg", "n_slices": 4}, "region"),
        ({"region": "head", "n_slices": 0}, "n_slices"),
        ({"region": "head", "n_slices": 4, "size": 8}, "size"),
        ({"region": "head", "n_slices": 4, "spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ],
)
def test_volume_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_volume(**kwargs)


# ----------------------------------------------------------------------------------------------- DICOM
def test_dicom_headers_geometry_and_no_identifiers(tmp_path):
    vol = make_phantom_volume("chest", 6, size=16, seed=1, spacing=(2.5, 0.7, 0.8))
    records = write_dicom_series(vol, tmp_path, patient_id="PSEUDO01", seed=0, instance_numbers="shuffled")
    assert [r.slice_index for r in records] == list(range(6))
    assert sorted(r.instance_number for r in records) == list(range(1, 7))
    uids = set()
    for rec in records:
        ds = _read(rec.path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert "PatientName" not in ds and "PatientBirthDate" not in ds and ds.PatientID == "PSEUDO01"
        assert rec.path.name == f"{ds.SOPInstanceUID}.dcm" and ds.SOPInstanceUID == rec.sop_instance_uid
        x0, y0, z0 = vol.origin
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], [x0, y0, z0 + 2.5 * rec.slice_index])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8] and float(ds.SliceThickness) == 2.5
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds.InstanceNumber == rec.instance_number
        assert np.array_equal(_hu_from_file(ds), vol.hu[rec.slice_index])
        uids.add(ds.SeriesInstanceUID)
    assert uids == {records[0].series_instance_uid}


def test_index_names_are_shuffled(tmp_path):
    vol = make_phantom_volume("head", 8, size=16, seed=0)
    records = write_dicom_series(vol, tmp_path, patient_id="P", file_naming="index", seed=4)
    name_order = [int(r.path.stem[2:]) for r in records]  # write position of slice k
    assert sorted(name_order) == list(range(8)) and name_order != list(range(8))
    plain = write_dicom_series(vol, tmp_path / "b", patient_id="P", file_naming="index", shuffle_names=False, seed=4)
    assert [int(r.path.stem[2:]) for r in plain] == list(range(8))


@pytest.mark.parametrize("syntax", sorted(TRANSFER_SYNTAXES))
@pytest.mark.parametrize("mode", sorted(PIXEL_MODES))
def test_round_trip_every_syntax_and_pixel_mode(tmp_path, syntax, mode):
    vol = make_phantom_volume("abdomen", 2, size=16, seed=2)
    if mode == "signed12_in16" and syntax not in ("explicit_le", "implicit_le"):
        with pytest.raises(ValueError, match="native"):
            write_dicom_series(vol, tmp_path, patient_id="P", transfer_syntax=syntax, pixel_mode=mode)
        return
    records = write_dicom_series(vol, tmp_path, patient_id="P", transfer_syntax=syntax, pixel_mode=mode, seed=0)
    for rec in records:
        ds = _read(rec.path)
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
        assert ds.BitsStored == PIXEL_MODES[mode][0] and ds.PixelRepresentation == PIXEL_MODES[mode][1]
        assert np.array_equal(_hu_from_file(ds), vol.hu[rec.slice_index])


def test_quirk_modes_store_the_documented_bits(tmp_path):
    vol = make_phantom_volume("head", 2, size=16, seed=0)
    rec = write_dicom_series(vol, tmp_path / "w", patient_id="P", pixel_mode="unsigned12_wrapped")[0]
    ds = _read(rec.path)
    raw = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(16, 16)
    assert float(ds.RescaleIntercept) == 0.0 and raw.max() < 4096
    assert np.array_equal(raw, np.mod(vol.hu[0].astype(np.int32), 4096))  # air -1000 is stored as 3096
    rec = write_dicom_series(vol, tmp_path / "s", patient_id="P", pixel_mode="signed12_in16")[0]
    ds = _read(rec.path)
    raw = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(16, 16)
    assert (raw & 0xF000 == 0).all()  # high bits not sign-extended
    naive = raw.astype(np.int16).astype(np.int64)
    assert (naive >= 0).all() and (vol.hu[0] < 0).any()  # a raw int16 view loses the sign
    extended = ((raw.astype(np.int32) << 20).astype(np.int32) >> 20).astype(np.int64)
    assert np.array_equal(extended, vol.hu[0])


def test_monochrome1_tilt_windows_and_bad_arguments(tmp_path):
    vol = make_phantom_volume("head", 3, size=16, seed=0)
    recs = write_dicom_series(
        vol, tmp_path, patient_id="P", monochrome1=True, tilt_deg=20.0, multi_valued_windows=True, seed=0
    )
    ds = _read(recs[0].path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and float(ds.GantryDetectorTilt) == 20.0
    iop = [float(v) for v in ds.ImageOrientationPatient]
    assert np.allclose(iop, [1, 0, 0, 0, np.cos(np.deg2rad(20)), -np.sin(np.deg2rad(20))], atol=1e-6)
    assert [float(v) for v in ds.WindowCenter] == [40.0, 80.0] and [float(v) for v in ds.WindowWidth] == [80.0, 200.0]
    assert np.array_equal(_hu_from_file(ds), vol.hu[0])  # MONOCHROME1 leaves the modality LUT unchanged
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_dicom_series(vol, tmp_path, patient_id="P", transfer_syntax="jpeg_baseline")
    with pytest.raises(ValueError, match="patient_id"):
        write_dicom_series(vol, tmp_path, patient_id="")
    with pytest.raises(ValueError, match="outside"):
        write_dicom_series(vol, tmp_path, patient_id="P", pixel_mode="unsigned12", rescale=(1.0, 0.0))


def test_monai_stock_reader_loads_phantom(tmp_path):
    from monai.transforms import LoadImage

    vol = make_phantom_volume("chest", 5, size=16, seed=0)
    write_dicom_series(vol, tmp_path, patient_id="P", seed=0)
    img = LoadImage(reader="PydicomReader", ensure_channel_first=True, image_only=True)(str(tmp_path))
    assert tuple(img.shape) == (1, 16, 16, 5)
    # MONAI's PydicomReader returns [C, cols, rows, slices] sorted by position, rescaled to HU
    assert np.array_equal(img[0].numpy().transpose(2, 1, 0), vol.hu.astype(np.float32))


# ----------------------------------------------------------------------------------------------- NIfTI
def test_nifti_round_trip_and_affine_matches_dicom(tmp_path):
    vol = make_phantom_volume("abdomen", 4, size=16, seed=1)
    path = write_nifti(vol, tmp_path / "v.nii.gz")
    img = nib.load(path)
    assert np.array_equal(np.asarray(img.dataobj), vol.hu.transpose(2, 1, 0))
    assert np.allclose(img.affine, nifti_affine(vol))
    recs = write_dicom_series(vol, tmp_path / "dcm", patient_id="P", seed=0)
    dx, dy = vol.spacing[2], vol.spacing[1]
    for i, j, k in [(0, 0, 0), (5, 3, 2), (15, 15, 3)]:
        ds = _read(recs[k].path)
        lps = np.array([float(v) for v in ds.ImagePositionPatient]) + np.array([i * dx, j * dy, 0.0])
        ras = img.affine @ np.array([i, j, k, 1.0])
        assert np.allclose(ras[:3], lps * np.array([-1, -1, 1]))
    with pytest.raises(ValueError, match="NIfTI"):
        write_nifti(vol, tmp_path / "v.img")


# ----------------------------------------------------------------------------------------------- layouts
def test_ich_layout(tmp_path):
    truth = write_rsna_ich(tmp_path, n_scans=5, seed=3, size=16, slices=(6, 8))
    csv = pd.read_csv(tmp_path / "stage_2_train.csv")
    assert list(csv.columns) == ["ID", "Label"] and len(csv) == 6 * truth["n_slices"].sum()
    files = sorted(p.stem for p in (tmp_path / "stage_2_train").glob("ID_*.dcm"))
    assert sorted(s for sops in truth["sop_uids"] for s in sops) == files
    csv["image"] = csv["ID"].str.rsplit("_", n=1).str[0]
    csv["subtype"] = csv["ID"].str.rsplit("_", n=1).str[1]
    assert set(csv["subtype"]) == set(ICH_SUBTYPES)
    any_label = csv[csv["subtype"] == "any"].set_index("image")["Label"]
    for _, row in truth.iterrows():
        assert [int(any_label[s]) for s in row["sop_uids"]] == row["slice_labels"]
        assert row["label"] == int(any(row["slice_labels"]))
        ds = _read(tmp_path / "stage_2_train" / f"{row['sop_uids'][0]}.dcm")
        assert ds.SOPInstanceUID == row["sop_uids"][0] and ds.SeriesInstanceUID == row["scan_id"]
        assert ds.PatientID == row["patient_id"] and "PatientName" not in ds
    assert truth["patient_id"].nunique() < len(truth)  # some patients have two scans (seed 3)
    assert "unsigned12_wrapped" in set(truth["pixel_mode"])


def test_ich_layout_varied_lesions_are_recorded(tmp_path):
    truth = write_rsna_ich(tmp_path, n_scans=8, seed=1, size=64, lesion_hu=(50.0, 90.0), lesion_scale=(1.2, 2.0))
    positive = truth[truth["label"] == 1]
    assert len(positive) >= 2 and positive["lesion_hu"].between(50.0, 90.0).all()
    assert positive["lesion_radius_mm"].nunique() == len(positive)
    assert truth.loc[truth["label"] == 0, "lesion_hu"].isna().all()


def test_pe_layout(tmp_path):
    truth = write_rsna_pe(tmp_path, n_scans=4, seed=0, size=16, slices=(6, 8), indeterminate_rate=0.25)
    csv = pd.read_csv(tmp_path / "train.csv")
    assert tuple(csv.columns) == PE_COLUMNS and len(csv) == truth["n_slices"].sum()
    for _, row in truth.iterrows():
        folder = tmp_path / "train" / row["study_uid"] / row["series_uid"]
        assert sorted(p.stem for p in folder.glob("*.dcm")) == sorted(row["sop_uids"])
        sub = csv[csv["SeriesInstanceUID"] == row["series_uid"]].set_index("SOPInstanceUID")
        assert sub.loc[row["sop_uids"], "pe_present_on_image"].tolist() == row["slice_labels"]
        exam = sub.iloc[0]
        if row["label"]:
            assert exam["negative_exam_for_pe"] == 0 and exam["rv_lv_ratio_gte_1"] + exam["rv_lv_ratio_lt_1"] == 1
            assert exam["leftsided_pe"] + exam["rightsided_pe"] + exam["central_pe"] >= 1
        else:
            assert exam["negative_exam_for_pe"] + exam["indeterminate"] == 1
            assert exam[["leftsided_pe", "rightsided_pe", "central_pe", "rv_lv_ratio_gte_1"]].sum() == 0


def test_abdominal_layout(tmp_path):
    truth = write_rsna_abdominal(tmp_path, n_patients=4, seed=1, size=16, slices=(6, 8), organ_injury_rate=1.0)
    train = pd.read_csv(tmp_path / "train.csv")
    images = pd.read_csv(tmp_path / "image_level_labels.csv")
    meta = pd.read_csv(tmp_path / "train_series_meta.csv")
    assert tuple(train.columns) == ABDOMINAL_TRAIN_COLUMNS and len(train) == 4
    assert list(images.columns) == ["patient_id", "series_id", "instance_number", "injury_name"]
    assert list(meta.columns) == ["patient_id", "series_id", "aortic_hu", "incomplete_organ"]
    assert set(images["injury_name"]) <= {"Bowel", "Active_Extravasation"}
    assert len(meta) == len(truth)
    for organ in ("bowel", "extravasation"):
        assert (train[f"{organ}_healthy"] + train[f"{organ}_injury"] == 1).all()
    for organ in ("kidney", "liver", "spleen"):
        assert (train[[f"{organ}_healthy", f"{organ}_low", f"{organ}_high"]].sum(axis=1) == 1).all()
    for _, row in truth.iterrows():
        folder = tmp_path / "train_images" / row["patient_id"] / row["scan_id"]
        assert sorted(int(p.stem) for p in folder.glob("*.dcm")) == sorted(row["instance_numbers"])
        sub = images[images["series_id"] == int(row["scan_id"])]
        positive = {n for n, lab in zip(row["instance_numbers"], row["slice_labels"], strict=True) if lab}
        assert set(sub["instance_number"]) == positive
        patient = train[train["patient_id"] == int(row["patient_id"])].iloc[0]
        assert row["label"] == patient["bowel_injury"] + patient["extravasation_injury"]
    assert ((train["any_injury"] == 1) & (train["bowel_injury"] + train["extravasation_injury"] == 0)).any()
