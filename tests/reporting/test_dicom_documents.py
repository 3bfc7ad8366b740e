"""KOS and Secondary Capture: parse with pydicom and dcmtk, every reference resolves, exactly the top-k flagged."""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage

from monai_ng.reporting.attention_figure import render_attention_figure
from monai_ng.reporting.dicom_documents import (
    build_attention_secondary_capture,
    build_key_object_selection,
    write_dicom_documents,
)
from monai_ng.reporting.scan_result import ScanResult, SliceScore

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def written(tmp_path, ct_headers, scan_result):
    out = tmp_path / "out"
    out.mkdir()
    rgb = render_attention_figure(scan_result, top_k=5)
    paths = write_dicom_documents(ct_headers, scan_result, out, rgb=rgb, top_k=5)
    return paths, rgb


def _content_refs(ds):
    refs = []
    for item in ds.ContentSequence:
        if item.ValueType == "IMAGE":
            ref = item.ReferencedSOPSequence[0]
            refs.append((ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID))
    return refs


def _evidence_refs(ds):
    out = []
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for sop in series.ReferencedSOPSequence:
                out.append((study.StudyInstanceUID, series.SeriesInstanceUID, sop.ReferencedSOPInstanceUID))
    return out


def test_files_are_named_by_scan_id(written, tmp_path):
    paths, _ = written
    assert paths == {"kos": tmp_path / "out" / "scan001_kos.dcm", "sc": tmp_path / "out" / "scan001_sc.dcm"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan001_kos.dcm", "scan001_sc.dcm"]


def test_kos_flags_exactly_the_top_k_and_references_resolve(written, ct_headers, scan_result):
    kos = pydicom.dcmread(written[0]["kos"])
    assert kos.SOPClassUID == KOS_CLASS and kos.Modality == "KO"
    input_uids = {str(ds.SOPInstanceUID) for ds in ct_headers}
    top = [s.sop_instance_uid for s in scan_result.top_k(5)]
    content = _content_refs(kos)
    assert [uid for _, uid in content] == top  # best first
    assert all(cls == CTImageStorage for cls, _ in content)
    evidence = _evidence_refs(kos)
    assert sorted(uid for _, _, uid in evidence) == sorted(top)
    assert {uid for _, _, uid in evidence} <= input_uids
    assert {(st, se) for st, se, _ in evidence} == {(scan_result.study_instance_uid, scan_result.series_instance_uid)}
    # document title, device observer, description text with the scan-level result
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == ("113000", "DCM", "Of Interest")
    texts = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in kos.ContentSequence if i.ValueType == "TEXT"
    }
    assert texts["Key Object Description"] == (
        "NG attention MIL: P(finding)=0.87; finding present (threshold 0.50); top-5 slices by attention, "
        "0-based inferior-to-superior index (attention): 2 (a=0.300), 3 (a=0.200), 4 (a=0.200), 5 (a=0.120), "
        "6 (a=0.080)"
    )
    assert texts["Device Observer Name"] == "NG attention MIL"
    observer = [i for i in kos.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Observer Type"]
    assert observer[0].ConceptCodeSequence[0].CodeValue == "121007"  # Device


def test_documents_join_the_source_study_in_new_series(written, ct_headers):
    kos = pydicom.dcmread(written[0]["kos"])
    sc = pydicom.dcmread(written[0]["sc"])
    src = ct_headers[0]
    for doc in (kos, sc):
        assert doc.StudyInstanceUID == src.StudyInstanceUID
        assert doc.SeriesInstanceUID != src.SeriesInstanceUID
        assert doc.SOPInstanceUID not in {ds.SOPInstanceUID for ds in ct_headers}
        # Patient and General Study modules copied: the only place identifiers are written
        assert (doc.PatientName, doc.PatientID, doc.PatientBirthDate, doc.AccessionNumber) == (
            src.PatientName,
            src.PatientID,
            src.PatientBirthDate,
            src.AccessionNumber,
        )
        assert (doc.StudyDate, doc.StudyTime, doc.StudyID) == (src.StudyDate, src.StudyTime, src.StudyID)
    assert kos.SeriesInstanceUID != sc.SeriesInstanceUID
    assert pydicom.uid.UID(kos.SOPInstanceUID).is_valid and pydicom.uid.UID(sc.SeriesInstanceUID).is_valid


def test_secondary_capture_holds_the_figure(written, ct_headers, scan_result):
    paths, rgb = written
    sc = pydicom.dcmread(paths["sc"])
    assert sc.SOPClassUID == SC_CLASS and sc.Modality == "OT"
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BitsAllocated) == ("RGB", 3, 8)
    assert (sc.Rows, sc.Columns) == rgb.shape[:2]
    np.testing.assert_array_equal(sc.pixel_array, rgb)
    assert (sc.ConversionType, sc.BurnedInAnnotation) == ("WSD", "NO")
    assert [i.ReferencedSOPInstanceUID for i in sc.SourceImageSequence] == [
        s.sop_instance_uid for s in scan_result.slices
    ]
    assert {i.ReferencedSOPInstanceUID for i in sc.SourceImageSequence} == {ds.SOPInstanceUID for ds in ct_headers}


