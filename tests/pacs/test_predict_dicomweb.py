"""``monai-ng predict --dicomweb URL --study UID [--stow]`` against a real Orthanc (fixture ``orthanc``): the round
trip (upload a phantom study, predict, store the KOS and Secondary Capture back, read them from the PACS) and bad
input (unreachable server, unknown study, a study without CT) with nothing stored."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pacs.orthanc_server import OrthancServer, free_port
from predict_bundle import IDENTIFIERS, make_bundle, write_series
from pydicom.uid import MRImageStorage, generate_uid

from monai_ng.cli import main
from monai_ng.pacs import store_instances
from monai_ng.reporting import read_results_csv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


def _instances(server: OrthancServer) -> int:
    return int(requests.get(f"{server.url}/statistics", timeout=10).json()["CountInstances"])


def _upload(server: OrthancServer, folder: Path, modality: str | None = None) -> str:
    files = sorted(folder.rglob("*.dcm"))
    if modality is not None:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.Modality = modality
            ds.SOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.save_as(path)
    store_instances(server.dicomweb_url, files)
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def test_round_trip_with_stow(orthanc: OrthancServer, bundle: Path, tmp_path, capsys):
    study = generate_uid()
    sops = {
        "head": write_series(tmp_path / "study" / "s1", n_slices=8, seed=11, study_uid=study),
        "thin": write_series(tmp_path / "study" / "s2", n_slices=6, seed=12, study_uid=study),
    }
    _upload(orthanc, tmp_path / "study")
    out = tmp_path / "out"
    rc = main(["predict", "--bundle", str(bundle), "--dicomweb", orthanc.dicomweb_url, "--study", study, "--stow",
               "--out", str(out), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-2000:]
    assert "stored 4 document(s)" in printed.out
    results = read_results_csv(out / "predictions.csv")
    assert sorted(r.num_slices for r in results) == [6, 8]
    client = DICOMwebClient(orthanc.dicomweb_url)
    series = client.search_for_series(study_instance_uid=study)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CT", "CT", "KO", "KO", "OT", "OT"]
    all_sops = set(sops["head"]) | set(sops["thin"])
    for result in results:
        kos_local = pydicom.dcmread(out / f"{result.scan_id}_kos.dcm")
        kos = client.retrieve_instance(study, kos_local.SeriesInstanceUID, kos_local.SOPInstanceUID)
        refs = {
            item.ReferencedSOPInstanceUID
            for s in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
            for item in s.ReferencedSOPSequence
        }
        assert refs == {s.sop_instance_uid for s in result.top_k(5)} and refs <= all_sops
        sc_local = pydicom.dcmread(out / f"{result.scan_id}_sc.dcm")
        sc = client.retrieve_instance(study, sc_local.SeriesInstanceUID, sc_local.SOPInstanceUID)
        assert sc.Modality == "OT" and sc.pixel_array.shape[-1] == 3
        assert [s.sop_instance_uid for s in result.slices] in (sops["head"], sops["thin"])
    for ident in IDENTIFIERS:
        assert ident not in printed.out + printed.err
        assert all(ident not in p.name for p in out.iterdir())


def test_bad_input_stores_nothing(orthanc: OrthancServer, bundle: Path, tmp_path, capsys):
    mr_study = _upload(orthanc, _mr_series(tmp_path / "mr"), modality="MR")
    before = _instances(orthanc)
    base = ["predict", "--bundle", str(bundle), "--stow", "--no-progress", "--timeout", "5"]
    cases = [
        (f"http://127.0.0.1:{free_port()}/dicom-web", generate_uid(), "cannot reach"),
        (orthanc.dicomweb_url, generate_uid(), "is not on DICOMweb server"),
        (orthanc.dicomweb_url, mr_study, "no CT series"),
    ]
    for i, (url, study, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main([*base, "--dicomweb", url, "--study", study, "--out", str(out)]) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()
    assert _instances(orthanc) == before
    assert main([*base[:3], "--study", mr_study, "--out", str(tmp_path / "x")]) == 2  # --study without --dicomweb


def _mr_series(folder: Path) -> Path:
    write_series(folder, n_slices=3, seed=21)
    return folder
