"""Per-scan JSON and all-scan CSV: exact content, round trips, atomic writes, no identifiers."""

from __future__ import annotations

import csv
import json
import os

import pytest

from monai_ng.reporting import atomic_file
from monai_ng.reporting.atomic_file import write_atomic
from monai_ng.reporting.result_files import (
    CSV_COLUMNS,
    read_results_csv,
    read_scan_json,
    write_results_csv,
    write_scan_json,
)
from monai_ng.reporting.scan_result import ScanResult, SliceScore


def test_scan_json_content_and_round_trip(tmp_path, scan_result):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    path = write_scan_json(scan_result, tmp_path, top_k=5)
    assert path == tmp_path / "scan001.json"
    data = json.loads(path.read_text())
    assert data["scan_probability"] == 0.87
    assert data["finding"] is True
    assert data["top_k"] == {"k": 5, "indices": [2, 3, 4, 5, 6]}
    assert [s["index"] for s in data["slices"]] == list(range(8))
    assert [s["z_mm"] for s in data["slices"]] == [-40.0 + 5 * j for j in range(8)]
    assert [s["sop_instance_uid"] for s in data["slices"]] == [s.sop_instance_uid for s in scan_result.slices]
    assert read_scan_json(path) == scan_result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan001.json"]  # no temporary file left


def test_json_and_csv_hold_no_identifier(tmp_path, scan_result, identifier_markers):
    write_scan_json(scan_result, tmp_path)
    write_results_csv([scan_result], tmp_path / "slices.csv")
    for name in ("scan001.json", "slices.csv"):
        raw = (tmp_path / name).read_bytes()
        for marker in identifier_markers:
            assert marker.encode() not in raw, (name, marker)


def test_csv_rows_are_exact(tmp_path, scan_result):
    non_dicom = ScanResult("nifti_7", 0.1, (SliceScore(0, 0.25), SliceScore(1, 0.75)), threshold=0.3)
    path = write_results_csv([scan_result, non_dicom], tmp_path / "all.csv", top_k=2)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 10
    first = rows[2]
    assert first == {
        "scan_id": "scan001",
        "scan_probability": "0.87",
        "threshold": "0.5",
        "finding": "1",
        "study_instance_uid": scan_result.study_instance_uid,
        "series_instance_uid": scan_result.series_instance_uid,
        "slice_index": "2",
        "score": "0.3",
        "z_mm": "-30.0",
        "sop_instance_uid": scan_result.slices[2].sop_instance_uid,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "top_k_rank": "1",
    }
    assert [r["top_k_rank"] for r in rows[:8]] == ["", "", "1", "2", "", "", "", ""]
    assert rows[8] == {
        "scan_id": "nifti_7",
        "scan_probability": "0.1",
        "threshold": "0.3",
        "finding": "0",
        "study_instance_uid": "",
        "series_instance_uid": "",
        "slice_index": "0",
        "score": "0.25",
        "z_mm": "",
        "sop_instance_uid": "",
        "sop_class_uid": "",
        "top_k_rank": "2",
    }
    assert read_results_csv(path) == [scan_result, non_dicom]


def test_csv_round_trip_of_awkward_floats(tmp_path):
    r = ScanResult("s", 1 / 3, (SliceScore(0, 1 / 7, -1e-7), SliceScore(1, 0.1 + 0.2, 2 / 3)))
    assert read_results_csv(write_results_csv([r], tmp_path / "a.csv")) == [r]


def test_csv_refuses_duplicate_scan_ids(tmp_path, scan_result):
    with pytest.raises(ValueError, match="scan_id 'scan001' appears more than once"):
        write_results_csv([scan_result, scan_result], tmp_path / "a.csv")
    assert not (tmp_path / "a.csv").exists()


def test_read_csv_reports_inconsistent_rows(tmp_path, scan_result):
    path = write_results_csv([scan_result], tmp_path / "a.csv")
    text = path.read_text().splitlines()
    text[3] = text[3].replace(",0.87,", ",0.86,", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"a\.csv:4: scan 'scan001' has scan-level columns that differ"):
        read_results_csv(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header must be"):
        read_results_csv(path)


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json: not a valid scan result"):
        read_scan_json(bad)


def test_unsafe_scan_id_never_reaches_the_writer(tmp_path):
    with pytest.raises(ValueError, match="scan_id '../evil' is not a safe file name: it contains /"):
        ScanResult("../evil", 0.5, (SliceScore(0, 1.0),))
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_is_a_clear_error(tmp_path, scan_result):
    with pytest.raises(FileNotFoundError, match="output folder .*nowhere does not exist"):
        write_scan_json(scan_result, tmp_path / "nowhere")
    with pytest.raises(TypeError, match="result must be a ScanResult, got dict"):
        write_scan_json({"scan_id": "x"}, tmp_path)


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, scan_result):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    path = write_scan_json(scan_result, tmp_path)
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt  # the run is stopped between writing the temporary file and the rename

    monkeypatch.setattr(atomic_file.os, "replace", crash)
    changed = ScanResult(scan_result.scan_id, 0.11, scan_result.slices)
    with pytest.raises(KeyboardInterrupt):
        write_scan_json(changed, tmp_path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan001.json"]


def test_write_atomic_creates_and_replaces_with_normal_permissions(tmp_path):
    target = tmp_path / "f.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == atomic_file._FILE_MODE
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        write_atomic(target, "text")
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, b"x")
