"""``monai_ng.pacs.dicomweb`` against a real Orthanc PACS (fixture ``orthanc``) and, for what a real server cannot be
made to do on demand (hold a connection silent, drop an instance from its answer, check a token), a tiny fake server
on 127.0.0.1.

Phantom studies are built here with pydicom: 16x16 CT slices with distinct pixel values per slice, an MR series in the
same study, and a study holding only a Secondary Capture (modality OT).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from dicom_factory import ct_slice
from dicomweb_client.api import DICOMwebClient
from pacs.orthanc_server import OrthancServer, free_port
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from monai_ng.pacs import (
    DicomWebError,
    NoCTSeriesError,
    PacsUnreachableError,
    StoreRejectedError,
    StudyNotFoundError,
    connect,
    fetch_ct_series,
    store_instances,
)

PATIENT_ID = "PHANTOM-H6-0042"
PATIENT_NAME = "Phantom^Hsix"
ACCESSION = "ACC-H6-777"
IDENTIFIERS = (PATIENT_ID, PATIENT_NAME, "Phantom", "Hsix", ACCESSION, "19700101")


def image(
    study: str, series: str, index: int, *, modality: str = "CT", sop_class: str = CTImageStorage, z0: float = 0.0
) -> Dataset:
    """One 16x16 signed 16-bit slice at ``z = z0 + 2.5 * index`` mm whose pixels encode ``index`` and the series."""
    seed = int(series.rsplit(".", 1)[-1][-6:]) + index
    pixels = np.random.default_rng(seed).integers(-1000, 3000, size=(16, 16), dtype=np.int16)
    return ct_slice(
        pixels,
        sop=generate_uid(),
        series=series,
        ipp=(0.0, 0.0, z0 + 2.5 * index),
        study=study,
        patient_id=PATIENT_ID,
        instance=index + 1,
        iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        spacing=(0.7, 0.7),
        intercept=-1024.0,
        sop_class=sop_class,
        Modality=modality,
        PatientName=PATIENT_NAME,
        PatientBirthDate="19700101",
        AccessionNumber=ACCESSION,
        StudyDate="20240101",
        SeriesNumber=1,
        SliceThickness=2.5,
        RescaleSlope=1.0,
    )


def series(study: str, n: int, **kwargs: object) -> list[Dataset]:
    """``n`` slices of one new series in ``study``."""
    uid = generate_uid()
    return [image(study, uid, i, **kwargs) for i in range(n)]


def listing(folder: Path) -> list[str]:
    """Everything under ``folder`` (hidden entries included), as sorted relative paths; [] when it does not exist."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@dataclass
class Phantoms:
    """The studies uploaded to the server once per module."""

    study: str  # two CT series + one MR series
    ct: dict[str, list[Dataset]]  # SeriesInstanceUID -> slices
    mr: list[Dataset]
    non_ct_study: str  # a single Secondary Capture series (modality OT)
    non_ct: list[Dataset] = field(default_factory=list)


@pytest.fixture(scope="module")
def phantoms(orthanc: OrthancServer) -> Phantoms:
    """Upload the phantom studies with :func:`store_instances` (STOW-RS) and return what was sent."""
    study = generate_uid()
    ct_a, ct_b = series(study, 5), series(study, 3, z0=-40.0)
    mr = series(study, 2, modality="MR", sop_class=MRImageStorage)
    other = generate_uid()
    sc = series(other, 1, modality="OT", sop_class=SecondaryCaptureImageStorage)
    sent = ct_a + ct_b + mr + sc
    stored = store_instances(orthanc.dicomweb_url, sent)
    assert stored == [ds.SOPInstanceUID for ds in sent]
    cts = {s[0].SeriesInstanceUID: s for s in (ct_a, ct_b)}
    return Phantoms(study=study, ct=cts, mr=mr, non_ct_study=other, non_ct=sc)


# --- fetch ---------------------------------------------------------------------------------------------------------