def _run(tool, path):
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, lines


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk's dsrdump is not installed (Debian package dcmtk)")
def test_dsrdump_reads_the_kos(written, scan_result):
    rc, lines = _run("dsrdump", written[0]["kos"])
    assert rc == 0, lines
    assert not [ln for ln in lines if ln.startswith("E:") or "Error" in ln], lines
    assert lines[0] == "Key Object Selection Document"
    assert any('<CONTAINER:(,,"Of Interest")=CONTINUOUS>' in ln for ln in lines)
    assert sum('<contains IMAGE:(,,"Source")=(CT image,)>' in ln for ln in lines) == 5


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk's dcmdump is not installed (Debian package dcmtk)")
def test_dcmdump_reads_both_documents(written):
    for path in written[0].values():
        rc, lines = _run("dcmdump", path)
        assert rc == 0, lines
        assert not [ln for ln in lines if ln.startswith("E:") or "Error" in ln], lines


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed; IOD check not run"
)
def test_dciodvfy_finds_no_error(written):
    for path in written[0].values():
        _, lines = _run("dciodvfy", path)
        assert not [ln for ln in lines if ln.startswith("Error")], lines


def test_top_k_beyond_slice_count_flags_every_slice(tmp_path, make_series, make_result):
    headers = make_series(tmp_path / "ct", n=3)
    result = make_result(headers, scores=(0.2, 0.5, 0.3))
    kos = build_key_object_selection(headers, result, top_k=10)
    assert [uid for _, uid in _content_refs(kos)] == [headers[i].SOPInstanceUID for i in (1, 2, 0)]


def test_extra_source_datasets_are_ignored_but_missing_ones_refused(tmp_path, ct_headers, scan_result):
    localizer = copy.deepcopy(ct_headers[0])
    localizer.SOPInstanceUID = pydicom.uid.generate_uid()
    kos = build_key_object_selection([*ct_headers, localizer], scan_result, top_k=2)
    assert localizer.SOPInstanceUID not in {uid for _, uid in _content_refs(kos)}
    with pytest.raises(ValueError, match=r"slice 7 SOPInstanceUID .* is not among the source_datasets"):
        build_key_object_selection(ct_headers[:-1], scan_result)


def test_missing_type2_attributes_are_written_empty(tmp_path, ct_headers, scan_result):
    for ds in ct_headers:
        del ds.PatientBirthDate, ds.AccessionNumber, ds.ReferringPhysicianName
    out = tmp_path / "out"
    out.mkdir()
    kos = pydicom.dcmread(write_dicom_documents(ct_headers, scan_result, out)["kos"])
    assert kos.PatientBirthDate == "" and kos.AccessionNumber == ""
    assert kos.PatientID == ct_headers[0].PatientID


def test_two_studies_are_refused_and_nothing_written(tmp_path, make_series, make_result):
    a = make_series(tmp_path / "a")
    b = make_series(tmp_path / "b")
    mixed = a[:4] + b[4:]
    result = make_result(mixed)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="scan 'scan001': source_datasets come from 2 different studies"):
        write_dicom_documents(mixed, result, out, rgb=np.zeros((4, 4, 3), np.uint8))
    assert list(out.iterdir()) == []


def test_mismatched_inputs_give_clear_errors(tmp_path, make_series, ct_headers, scan_result):
    other = make_series(tmp_path / "other", study_uid=str(ct_headers[0].StudyInstanceUID))
    with pytest.raises(ValueError, match="come from 2 different series"):
        build_key_object_selection([*ct_headers, *other], scan_result)
    with pytest.raises(ValueError, match=r"SOPInstanceUID .* appears twice"):
        build_key_object_selection([*ct_headers, ct_headers[0]], scan_result)
    with pytest.raises(ValueError, match="source_datasets is empty"):
        build_key_object_selection([], scan_result)
    with pytest.raises(TypeError, match="must be a pydicom Dataset, got str"):
        build_key_object_selection(["x"], scan_result)
    no_uids = ScanResult("nifti", 0.5, (SliceScore(0, 1.0),))
    with pytest.raises(ValueError, match="has no SOPInstanceUIDs"):
        build_key_object_selection(ct_headers, no_uids)
    wrong_study = ScanResult(
        scan_result.scan_id, 0.5, scan_result.slices, study_instance_uid="1.2.3", series_instance_uid=None
    )
    with pytest.raises(ValueError, match="result study_instance_uid 1.2.3 is not the source study"):
        build_key_object_selection(ct_headers, wrong_study)
    with pytest.raises(ValueError, match=r"rgb must be an \[H, W, 3\] uint8"):
        build_attention_secondary_capture(ct_headers, scan_result, np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="result must be a ScanResult"):
        write_dicom_documents(ct_headers, None, tmp_path)
