"""``monai-ng predict`` on images: a folder of studies (series by UID at any depth, series mixed in one folder, a
corrupt series), NIfTI files, a scan manifest, an embedding store; a bundle's model and a checkpoint; bad input.

One bundle copy with a tiny random model (``predict_bundle.make_bundle``) and one phantom data set serve the module.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from predict_bundle import IDENTIFIERS, TINY, make_bundle, write_nifti_scan, write_series
from pydicom.uid import CTImageStorage

from monai_ng.bundle import PredictError, dicom_scan_id, predict
from monai_ng.cli import main
from monai_ng.networks import build_mil_network, save_mil_checkpoint
from monai_ng.reporting import read_results_csv, read_scan_json


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    bundle = make_bundle(root)
    studies = root / "studies"
    series = {}
    series["a"] = write_series(studies / "site" / "mixed", n_slices=8, seed=1)
    series["b"] = write_series(studies / "site" / "mixed", n_slices=6, seed=2)  # mixed into a's folder
    series["c"] = write_series(studies / "deep" / "x" / "y" / "z", n_slices=5, seed=3)
    corrupt = studies / "broken"
    write_series(corrupt, n_slices=4, seed=4)
    for path in corrupt.glob("*.dcm"):  # readable headers, undecodable pixels
        ds = pydicom.dcmread(path)
        ds.PixelData = b"\x00\x01\x02"
        ds.save_as(path)
    corrupt_uid = str(pydicom.dcmread(next(corrupt.glob("*.dcm"))).SeriesInstanceUID)
    uid_of = {
        k: str(pydicom.dcmread(next(iter(_files_of(studies, v[0])))).SeriesInstanceUID) for k, v in series.items()
    }
    return {
        "root": root,
        "bundle": bundle,
        "studies": studies,
        "sops": series,
        "scan_ids": {k: dicom_scan_id(u) for k, u in uid_of.items()},
        "corrupt_id": dicom_scan_id(corrupt_uid),
    }


def _files_of(root: Path, sop_uid: str) -> list[Path]:
    return [p for p in root.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == sop_uid]


def _no_identifiers(out: Path, text: str = "") -> None:
    for path in out.rglob("*"):
        for ident in IDENTIFIERS:
            assert ident not in path.name
        if path.suffix in (".json", ".csv", ".png"):
            data = path.read_bytes()
            for ident in IDENTIFIERS:
                assert ident.encode() not in data, f"{ident} found in {path.name}"
    for ident in IDENTIFIERS:
        assert ident not in text


def test_folder_of_studies_with_a_corrupt_series(data, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = main(["predict", "--bundle", str(data["bundle"]), "--input", str(data["studies"]), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1  # one scan failed: the run went on, the exit status says so
    failures = pd.read_csv(out / "failures.csv")
    assert failures["scan_id"].tolist() == [data["corrupt_id"]]
    assert failures["stage"].tolist() == ["load"] and failures["reason"].str.len().min() > 10
    results = {r.scan_id: r for r in read_results_csv(out / "predictions.csv")}
    assert set(results) == set(data["scan_ids"].values())
    for key, scan_id in data["scan_ids"].items():
        result = read_scan_json(out / f"{scan_id}.json")
        assert result == results[scan_id]
        z = [s.z_mm for s in result.slices]
        assert z == sorted(z) and len(set(z)) == len(z)  # inferior -> superior
        assert [s.sop_instance_uid for s in result.slices] == data["sops"][key]  # the input's, in z order
        assert {s.sop_class_uid for s in result.slices} == {CTImageStorage}
        assert abs(sum(s.score for s in result.slices) - 1.0) < 1e-4
        assert (out / f"{scan_id}.png").stat().st_size > 1000
        kos = pydicom.dcmread(out / f"{scan_id}_kos.dcm")
        assert kos.Modality == "KO" and kos.StudyInstanceUID == result.study_instance_uid
        refs = [
            item.ReferencedSOPInstanceUID
            for series in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        ]
        assert set(refs) == {s.sop_instance_uid for s in result.top_k(5)} <= set(data["sops"][key])
        sc = pydicom.dcmread(out / f"{scan_id}_sc.dcm")
        assert sc.Modality == "OT" and sc.SeriesInstanceUID not in (kos.SeriesInstanceUID, result.series_instance_uid)
        assert {i.ReferencedSOPInstanceUID for i in sc.SourceImageSequence} == set(data["sops"][key])
    assert not list(out.glob(f"{data['corrupt_id']}*.json"))
    _no_identifiers(out, captured.out + captured.err + caplog.text)


def test_one_series_folder_and_nifti_files(data, tmp_path):
    out = tmp_path / "one"
    rc = main(
        ["predict", "--bundle", str(data["bundle"]), "--input", str(data["studies"] / "deep"), "--out", str(out),
         "--no-progress", "--top-k", "2", "--no-png"]
    )  # fmt: skip
    assert rc == 0
    (result,) = read_results_csv(out / "predictions.csv")
    assert result.scan_id == data["scan_ids"]["c"] and result.num_slices == 5
    assert json.loads((out / f"{result.scan_id}.json").read_text())["top_k"]["k"] == 2
    assert not list(out.glob("*.png")) and (out / f"{result.scan_id}_kos.dcm").is_file()

    nifti = [write_nifti_scan(tmp_path / f"scan{i}.nii.gz", n_slices=6 + i, seed=i) for i in range(2)]
    out = tmp_path / "nii"
    assert main(["predict", "--bundle", str(data["bundle"]), "--input", *map(str, nifti), "--out", str(out)]) == 0
    results = read_results_csv(out / "predictions.csv")
    assert [r.scan_id for r in results] == ["scan0", "scan1"] and [r.num_slices for r in results] == [6, 7]
    assert all(r.has_positions and r.slices[0].sop_instance_uid is None for r in results)
    assert not list(out.glob("*.dcm")) and (out / "scan1.png").is_file()


def test_manifest_and_checkpoint_without_bundle(data, tmp_path):
    """A manifest's own scan ids name the outputs; a checkpoint runs with encoder options and no bundle."""
    files = sorted(str(p) for p in (data["studies"] / "deep").rglob("*.dcm"))
    manifest = tmp_path / "scans.csv"
    pd.DataFrame({"scan_id": ["case-7"], "slice_files": [json.dumps(files)]}).to_csv(manifest, index=False)
    network = build_mil_network("abmil", 192)
    ckpt = save_mil_checkpoint(network, tmp_path / "abmil.safetensors", metadata={"method": "ABMIL+NG"})
    summary = predict(manifest, tmp_path / "out", checkpoint=ckpt, overrides={**TINY, "window_preset": "head"})
    assert summary.ok and [r.scan_id for r in summary.results] == ["case-7"]
    assert summary.files("case-7").keys() == {"json", "png", "kos", "sc"}
    assert {"discover", "build", "load", "encode", "network", "write", "total"} <= set(summary.seconds)
    # the checkpoint's network scored the scan: same attention as running that network on the encoder's output
    assert summary.results[0].num_slices == 5

    wrong = save_mil_checkpoint(build_mil_network("abmil", 64), tmp_path / "d64.safetensors")
    with pytest.raises(PredictError, match="64-d embeddings"):
        predict(manifest, tmp_path / "bad", checkpoint=wrong, overrides=TINY)
    assert not (tmp_path / "bad").exists()