def test_fetch_returns_exactly_the_ct_series_with_identical_pixels(orthanc: OrthancServer, phantoms, tmp_path: Path):
    dest = tmp_path / "in" / "study"  # parents created on demand
    folders = fetch_ct_series(orthanc.dicomweb_url, phantoms.study, dest)

    assert {f.name for f in folders} == set(phantoms.ct)
    assert all(f.parent == dest for f in folders)
    assert sorted(p.name for p in dest.iterdir()) == sorted(phantoms.ct)  # no MR folder, no staging leftovers
    for folder in folders:
        sent = {ds.SOPInstanceUID: ds for ds in phantoms.ct[folder.name]}
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == sorted(f"{uid}.dcm" for uid in sent)
        for f in files:
            got = pydicom.dcmread(f)
            ref = sent[f.stem]
            assert got.SOPInstanceUID == ref.SOPInstanceUID == got.file_meta.MediaStorageSOPInstanceUID
            assert got.SeriesInstanceUID == folder.name and got.StudyInstanceUID == phantoms.study
            assert got.Modality == "CT"
            assert [float(v) for v in got.ImagePositionPatient] == [float(v) for v in ref.ImagePositionPatient]
            np.testing.assert_array_equal(got.pixel_array, ref.pixel_array)
            assert got.pixel_array.dtype == np.int16


def test_fetch_again_replaces_files_and_leaves_other_content(orthanc: OrthancServer, phantoms, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("kept")
    first = fetch_ct_series(orthanc.dicomweb_url, phantoms.study, tmp_path)
    before = listing(tmp_path)
    second = fetch_ct_series(orthanc.dicomweb_url, phantoms.study, tmp_path)
    assert first == second
    assert listing(tmp_path) == before
    assert (tmp_path / "notes.txt").read_text() == "kept"
    assert len(before) == 1 + len(phantoms.ct) + sum(len(s) for s in phantoms.ct.values())


def test_fetch_accepts_an_explicit_transfer_syntax_and_session(orthanc: OrthancServer, phantoms, tmp_path: Path):
    with requests.Session() as session:
        folders = fetch_ct_series(
            orthanc.dicomweb_url,
            phantoms.study,
            tmp_path,
            session=session,
            headers={"X-Request-Origin": "monai-ng-test"},
            transfer_syntax=ExplicitVRLittleEndian,
        )
    files = [f for folder in folders for f in folder.iterdir()]
    assert len(files) == sum(len(s) for s in phantoms.ct.values())
    assert {pydicom.dcmread(f).file_meta.TransferSyntaxUID for f in files} == {ExplicitVRLittleEndian}


def assert_clean_error(exc: BaseException, *must_contain: str) -> None:
    """The message says what happened and carries no patient identifier."""
    text = str(exc)
    for word in must_contain:
        assert word in text, text
    for ident in IDENTIFIERS:
        assert ident not in text, text


def test_unknown_study_is_a_clear_error_and_writes_nothing(orthanc: OrthancServer, phantoms, tmp_path: Path):
    (tmp_path / "existing.txt").write_text("x")
    before = listing(tmp_path)
    unknown = generate_uid()
    with pytest.raises(StudyNotFoundError) as err:
        fetch_ct_series(orthanc.dicomweb_url, unknown, tmp_path)
    assert_clean_error(err.value, unknown, "not on DICOMweb server")
    assert listing(tmp_path) == before
    with pytest.raises(StudyNotFoundError):
        fetch_ct_series(orthanc.dicomweb_url, unknown, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_study_without_ct_is_a_clear_error_and_writes_nothing(orthanc: OrthancServer, phantoms, tmp_path: Path):
    dest = tmp_path / "dest"
    with pytest.raises(NoCTSeriesError) as err:
        fetch_ct_series(orthanc.dicomweb_url, phantoms.non_ct_study, dest)
    assert_clean_error(err.value, "no CT series", "OT")
    assert not dest.exists()


def test_failure_midway_removes_every_written_file(orthanc: OrthancServer, phantoms, tmp_path: Path):
    (tmp_path / "existing.txt").write_text("x")
    before = listing(tmp_path)
    n_ct = sum(len(s) for s in phantoms.ct.values())
    with pytest.raises(DicomWebError, match="max_instances") as err:
        fetch_ct_series(orthanc.dicomweb_url, phantoms.study, tmp_path, max_instances=n_ct - 1)
    assert_clean_error(err.value)
    assert listing(tmp_path) == before


def test_unreachable_server_fails_fast_and_writes_nothing(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    dest = tmp_path / "dest"
    t0 = time.monotonic()
    with pytest.raises(PacsUnreachableError) as err:
        fetch_ct_series(url, generate_uid(), dest, timeout=2.0)
    assert time.monotonic() - t0 < 5.0
    assert_clean_error(err.value, "cannot reach", "127.0.0.1")
    assert not dest.exists()
    with pytest.raises(PacsUnreachableError):
        store_instances(url, [image(generate_uid(), generate_uid(), 0)], timeout=2.0)


def test_credentials_in_the_url_never_reach_error_messages(tmp_path: Path):
    url = f"http://user:s3cret@127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PacsUnreachableError) as err:
        fetch_ct_series(url, generate_uid(), tmp_path / "d", timeout=2.0)
    assert "s3cret" not in str(err.value) and "user" not in str(err.value)


def test_silent_server_times_out(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
        t0 = time.monotonic()
        with pytest.raises(PacsUnreachableError, match="did not answer in time"):
            fetch_ct_series(url, generate_uid(), tmp_path / "d", timeout=(1.0, 0.5))
        assert time.monotonic() - t0 < 5.0
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"url": "ftp://127.0.0.1/x"}, ValueError, "http:// or https://"),
        ({"url": "http://127.0.0.1:1/dw?token=abc"}, ValueError, "query"),
        ({"url": 42}, TypeError, "url must be a str"),
        ({"study_uid": "1.2.abc"}, ValueError, "study_uid is not a DICOM UID"),
        ({"study_uid": "1.2.03"}, ValueError, "study_uid is not a DICOM UID"),
        ({"study_uid": "1." * 40 + "1"}, ValueError, "at most 64"),
        ({"timeout": 0}, ValueError, "timeout must be"),
        ({"timeout": (1.0, 2.0, 3.0)}, ValueError, "timeout must be"),
        ({"max_seconds": -1}, ValueError, "max_seconds"),
        ({"max_instances": 0}, ValueError, "max_instances"),
        ({"transfer_syntax": "jpeg"}, ValueError, "transfer_syntax"),
        ({"headers": {"Authorization": 1}}, TypeError, "headers"),
    ],
)
def test_fetch_checks_arguments_before_any_request(tmp_path: Path, kwargs: dict, error: type, match: str):
    args = {"url": "http://127.0.0.1:1/dicom-web", "study_uid": "1.2.3", "dest_dir": tmp_path / "d"} | kwargs
    with pytest.raises(error, match=match):
        fetch_ct_series(**args)
    assert not (tmp_path / "d").exists()


