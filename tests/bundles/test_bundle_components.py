"""Unit tests of monai_ng.bundle: scan discovery, slice-stack loading, the slice-encoding inferer, the prediction
writer (JSON / CSV / PNG / KOS + SC), weight loading and packaging."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
import torch

from monai_ng.bundle import (
    BundleInputError,
    LoadSliceStackd,
    PackageError,
    PredictionWriter,
    ScanInputError,
    SliceEncodingInferer,
    build_slice_encoder,
    collate_scans,
    dicom_scan_id,
    find_scan_inputs,
    load_network_weights,
    package_bundle,
    prepare_scan_batch,
)
from monai_ng.data.phantom import make_phantom_volume, write_dicom_series, write_nifti
from monai_ng.embedding import CTSliceStackLoader
from monai_ng.networks import build_mil_network
from monai_ng.reporting import read_results_csv, read_scan_json


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Two DICOM series mixed in one nested folder, one in another folder, one NIfTI file, one stray text file."""
    root = tmp_path_factory.mktemp("scans")
    mixed = root / "a" / "b"
    for i, n in enumerate((6, 9)):
        write_dicom_series(make_phantom_volume("head", n, size=32, seed=i), mixed, patient_id="p0", seed=i)
    write_dicom_series(make_phantom_volume("head", 7, size=32, seed=5), root / "c", patient_id="p1", seed=5)
    write_nifti(make_phantom_volume("head", 8, size=32, seed=7), root / "vol1.nii.gz")
    (root / "notes.txt").write_text("not an image")
    return root


def test_find_scan_inputs_groups_series_by_uid(scans):
    items = find_scan_inputs(scans)
    dicom = [i for i in items if i["source"] == "dicom"]
    assert sorted(len(i["image"]) for i in dicom) == [6, 7, 9]
    for item in dicom:
        assert item["scan_id"] == dicom_scan_id(item["series_uid"])
        assert {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in item["image"]} == {
            item["series_uid"]
        }
    assert [i["scan_id"] for i in items if i["source"] == "nifti"] == ["vol1"]
    assert dicom_scan_id("1.2.3").startswith("series-") and len(dicom_scan_id("1.2.3")) == 19


def test_find_scan_inputs_bad_folders(tmp_path):
    with pytest.raises(ScanInputError, match="does not exist"):
        find_scan_inputs(tmp_path / "nope")
    with pytest.raises(ScanInputError, match="is empty"):
        find_scan_inputs(tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ScanInputError, match="no readable DICOM series"):
        find_scan_inputs(tmp_path)


def test_load_slice_stack_matches_embedding_loader(scans):
    loader = CTSliceStackLoader("head", channels=3, image_size=32)
    transform = LoadSliceStackd("image", loader)
    for item in find_scan_inputs(scans):
        out = transform(item)
        record = SimpleNamespace(slice_files=item["image"] if isinstance(item["image"], list) else [item["image"]])
        assert out["error"] is None
        torch.testing.assert_close(out["image"], loader(record), rtol=0, atol=0)
        z = out["slice_meta"]["z_mm"]
        assert z is not None and all(b > a for a, b in zip(z, z[1:], strict=False))
        if item["source"] == "dicom":
            assert len(out["slice_meta"]["sop_instance_uids"]) == out["image"].shape[0]
    broken = transform({"image": str(scans / "notes.txt"), "scan_id": "bad"})
    assert broken["image"] is None and "notes.txt" in broken["error"]
    batch = collate_scans([broken])
    assert batch["image"].numel() == 0 and batch["error"] == [broken["error"]]


def test_slice_encoding_inferer_equals_encoder_then_network():
    encoder = build_slice_encoder("vit_tiny_patch16_224", None, in_chans=3, image_size=32, amp="none")
    network = build_mil_network("abmil", encoder.embed_dim).eval()
    slices = torch.rand(1, 11, 3, 32, 32)
    with torch.no_grad():
        expected = network(encoder(slices[0])[None])
        for batch in (1, 4, 64):
            got = SliceEncodingInferer(encoder, slice_batch_size=batch)(slices, network)
            torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.attention, expected.attention, rtol=1e-5, atol=1e-5)
    assert SliceEncodingInferer(encoder)(torch.empty(0), network) is None
    with pytest.raises(ValueError, match="slice_batch_size"):
        SliceEncodingInferer(encoder, slice_batch_size=0)


def _run_writer(scans: Path, out: Path, items: list[dict]) -> PredictionWriter:
    loader = CTSliceStackLoader("head", channels=3, image_size=32)
    transform = LoadSliceStackd("image", loader)
    encoder = build_slice_encoder("vit_tiny_patch16_224", None, in_chans=3, image_size=32, amp="none")
    network = build_mil_network("abmil", encoder.embed_dim).eval()
    inferer = SliceEncodingInferer(encoder)
    writer = PredictionWriter(out, top_k=3)
    engine = SimpleNamespace(state=SimpleNamespace(batch=None, output=None))
    writer._started(engine)
    for item in items:
        batch = collate_scans([transform(item)])
        image, _ = prepare_scan_batch(batch, "cpu")
        with torch.no_grad():
            pred = inferer(image, network)
        engine.state.batch, engine.state.output = batch, {"image": image, "pred": pred}
        writer(engine)
    writer.finish(engine)
    return writer


