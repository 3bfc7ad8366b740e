"""Corpus of malformed or odd inputs: each gets a clear error naming the file and the reason, or documented handling.

Every case builds its own tiny input. ``ERROR_CASES`` must raise ``ValueError`` whose message contains the offending
file (or folder / CSV) name and the reason; ``test_documented_handling`` covers inputs that load with a documented
outcome; ``test_batch_run_records_failures_and_goes_on`` runs the ICH ingest over a folder with broken files.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_factory import ct_slice
from dicom_factory import save_slice as save
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from monai_ng.cli import main
from monai_ng.io import read_slice_header, scan_headers
from monai_ng.transforms import LoadCTSeries
from preprocessing.rsna_abdominal import build_abdominal_manifest
from preprocessing.rsna_ich import build_ich_manifest, read_ich_labels
from preprocessing.rsna_pe import build_pe_manifest

SERIES = "1.2.826.0.1.3680043.8.498.7"


def make_ds(sop: str, z: float = 0.0, series: str = SERIES, **tags: object) -> Dataset:
    """A valid 4x4 axial CT slice dataset; ``tags`` override (``None`` deletes)."""
    return ct_slice(
        np.arange(16, dtype=np.int16).reshape(4, 4), sop=sop, series=series, ipp=(0.0, 0.0, z), intercept=-1024, **tags
    )


def series(folder: Path, zs: list[float], prefix: str = "s", uid_root: str = "1.5.1", **tags: object) -> Path:
    """Slices ``<prefix><k>.dcm`` with SOPInstanceUID ``<uid_root>.<k>`` at the given z."""
    for k, z in enumerate(zs):
        save(make_ds(f"{uid_root}.{k}", z, **tags), folder / f"{prefix}{k}.dcm")
    return folder


def load(path: Path, **kw: object) -> object:
    return LoadCTSeries(**kw)(path)


# ---------------------------------------------------------------- builders: each returns (callable, file, reason)
def truncated_header(tmp: Path):
    p = save(make_ds("1.1"), tmp / "trunc_header.dcm")
    p.write_bytes(p.read_bytes()[:200])
    return (
        (lambda: read_slice_header(p)),
        "trunc_header.dcm",
        "CT Image Storage header without Rows/Columns: file truncated",
    )


def truncated_pixels(tmp: Path):
    p = save(make_ds("1.1"), tmp / "trunc_px.dcm")
    p.write_bytes(p.read_bytes()[:-10])
    return (lambda: load(p)), "trunc_px.dcm", "truncated pixel data"


def pydicom_truncated_file(tmp: Path):
    p = Path(shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp / "MR_truncated.dcm"))
    return (lambda: load(p)), "MR_truncated.dcm", "truncated pixel data"


def no_pixel_data(tmp: Path):
    p = save(make_ds("1.1", PixelData=None), tmp / "nopix.dcm")
    return (lambda: load(p)), "nopix.dcm", "no pixel data"


def non_image_dicom(tmp: Path):
    p = Path(shutil.copy(get_testdata_file("rtplan.dcm"), tmp / "rtplan.dcm"))
    return (lambda: read_slice_header(p)), "rtplan.dcm", "not an image"


def structured_report(tmp: Path):
    p = Path(shutil.copy(get_testdata_file("test-SR.dcm"), tmp / "sr.dcm"))
    return (lambda: load(p)), "sr.dcm", "not an image"


def not_dicom(tmp: Path):
    p = tmp / "notes.dcm"
    p.write_text("hello, not a DICOM file\n")
    return (lambda: read_slice_header(p)), "notes.dcm", "not a DICOM file"


def empty_file(tmp: Path):
    p = tmp / "empty.dcm"
    p.write_bytes(b"")
    return (lambda: load(p)), "empty.dcm", "not a DICOM file|unreadable"


def missing_file(tmp: Path):
    p = tmp / "ghost.dcm"
    return (lambda: load(p)), "ghost.dcm", "no such file"


def empty_folder(tmp: Path):
    (tmp / "empty_dir").mkdir()
    return (lambda: load(tmp / "empty_dir")), "empty_dir", "no files"


def mixed_series(tmp: Path):
    series(tmp / "mixed", [0, 1], prefix="a")
    series(tmp / "mixed", [0, 1], prefix="b", uid_root="1.5.2", series="1.9.9")
    return (lambda: load(tmp / "mixed")), "mixed", "mixed folder with 2 series"


def unknown_series_uid(tmp: Path):
    series(tmp / "one", [0, 1])
    return (lambda: load(tmp / "one", series_uid="1.7")), "one", "series 1.7 not found"


def duplicate_position(tmp: Path):
    f = series(tmp / "dup", [0, 1, 2])
    save(make_ds("1.5.99", 1.0), f / "dup_pos.dcm")
    return (lambda: load(f, on_geometry_issue="raise")), "dup_pos.dcm", "duplicate position"


def conflicting_duplicate(tmp: Path):
    f = series(tmp / "conf", [0, 1, 2])
    save(make_ds("1.5.1.0", 7.0), f / "conflict.dcm")  # same SOP as s0 at another position
    return (lambda: load(f)), "conflict.dcm", "conflicting duplicate"


def missing_slice(tmp: Path):
    f = series(tmp / "gap", [0, 1, 2, 5, 6])
    return (lambda: load(f, on_geometry_issue="raise")), "gap", "gap of 3.000 mm.*missing slice"


def inconsistent_spacing(tmp: Path):
    f = series(tmp / "spc", [0, 1, 2, 3.3, 4.3])
    return (lambda: load(f, on_geometry_issue="raise")), "spc", "inconsistent slice spacing"


def tilted_gantry(tmp: Path):
    f = tmp / "tilt"
    for k in range(3):
        save(make_ds(f"1.6.{k}", ImagePositionPatient=[0.0, 0.8 * k, 2.0 * k]), f / f"t{k}.dcm")
    return (lambda: load(f, on_geometry_issue="raise")), "tilt", "gantry tilt of 21.80 degrees"


def tilt_tag_only(tmp: Path):
    f = series(tmp / "tilt_tag", [0, 1, 2], GantryDetectorTilt=12)
    return (lambda: load(f, on_geometry_issue="raise")), "tilt_tag", "gantry tilt of 12.00 degrees"


def non_axial(tmp: Path):
    f = tmp / "sag"
    for k in range(3):
        ds = make_ds(f"1.7.{k}", ImagePositionPatient=[1.0 * k, 0, 0], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
        save(ds, f / f"sag{k}.dcm")
    return (lambda: load(f, on_geometry_issue="raise")), "sag", "non-axial acquisition"


def inconsistent_shape(tmp: Path):
    f = series(tmp / "shape", [0, 1])
    save(make_ds("1.8", 2.0, Rows=2, Columns=8), f / "wide.dcm")
    return (lambda: load(f)), "wide.dcm", r"image shape \(2, 8\) differs"


def inconsistent_pixel_spacing(tmp: Path):
    f = series(tmp / "psp", [0, 1])
    save(make_ds("1.8", 2.0, PixelSpacing=[0.7, 0.7]), f / "psp.dcm")
    return (lambda: load(f)), "psp.dcm", "PixelSpacing .* differs"


def inconsistent_orientation(tmp: Path):
    f = series(tmp / "iop", [0, 1])
    save(make_ds("1.8", 2.0, ImageOrientationPatient=[0, 1, 0, -1, 0, 0]), f / "rot.dcm")
    return (lambda: load(f)), "rot.dcm", "ImageOrientationPatient .* differs"


def missing_position(tmp: Path):
    p = save(make_ds("1.1", ImagePositionPatient=None), tmp / "nopos.dcm")
    return (lambda: load(p)), "nopos.dcm", "missing ImagePositionPatient"


def degenerate_orientation(tmp: Path):
    p = save(make_ds("1.1", ImageOrientationPatient=[1, 0, 0, 1, 0, 0]), tmp / "degen.dcm")
    return (lambda: load(p)), "degen.dcm", "not two orthonormal direction cosines"


def wrong_value_count(tmp: Path):
    p = save(make_ds("1.1", ImagePositionPatient=[0.0, 1.0]), tmp / "ipp2.dcm")
    return (lambda: read_slice_header(p)), "ipp2.dcm", "ImagePositionPatient has 2 values, expected 3"


def shape_mismatch(tmp: Path):
    p = save(make_ds("1.1", Rows=8, Columns=8), tmp / "short.dcm")  # 16 pixels stored for 8x8
    return (lambda: load(p)), "short.dcm", "truncated pixel data"


def multi_frame(tmp: Path):
    p = save(make_ds("1.1", NumberOfFrames=2, PixelData=np.zeros(32, np.int16).tobytes()), tmp / "multi.dcm")
    return (lambda: read_slice_header(p)), "multi.dcm", "multi-frame image with 2 frames"


def rgb_image(tmp: Path):
    p = Path(shutil.copy(get_testdata_file("SC_rgb.dcm"), tmp / "rgb.dcm"))
    return (lambda: read_slice_header(p)), "rgb.dcm", "3 samples per pixel"


def no_decoder_exists(tmp: Path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 (encapsulated): pydicom has no decoder
    p = save(ds, tmp / "mpeg2.dcm")
    return (lambda: load(p)), "mpeg2.dcm", "MPEG2.*pydicom has no decoder for this transfer syntax"


def ich_wrong_columns(tmp: Path):
    pd.DataFrame({"image": ["ID_1_any"], "Label": [1]}).to_csv(tmp / "stage_2_train.csv", index=False)
    return (
        (lambda: read_ich_labels(tmp / "stage_2_train.csv")),
        "stage_2_train.csv",
        r"expected columns \['ID', 'Label'\]",
    )


def ich_bad_ids(tmp: Path):
    pd.DataFrame({"ID": ["ID_1_any", "ID_2_headache"], "Label": [1, 0]}).to_csv(tmp / "stage_2_train.csv", index=False)
    return (lambda: read_ich_labels(tmp / "stage_2_train.csv")), "stage_2_train.csv", "unknown subtypes"


def pe_missing_column(tmp: Path):
    (tmp / "train").mkdir()
    pd.DataFrame({"StudyInstanceUID": ["1"], "SeriesInstanceUID": ["2"], "SOPInstanceUID": ["3"]}).to_csv(
        tmp / "train.csv", index=False
    )
    return (lambda: build_pe_manifest(tmp, progress=False)), "train.csv", "missing columns.*pe_present_on_image"


def abdominal_missing_csv(tmp: Path):
    pd.DataFrame({"patient_id": [1]}).to_csv(tmp / "train.csv", index=False)
    return (lambda: build_abdominal_manifest(tmp, progress=False)), "train.csv", "missing columns.*bowel_healthy"


def corrupt_nifti(tmp: Path):
    p = tmp / "broken.nii.gz"
    p.write_bytes(b"\x1f\x8b garbage")
    return (lambda: load(p)), "broken.nii.gz", "unreadable NIfTI file"


def nifti_4d(tmp: Path):
    p = tmp / "dyn.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), p)
    return (lambda: load(p)), "dyn.nii", r"shape \(2, 2, 2, 3\); expected 3D"


ERROR_CASES: list[Callable] = [
    truncated_header,
    truncated_pixels,
    pydicom_truncated_file,
    no_pixel_data,
    non_image_dicom,
    structured_report,
    not_dicom,
    empty_file,
    missing_file,
    empty_folder,
    mixed_series,
    unknown_series_uid,
    duplicate_position,
    conflicting_duplicate,
    missing_slice,
    inconsistent_spacing,
    tilted_gantry,
    tilt_tag_only,
    non_axial,
    inconsistent_shape,
    inconsistent_pixel_spacing,
    inconsistent_orientation,
    missing_position,
    degenerate_orientation,
    wrong_value_count,
    shape_mismatch,
    multi_frame,
    rgb_image,
    no_decoder_exists,
    ich_wrong_columns,
    ich_bad_ids,
    pe_missing_column,
    abdominal_missing_csv,
    corrupt_nifti,
    nifti_4d,
]


def test_corpus_is_large_enough() -> None:
    assert len(ERROR_CASES) >= 25


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda f: f.__name__)
def test_error_names_file_and_reason(case: Callable, tmp_path: Path) -> None:
    call, name, reason = case(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            call()
    message = str(info.value)
    assert name in message, message
    assert re.search(reason, message), message


def test_missing_decoder_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg-openjpeg>=2.0",)})
    p = Path(shutil.copy(get_testdata_file("MR_small_jp2klossless.dcm"), tmp_path / "j2k.dcm"))
    with pytest.raises(ValueError, match=r"j2k\.dcm: cannot decode JPEG 2000 .*no decoder plugin installed.*openjpeg"):
        load(p)


def test_documented_handling(tmp_path: Path) -> None:
    # exact duplicate (same SOP, same position): dropped and noted, never raised
    f = series(tmp_path / "exact", [0, 1, 2])
    save(make_ds("1.5.1.1", 1.0), f / "copy_of_s1.dcm")
    out = load(f, on_geometry_issue="raise")
    # the first path in sorted order is kept ("copy_of_s1.dcm" < "s1.dcm")
    assert out.shape[-1] == 3 and [Path(p).name for p in out.meta["dropped_files"]] == ["s1.dcm"]
    # duplicate position with another SOP under "warn": the first file (by InstanceNumber, path) is kept
    g = series(tmp_path / "dup", [0, 1, 2])
    save(make_ds("1.5.98", 1.0), g / "zz_dup.dcm")
    with pytest.warns(UserWarning, match="duplicate position"):
        out = load(g)
    assert out.shape[-1] == 3 and [Path(p).name for p in out.meta["dropped_files"]] == ["zz_dup.dcm"]
    # a folder with a stray non-DICOM file loads with skip_unreadable=True and lists it
    h = series(tmp_path / "stray", [0, 1])
    (h / "README.txt").write_text("notes")
    with pytest.raises(ValueError, match="README.txt: not a DICOM file"):
        load(h)
    out = LoadCTSeries(skip_unreadable=True)(h)
    assert out.shape[-1] == 2 and "README.txt" in out.meta["skipped_files"][0]
    # hidden files and DICOMDIR indexes in a folder are not slices
    k = series(tmp_path / "indexed", [0, 1, 2])
    (k / "DICOMDIR").write_bytes(b"index")
    (k / ".DS_Store").write_bytes(b"junk")
    out = load(k)
    assert out.shape[-1] == 3 and out.meta["skipped_files"] == []
    # a header scan never stops at a bad file
    scan = scan_headers(tmp_path, progress=False)
    assert scan.failures == [] and len(scan.headers) == 13  # 4 + 4 + 2 + 3 slices; the *.dcm pattern skips README.txt
    (tmp_path / "bad.dcm").write_text("x")
    scan = scan_headers(tmp_path, progress=False)
    assert [Path(p).name for p, _ in scan.failures] == ["bad.dcm"] and len(scan.headers) == 13


def test_batch_run_records_failures_and_goes_on(tmp_path: Path) -> None:
    from monai_ng.data.phantom import write_rsna_ich

    truth = write_rsna_ich(tmp_path, n_scans=3, seed=0, slices=(4, 5), size=16)
    image_dir = tmp_path / "stage_2_train"
    (image_dir / "ID_broken.dcm").write_text("not dicom")
    victim = truth.iloc[0]["sop_uids"][0]
    p = image_dir / f"{victim}.dcm"
    p.write_bytes(p.read_bytes()[:100])  # truncated header: the scan continues without this slice
    csv = pd.read_csv(tmp_path / "stage_2_train.csv")
    dropped_id = truth.iloc[1]["sop_uids"][2]
    csv[~csv["ID"].str.startswith(dropped_id)].to_csv(tmp_path / "stage_2_train.csv", index=False)
    manifest, failures = build_ich_manifest(tmp_path, progress=False)
    reasons = dict(failures)
    assert "not a DICOM file" in reasons[str(image_dir / "ID_broken.dcm")]
    assert str(p) in reasons
    missing = [r for f, r in failures if f.endswith(f"{dropped_id}.dcm")]
    assert missing and "not in stage_2_train.csv" in missing[0]
    assert len(manifest) == 3  # every scan still ingested
    row = manifest.set_index("scan_id").loc[truth.iloc[1]["scan_id"]]
    assert row["slice_labels"][row["slice_sop_uids"].index(dropped_id)] == -1
    assert row["n_slices"] == truth.iloc[1]["n_slices"]
    row0 = manifest.set_index("scan_id").loc[truth.iloc[0]["scan_id"]]
    assert row0["n_slices"] == truth.iloc[0]["n_slices"] - 1 and victim not in row0["slice_sop_uids"]
    # the CLI writes the same failures to failures.csv and succeeds
    rc = main(
        ["ingest", "--dataset", "ich", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--no-progress"]
    )
    assert rc == 0
    written = pd.read_csv(tmp_path / "failures.csv")
    assert list(written.columns) == ["item", "reason"] and len(written) == len(failures)


def test_cli_fatal_error_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd.DataFrame({"bad": [1]}).to_csv(tmp_path / "stage_2_train.csv", index=False)
    rc = main(
        ["ingest", "--dataset", "ich", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--no-progress"]
    )
    assert rc == 2
    assert "stage_2_train.csv: expected columns" in capsys.readouterr().err


def test_abdominal_patient_missing_from_csv(tmp_path: Path) -> None:
    from monai_ng.data.phantom import write_rsna_abdominal

    truth = write_rsna_abdominal(tmp_path, n_patients=3, seed=1, slices=(4, 5), size=16)
    train = pd.read_csv(tmp_path / "train.csv")
    gone = str(train["patient_id"].iloc[0])
    train.iloc[1:].to_csv(tmp_path / "train.csv", index=False)
    manifest, failures = build_abdominal_manifest(tmp_path, progress=False)
    assert gone not in set(manifest["patient_id"])
    assert any(f"patient_id {gone} not in train.csv" in r for _, r in failures)
    assert len(manifest) == int((truth["patient_id"] != gone).sum())