def test_fetch_refuses_a_file_as_destination(tmp_path: Path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        fetch_ct_series("http://127.0.0.1:1/dicom-web", "1.2.3", tmp_path / "f")


# --- store ---------------------------------------------------------------------------------------------------------


def secondary_capture(ref: Dataset) -> hd.sc.SCImage:
    """An 8-bit RGB Secondary Capture in a new series of ``ref``'s study (a stand-in for the attention figure)."""
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(24, dtype=np.uint8)[None, :] * 10
    rgb[4:12, 6:18, 1] = 200
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="monai-ng tests",
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def test_store_file_then_read_it_back_with_wado(orthanc: OrthancServer, phantoms, tmp_path: Path):
    ref = next(iter(phantoms.ct.values()))[0]
    sc = secondary_capture(ref)
    path = tmp_path / "figure.dcm"
    sc.save_as(path)

    assert store_instances(orthanc.dicomweb_url, [path], study_uid=phantoms.study) == [sc.SOPInstanceUID]

    client = DICOMwebClient(orthanc.dicomweb_url)
    back = client.retrieve_instance(phantoms.study, sc.SeriesInstanceUID, sc.SOPInstanceUID)
    assert back.SOPClassUID == SecondaryCaptureImageStorage
    assert back.StudyInstanceUID == phantoms.study and back.PatientID == PATIENT_ID
    np.testing.assert_array_equal(back.pixel_array, sc.pixel_array)
    # the study now has an OT series too; fetching still brings only the CT series
    assert {f.name for f in fetch_ct_series(orthanc.dicomweb_url, phantoms.study, tmp_path / "f")} == set(phantoms.ct)


def test_store_dataset_twice_is_idempotent(orthanc: OrthancServer, phantoms):
    sc = secondary_capture(phantoms.mr[0])
    for _ in range(2):
        assert store_instances(orthanc.dicomweb_url, [sc]) == [sc.SOPInstanceUID]
    found = DICOMwebClient(orthanc.dicomweb_url).search_for_instances(
        phantoms.study, sc.SeriesInstanceUID, fields=["SOPInstanceUID"]
    )
    assert [item["00080018"]["Value"][0] for item in found] == [sc.SOPInstanceUID]


def test_store_into_the_wrong_study_is_rejected_by_sop_uid(orthanc: OrthancServer, phantoms):
    stray = image(phantoms.non_ct_study, generate_uid(), 0)  # belongs to another study than the target
    good = secondary_capture(next(iter(phantoms.ct.values()))[0])
    with pytest.raises(StoreRejectedError) as err:
        store_instances(orthanc.dicomweb_url, [good, stray], study_uid=phantoms.study)
    assert stray.SOPInstanceUID in err.value.failed
    assert good.SOPInstanceUID not in err.value.failed
    assert_clean_error(err.value, stray.SOPInstanceUID, "did not store 1 of 2")
    found = DICOMwebClient(orthanc.dicomweb_url).search_for_instances(
        search_filters={"SOPInstanceUID": stray.SOPInstanceUID}
    )
    assert found == []


def test_store_refuses_an_unencodable_dataset_before_any_request():
    broken = image(generate_uid(), generate_uid(), 0)
    broken.file_meta.TransferSyntaxUID = "1.2.3.4.5"  # unknown transfer syntax: pydicom cannot encode it
    with pytest.raises(ValueError, match=r"instances\[0\] cannot be encoded") as err:
        store_instances("http://127.0.0.1:1/dicom-web", [broken])
    assert_clean_error(err.value)


@pytest.mark.parametrize(
    ("instances", "error", "match"),
    [
        ([], ValueError, "empty"),
        ("a.dcm", TypeError, "iterable"),
        ([3], TypeError, r"instances\[0\] must be"),
        (["/nonexistent/x.dcm"], FileNotFoundError, "no such file"),
    ],
)
def test_store_checks_arguments_before_any_request(instances: object, error: type, match: str):
    with pytest.raises(error, match=match):
        store_instances("http://127.0.0.1:1/dicom-web", instances)


def test_store_refuses_non_dicom_files_and_duplicates(tmp_path: Path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(ValueError, match="not a DICOM file"):
        store_instances("http://127.0.0.1:1/dicom-web", [junk])
    ds = image(generate_uid(), generate_uid(), 0)
    with pytest.raises(ValueError, match="same SOPInstanceUID twice"):
        store_instances("http://127.0.0.1:1/dicom-web", [ds, ds])
    del ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    with pytest.raises(ValueError, match="SOPInstanceUID of instances"):
        store_instances("http://127.0.0.1:1/dicom-web", [ds])


# --- a fake server for what Orthanc will not do on demand ------------------------------------------------------------


@dataclass
class FakeServer:
    url: str
    requests: list[dict] = field(default_factory=list)
    stow_answer: tuple[int, dict | None] = (200, None)
    qido_answer: list[dict] = field(default_factory=list)
    wado_instances: list[Dataset] = field(default_factory=list)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """An HTTP server on 127.0.0.1 that records each request's headers and answers STOW with ``stow_answer``."""
    state = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
            if "/series?" in self.path or self.path.endswith("/series"):
                return self._reply(200, state.qido_answer)
            boundary = "fake-boundary"
            body = b""
            for ds in state.wado_instances:
                buf = BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue() + b"\r\n"
            body += f"--{boundary}--".encode()
            self.send_response(200)
            self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers)})
            self._reply(*state.stow_answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_headers_and_session_reach_the_server(fake_server: FakeServer, tmp_path: Path):
    with requests.Session() as session:
        session.headers["X-Site"] = "ward-7"
        with pytest.raises(StudyNotFoundError):
            fetch_ct_series(
                fake_server.url, "1.2.3", tmp_path / "d", session=session, headers={"Authorization": "Bearer t0k"}
            )
    (req,) = fake_server.requests
    assert req["path"].startswith("/dicom-web/studies/1.2.3/series")
    assert req["headers"]["Authorization"] == "Bearer t0k" and req["headers"]["X-Site"] == "ward-7"


def test_store_reports_instances_the_server_did_not_confirm(fake_server: FakeServer):
    a, b = image(generate_uid(), generate_uid(), 0), image(generate_uid(), generate_uid(), 1)
    confirmed = Dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = a.SOPClassUID
    item.ReferencedSOPInstanceUID = a.SOPInstanceUID
    confirmed.ReferencedSOPSequence = [item]
    fake_server.stow_answer = (200, confirmed.to_json_dict())
    with pytest.raises(StoreRejectedError) as err:
        store_instances(fake_server.url, [a, b])
    assert err.value.failed == {b.SOPInstanceUID: "not confirmed in the STOW-RS response"}
    assert_clean_error(err.value, b.SOPInstanceUID)


def test_store_reports_failed_sop_sequence_with_its_reason(fake_server: FakeServer):
    a = image(generate_uid(), generate_uid(), 0)
    answer, failed = Dataset(), Dataset()
    failed.ReferencedSOPClassUID = a.SOPClassUID
    failed.ReferencedSOPInstanceUID = a.SOPInstanceUID
    failed.FailureReason = 0xA700
    answer.FailedSOPSequence = [failed]
    fake_server.stow_answer = (200, answer.to_json_dict())
    with pytest.raises(StoreRejectedError, match="0xA700") as err:
        store_instances(fake_server.url, [a])
    assert err.value.failed == {a.SOPInstanceUID: "failure reason 0xA700"}
    assert len(fake_server.requests) == 1  # a rejected STOW is not retried


def test_http_errors_name_the_status(fake_server: FakeServer):
    fake_server.stow_answer = (401, None)
    with pytest.raises(DicomWebError, match="HTTP 401.*credentials"):
        store_instances(fake_server.url, [image(generate_uid(), generate_uid(), 0)])


def test_connect_bounds_retries():
    client = connect("http://127.0.0.1:1/dicom-web", max_attempts=2)
    assert client._max_attempts == 2
    with pytest.raises(ValueError, match="max_attempts"):
        connect("http://127.0.0.1:1/dicom-web", max_attempts=0)


def qido_series(study: str, series_uid: str, modality: str = "CT", count: int | None = None) -> dict:
    """One series in a QIDO-RS answer (DICOM JSON)."""
    item = {
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series_uid]},
        "00080060": {"vr": "CS", "Value": [modality]},
    }
    if count is not None:
        item["00201209"] = {"vr": "IS", "Value": [count]}
    return item