def test_prediction_writer_outputs_and_dicom_documents(scans, tmp_path):
    items = find_scan_inputs(scans)
    items.append({"image": str(scans / "notes.txt"), "scan_id": "broken", "source": "nifti", "series_uid": None})
    writer = _run_writer(scans, tmp_path, items)
    assert len(writer.results) == 4 and [f["scan_id"] for f in writer.failures] == ["broken"]
    assert [r.scan_id for r in read_results_csv(tmp_path / "predictions.csv")] == [r.scan_id for r in writer.results]
    assert "broken" in (tmp_path / "failures.csv").read_text()
    for item in items[:-1]:
        result = read_scan_json(tmp_path / f"{item['scan_id']}.json")
        assert (tmp_path / f"{item['scan_id']}.png").is_file()
        if item["source"] == "nifti":
            assert result.slices[0].sop_instance_uid is None
            assert not (tmp_path / f"{item['scan_id']}_kos.dcm").exists()
            continue
        sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in item["image"]}
        assert [s.sop_instance_uid in sources for s in result.slices] == [True] * result.num_slices
        kos = pydicom.dcmread(tmp_path / f"{item['scan_id']}_kos.dcm")
        refs = {
            r.ReferencedSOPInstanceUID
            for c in kos.ContentSequence
            if "ReferencedSOPSequence" in c
            for r in c.ReferencedSOPSequence
        }
        assert refs and refs <= sources and refs == {s.sop_instance_uid for s in result.top_k(3)}
        assert pydicom.dcmread(tmp_path / f"{item['scan_id']}_sc.dcm").Modality in ("OT", "CT", "SC")
    for path in tmp_path.iterdir():  # no patient identifier in any file name or plain-text output
        assert "p0" not in path.name and "p1" not in path.name
    assert "p0" not in (tmp_path / "predictions.csv").read_text()


def test_load_network_weights(tmp_path):
    network = build_mil_network("abmil", 8)
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    other = build_mil_network("abmil", 8)
    load_network_weights(other, path)
    for k, v in network.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)
    with pytest.raises(BundleInputError, match=r"model.pt: weights do not match .*classifier.weight: file \(1, 8\)"):
        load_network_weights(build_mil_network("abmil", 16), path)
    with pytest.raises(BundleInputError, match="not found"):
        load_network_weights(other, tmp_path / "missing.pt")


def _mini_bundle(root: Path, version: str = "0.1.0", changelog: tuple[str, ...] = ("0.1.0",)) -> Path:
    bundle = root / "mini_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(
        json.dumps({"version": version, "changelog": dict.fromkeys(changelog, "x")})
    )
    (bundle / "LICENSE").write_text("Apache-2.0")
    (bundle / "eval").mkdir()
    (bundle / "eval" / "metrics.csv").write_text("run output, never packaged")
    return bundle


def test_package_bundle_layout_and_large_files(tmp_path):
    bundle = _mini_bundle(tmp_path)
    weights = tmp_path / "elsewhere" / "model.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    import hashlib

    digest = hashlib.md5(b"weights").hexdigest()
    (bundle / "large_files.yml").write_text(
        json.dumps({"large_files": [{"path": "models/model.pt", "url": weights.as_uri(), "hash_val": digest}]})
    )
    zip_path = package_bundle(bundle, tmp_path / "dist")
    assert zip_path.name == "mini_bundle_v0.1.0.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        assert archive.read("mini_bundle/models/model.pt") == b"weights"
    assert names == {"mini_bundle/configs/metadata.json", "mini_bundle/LICENSE", "mini_bundle/models/model.pt"}

    (bundle / "large_files.yml").write_text(
        json.dumps({"large_files": [{"path": "models/model.pt", "url": weights.as_uri(), "hash_val": "0" * 32}]})
    )
    with pytest.raises(PackageError, match="does not match hash_val"):
        package_bundle(bundle, tmp_path / "dist2")
    assert not (tmp_path / "dist2" / "mini_bundle_v0.1.0.zip").exists()


def test_package_bundle_refuses_bad_metadata(tmp_path):
    with pytest.raises(PackageError, match="not a key of 'changelog'"):
        package_bundle(_mini_bundle(tmp_path / "a", version="0.2.0"), tmp_path / "dist")
    bundle = _mini_bundle(tmp_path / "b")
    (bundle / "LICENSE").unlink()
    with pytest.raises(PackageError, match="LICENSE"):
        package_bundle(bundle, tmp_path / "dist")


def test_candidate_dicom_files_include_bare_uid_names(tmp_path):
    from monai_ng.bundle.scan_inputs import is_candidate_dicom_file

    dicm = b"\0" * 128 + b"DICM" + b"\0" * 16
    for name, data, expected in [
        ("slice.dcm", b"", True),
        ("IM0001", dicm, True),
        ("1.2.840.10008.1", dicm, True),  # bare UID: the "extension" .1 is numeric
        ("1.2.840.10008.2", b"not dicom", False),
        ("labels.csv", dicm, False),
        ("scan.nii.gz", dicm, False),
        (".hidden.dcm", dicm, False),
        ("DICOMDIR", dicm, False),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        assert is_candidate_dicom_file(path) is expected, name
