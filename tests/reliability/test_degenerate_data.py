"""Degenerate inputs are refused before anything is written: tiny or one-class stores, empty patient ids; oblique
series are reported; patient ids can be pseudonymised with a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_ng.cli import main
from monai_ng.data import EmbeddingStoreWriter
from monai_ng.data.scan_manifest import (
    pseudonymize_patient_ids,
    read_pseudonym_key,
    validate_scan_manifest,
)
from monai_ng.experiment import MethodSpec, run_experiment
from monai_ng.io.dicom_header import SliceHeader, describe_error, shown_value
from monai_ng.io.series_geometry import analyze_series_geometry


def _store(path: Path, patients: list[str], labels: list[int]) -> Path:
    rng = np.random.default_rng(0)
    with EmbeddingStoreWriter(path, dim=4, dtype="float32") as writer:
        for i, (patient, label) in enumerate(zip(patients, labels, strict=True)):
            writer.add_scan(f"s{i}", patient, label, rng.normal(size=(5, 4)), np.zeros(5, np.int8) + label)
    return path


@pytest.mark.parametrize(
    "patients, labels, reason",
    [
        (["a", "a", "b", "b"], [0, 1, 0, 1], "2 patient"),
        (["a", "b", "c", "d", "e", "f"], [0] * 6, r"every scan has label \[0\]"),
        # 4 patients, 2 per class: the test part is one patient, so one class only
        (["a", "b", "c", "d"], [0, 1, 0, 1], r"the split with seed 1001 has 1 (val|test) scan\(s\), all with label"),
    ],
)
def test_experiment_refuses_unusable_stores_before_writing(tmp_path, patients, labels, reason, capsys) -> None:
    store = _store(tmp_path / "store", patients, labels)
    out = tmp_path / "exp"
    with pytest.raises(ValueError, match=reason):
        run_experiment(store, out, [MethodSpec("max pool", "max_pool")])
    assert not out.exists()
    rc = main(["experiment", "--data", str(store), "--out", str(out), "--methods", "max pool", "--epochs", "1"])
    assert rc == 2 and not out.exists()
    assert "monai-ng experiment: error:" in capsys.readouterr().err


def test_empty_patient_id_is_refused() -> None:
    frame = pd.DataFrame(
        {"scan_id": ["s0", "s1"], "patient_id": ["p0", " "], "label": [0, 1], "slice_files": ["a", "b"]}
    )
    with pytest.raises(ValueError, match=r"scan 's1': empty patient_id"):
        validate_scan_manifest(frame, required=("scan_id", "patient_id", "label", "slice_files"))


def test_pseudonyms_are_keyed_hashes(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("  0123456789abcdef0123456789abcdef\n")
    key = read_pseudonym_key(key_file)
    frame = pd.DataFrame({"patient_id": ["ID_1", "ID_2", "ID_1"], "scan_id": ["a", "b", "c"]})
    out = pseudonymize_patient_ids(frame, key)
    expected = "p" + hmac.new(key, b"ID_1", hashlib.sha256).hexdigest()[:32]
    assert out["patient_id"].tolist()[0] == expected == out["patient_id"].tolist()[2]
    assert len(set(out["patient_id"])) == 2 and frame["patient_id"].tolist()[0] == "ID_1"
    assert pseudonymize_patient_ids(frame, b"another key of 16+ bytes")["patient_id"][0] != expected
    key_file.write_text("short")
    with pytest.raises(ValueError, match="at least 16"):
        read_pseudonym_key(key_file)


def _headers(iop: tuple[float, ...], step: np.ndarray, n: int = 4) -> list[SliceHeader]:
    return [
        SliceHeader(f"{k}.dcm", f"1.{k}", "1.2", "1.3", "p", tuple(k * step), iop, (1.0, 1.0), 4, 4)  # type: ignore[arg-type]
        for k in range(n)
    ]


def test_oblique_acquisition_is_reported_and_tilt_still_flagged() -> None:
    a = np.radians(10)
    iop = (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))  # rotated about x by 10 degrees
    normal = np.cross(iop[:3], iop[3:])
    geometry = analyze_series_geometry(_headers(iop, 2.0 * normal))  # slices step along the normal, no tilt tag
    assert geometry.oblique and round(geometry.oblique_degrees, 3) == 10.0 and geometry.tilt_degrees < 1e-6
    assert any("oblique acquisition" in i and "10.0 degrees" in i for i in geometry.issues)
    axial = analyze_series_geometry(_headers((1, 0, 0, 0, 1, 0), np.array([0.0, 0.0, 2.0])))
    assert not axial.oblique and not axial.issues
    sheared = analyze_series_geometry(_headers((1, 0, 0, 0, 1, 0), np.array([0.0, 0.35, 2.0])))  # gantry tilt
    assert not sheared.oblique and any("gantry tilt" in i for i in sheared.issues)


def test_error_text_never_quotes_values() -> None:
    assert describe_error(ValueError("invalid literal for int() with base 10: 'DOE^JOHN'")) == (
        "ValueError: invalid literal for int() with base 10: <value>"
    )
    assert shown_value("1,5") == "'1,5'" and "not shown" in shown_value("1\x00\x10\x00PN\x08\x00DOE^JOHN")
