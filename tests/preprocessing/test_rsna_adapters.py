"""RSNA adapters (ICH / PE / abdominal) against the phantom's ground truth; manifest round trip; splits; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_ng.cli import main
from monai_ng.data.phantom import write_rsna_abdominal, write_rsna_ich, write_rsna_pe
from monai_ng.data.scan_manifest import (
    LIST_COLUMNS,
    read_scan_manifest,
    validate_scan_manifest,
    write_scan_manifest,
)
from monai_ng.data.splits import add_split_columns, patient_level_split
from preprocessing.rsna_abdominal import build_abdominal_manifest
from preprocessing.rsna_ich import build_ich_manifest
from preprocessing.rsna_pe import build_pe_manifest


def _check_against_truth(manifest: pd.DataFrame, truth: pd.DataFrame) -> None:
    assert sorted(manifest["scan_id"]) == sorted(str(s) for s in truth["scan_id"])
    t = truth.assign(scan_id=truth["scan_id"].astype(str)).set_index("scan_id")
    for row in manifest.itertuples(index=False):
        ref = t.loc[row.scan_id]
        assert row.slice_sop_uids == list(ref["sop_uids"]), row.scan_id  # inferior -> superior
        assert row.slice_labels == [int(v) for v in ref["slice_labels"]], row.scan_id
        assert row.label == int(ref["label"]) and row.patient_id == str(ref["patient_id"])
        assert row.n_slices == len(row.slice_files) == int(ref["n_slices"])
        assert row.geometry_issues == []


@pytest.fixture(scope="module")
def ich_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("ich")
    return root, write_rsna_ich(root, n_scans=5, seed=0, slices=(5, 8), size=16)


def test_ich_matches_truth(ich_root: tuple[Path, pd.DataFrame]) -> None:
    root, truth = ich_root
    manifest, failures = build_ich_manifest(root, workers=1, progress=False)
    assert failures == []
    _check_against_truth(manifest, truth)
    assert set(manifest["dataset"]) == {"ich"}
    # slice files really are the files of those SOPs
    row = manifest.iloc[0]
    assert [Path(f).stem for f in row["slice_files"]] == row["slice_sop_uids"]


def test_ich_parallel_equals_serial(ich_root: tuple[Path, pd.DataFrame]) -> None:
    root, _ = ich_root
    serial, _ = build_ich_manifest(root, workers=1, progress=False)
    parallel, _ = build_ich_manifest(root, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_pe_matches_truth(tmp_path: Path) -> None:
    truth = write_rsna_pe(tmp_path, n_scans=4, seed=3, slices=(5, 8), size=16)
    manifest, failures = build_pe_manifest(tmp_path, progress=False)
    assert failures == []
    _check_against_truth(manifest, truth)
    # split key is the study
    csv = pd.read_csv(tmp_path / "train.csv", dtype=str)
    study_of = dict(zip(csv["SeriesInstanceUID"], csv["StudyInstanceUID"], strict=True))
    assert all(study_of[r.scan_id] == r.patient_id for r in manifest.itertuples())


def test_pe_indeterminate_dropped(tmp_path: Path) -> None:
    truth = write_rsna_pe(tmp_path, n_scans=3, seed=4, slices=(4, 5), size=16, indeterminate_rate=1.0)
    with pytest.raises(ValueError, match="no scan could be ingested"):
        from monai_ng.cli.ingest import ingest

        ingest("pe", tmp_path, tmp_path / "m.csv", progress=False)
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert len(failures) == len(truth) and failures["reason"].str.contains("indeterminate").all()


@pytest.fixture(scope="module")
def abdominal_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("abd")
    return root, write_rsna_abdominal(root, n_patients=4, seed=4, slices=(4, 6), size=16, organ_injury_rate=0.5)


def test_abdominal_matches_truth(abdominal_root: tuple[Path, pd.DataFrame]) -> None:
    root, truth = abdominal_root
    manifest, failures = build_abdominal_manifest(root, progress=False)
    assert failures == []
    _check_against_truth(manifest, truth)
    meta = pd.read_csv(root / "train_series_meta.csv")
    aortic = dict(zip(meta["series_id"].astype(str), meta["aortic_hu"], strict=True))
    assert all(r.aortic_hu == aortic[r.scan_id] for r in manifest.itertuples())


def test_abdominal_targets(abdominal_root: tuple[Path, pd.DataFrame]) -> None:
    root, truth = abdominal_root
    t = truth.assign(scan_id=truth["scan_id"].astype(str)).set_index("scan_id")
    # the fixture holds a bowel, an extravasation, an organ-only and a fully negative patient
    assert {"Bowel", "Active_Extravasation", ""} <= set(truth["injury_name"])
    assert set(truth.loc[truth["label"] == 0, "any_injury"]) == {0, 1}
    bowel, _ = build_abdominal_manifest(root, progress=False, target="bowel")
    for r in bowel.itertuples():
        injury = t.loc[r.scan_id, "injury_name"]
        assert r.label == int(injury == "Bowel")
        if injury == "Bowel":
            assert r.slice_labels == [int(v) for v in t.loc[r.scan_id, "slice_labels"]] and 1 in r.slice_labels
        else:  # extravasation or negative patient: no bowel injury on any slice
            assert r.slice_labels == [0] * r.n_slices
    anyinj, _ = build_abdominal_manifest(root, progress=False, target="any_injury")
    for r in anyinj.itertuples():
        assert r.label == int(t.loc[r.scan_id, "any_injury"])
        assert r.slice_labels == ([-1] * r.n_slices if r.label else [0] * r.n_slices)  # no slice truth
    with pytest.raises(ValueError, match="target must be one of"):
        build_abdominal_manifest(root, progress=False, target="heart")


def _toy_manifest(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scan_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "series_uid": [f"1.2.{i}" for i in range(n)],
            "n_slices": [2] * n,
            "slice_files": [[f"/d/a, b{i}.dcm", f'/d/"q"{i}.dcm'] for i in range(n)],
            "slice_labels": [[-1, i % 2] for i in range(n)],
            "slice_sop_uids": [[f"1.{i}.1", f"1.{i}.2"] for i in range(n)],
            "geometry_issues": [[] if i else ["gap of 3 mm"] for i in range(n)],
            "dataset": ["ich"] * n,
        }
    )


def test_manifest_csv_round_trip(tmp_path: Path) -> None:
    df = _toy_manifest()
    write_scan_manifest(df, tmp_path / "m.csv")
    raw = pd.read_csv(tmp_path / "m.csv")
    assert json.loads(raw.loc[0, "slice_files"]) == df.loc[0, "slice_files"]  # documented JSON encoding
    back = read_scan_manifest(tmp_path / "m.csv")
    for c in df.columns:
        assert back[c].tolist() == df[c].tolist(), c


def test_manifest_parquet_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    df = _toy_manifest()
    write_scan_manifest(df, tmp_path / "m.parquet")
    back = read_scan_manifest(tmp_path / "m.parquet")
    for c in LIST_COLUMNS:
        assert back[c].tolist() == df[c].tolist()


def test_manifest_validation_errors() -> None:
    df = _toy_manifest()
    with pytest.raises(ValueError, match="lacks column"):
        validate_scan_manifest(df.drop(columns=["slice_labels"]))
    bad = df.copy()
    bad.at[1, "slice_labels"] = [0]
    with pytest.raises(ValueError, match="scan 's1': slice_labels has 1 entries"):
        validate_scan_manifest(bad)
    bad = df.copy()
    bad.at[2, "label"] = 2
    with pytest.raises(ValueError, match="scan 's2': label 2"):
        validate_scan_manifest(bad)
    with pytest.raises(ValueError, match="scan 's0' appears more than once"):
        validate_scan_manifest(pd.concat([df, df.iloc[:1]]))


def test_patient_level_splits() -> None:
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(120) for _ in range(int(rng.integers(1, 3)))]
    pos = {f"p{i}" for i in range(0, 120, 3)}  # 40 positive patients
    labels = [int(p in pos) for p in patients]
    splits = {seed: patient_level_split(patients, labels, seed) for seed in (1001, 2001, 3001)}
    for s in splits.values():
        assert set(s) == set(patients)  # every patient exactly once: no patient in two parts
        counts = pd.Series(s).value_counts()
        assert counts["test"] == 20 and counts["val"] == 20 and counts["train"] == 80  # 1/6, then 1/5 of 100
        test_pos = sum(1 for p, v in s.items() if v == "test" and p in pos)
        assert 6 <= test_pos <= 7  # stratified: 1/3 of 20
    assert splits[1001] != splits[2001] != splits[3001]
    assert patient_level_split(patients, labels, 1001) == splits[1001]  # deterministic
    df = add_split_columns(pd.DataFrame({"patient_id": patients, "label": labels}))
    assert df.groupby("patient_id")["split_1001"].nunique().max() == 1


def test_cli_end_to_end(ich_root: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, truth = ich_root
    out = tmp_path / "out" / "ich.csv"
    rc = main(["ingest", "--dataset", "ich", "--root", str(root), "--out", str(out), "--no-progress"])
    assert rc == 0
    m = read_scan_manifest(out)
    _check_against_truth(m.drop(columns=[c for c in m.columns if c.startswith("split_")]), truth)
    assert {"split_1001", "split_2001", "split_3001"} <= set(m.columns)
    assert set(m["split_1001"]) <= {"train", "val", "test"}
    assert (tmp_path / "out" / "failures.csv").is_file()