def test_embedding_store_needs_no_encoder(data, tmp_path):
    from monai_ng.data.synthetic import write_synthetic_store

    store = tmp_path / "store"
    write_synthetic_store("ct_like", store, n_bags=6, seed=0, dim=192, overwrite=True)
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(data["bundle"]), "--input", str(store), "--out", str(out)]) == 1
    # the bundle's embedding.json records another encoder than the synthetic store's: refused, nothing written
    assert not out.exists()
    ckpt = save_mil_checkpoint(build_mil_network("abmil", 192), tmp_path / "m.safetensors")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(store), "--out", str(out)]) == 0
    scans = pd.read_csv(out / "scan_scores.csv")
    assert len(scans) == 6 and (out / "metrics.json").is_file()
    results = read_results_csv(out / "predictions.csv")
    assert [r.scan_id for r in results] == scans["scan_id"].astype(str).tolist()
    assert np.allclose([r.scan_probability for r in results], scans["probability"])
    assert (out / f"{results[0].scan_id}.json").is_file() and not list(out.glob("*.png"))


def test_bad_inputs(data, tmp_path, capsys):
    bundle = str(data["bundle"])
    assert main(["predict", "--input", str(data["studies"]), "--out", str(tmp_path / "o")]) == 2  # no model
    assert main(["predict", "--bundle", bundle, "--out", str(tmp_path / "o")]) == 2  # no input
    assert main(["predict", "--bundle", bundle, "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--bundle", bundle, "--input", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "empty" in capsys.readouterr().err
    # another encoder than the one model.pt was trained on is refused, naming embedding.json
    rc = main(["predict", "--bundle", bundle, "--input", str(data["studies"] / "deep"), "--out", str(tmp_path / "o"),
               "--pooling", "mean"])  # fmt: skip
    assert rc == 1 and "embedding.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    no_models = tmp_path / "bare"
    shutil.copytree(bundle, no_models, ignore=shutil.ignore_patterns("models"))
    rc = main(["predict", "--bundle", str(no_models), "--input", str(data["studies"] / "deep"), "--out",
               str(tmp_path / "o")])  # fmt: skip
    assert rc == 1 and "model.pt" in capsys.readouterr().err