def test_a_series_uid_that_is_not_a_uid_is_refused(fake_server: FakeServer, tmp_path: Path):
    study = generate_uid()
    fake_server.qido_answer = [qido_series(study, "../../escape")]
    with pytest.raises(DicomWebError, match="invalid SeriesInstanceUID"):
        fetch_ct_series(fake_server.url, study, tmp_path / "d")
    assert not (tmp_path / "d").exists() and listing(tmp_path) == []


def test_an_incomplete_series_writes_nothing(fake_server: FakeServer, tmp_path: Path):
    study = generate_uid()
    slices = series(study, 2)
    fake_server.qido_answer = [qido_series(study, slices[0].SeriesInstanceUID, count=3)]
    fake_server.wado_instances = slices
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DicomWebError, match="arrived incomplete: 2 instances, the series search announced 3"):
        fetch_ct_series(fake_server.url, study, tmp_path)
    assert listing(tmp_path) == ["keep.txt"]
    fake_server.qido_answer = [qido_series(study, slices[0].SeriesInstanceUID, count=2)]  # now it is complete
    (folder,) = fetch_ct_series(fake_server.url, study, tmp_path)
    assert sorted(f.stem for f in folder.iterdir()) == sorted(ds.SOPInstanceUID for ds in slices)


def test_an_instance_of_another_series_is_refused(fake_server: FakeServer, tmp_path: Path):
    study = generate_uid()
    wanted, other = series(study, 1), series(study, 1)
    fake_server.qido_answer = [qido_series(study, wanted[0].SeriesInstanceUID)]
    fake_server.wado_instances = wanted + other
    with pytest.raises(DicomWebError, match="belongs to another study or series") as err:
        fetch_ct_series(fake_server.url, study, tmp_path / "d")
    assert_clean_error(err.value, other[0].SOPInstanceUID)
    assert not (tmp_path / "d").exists()
