"""``--dataset folder``: a site's own DICOM series / NIfTI volumes + a label CSV -> scan manifest.

Phantom series (mixed in one folder, nested at any depth) and a NIfTI volume are labelled by a hand-written CSV; the
manifest must hold exactly the labelled scans with the right labels, slice order (inferior -> superior) and slice
labels; every bad CSV raises naming the CSV, the line and the reason; ingest -> the head bundle's embed.json +
train.json runs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from monai_ng.cli import main
from monai_ng.cli.ingest import load_dataset_adapter
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.phantom import make_phantom_volume, write_dicom_series, write_nifti
from monai_ng.data.scan_manifest import read_scan_manifest
from preprocessing.labelled_folder import ADAPTER, build_folder_manifest, nifti_slice_count

PATIENT = "MRN-0042-SECRET"  # stands in for a hospital identifier; must never reach a message or the failures


@dataclass
class Series:
    uid: str
    study: str
    sops: list[str]  # inferior -> superior
    lesion: list[int]


def _series(
    folder: Path, n: int, seed: int, lesion: bool, study: str | None = None, extensionless: bool = False
) -> Series:
    vol = make_phantom_volume("head", n, size=16, lesion=lesion, seed=seed)
    recs = write_dicom_series(vol, folder, patient_id=PATIENT, study_uid=study, seed=seed, instance_numbers="shuffled")
    if extensionless:  # PACS exports often name files IM0001 ...: found by the DICM preamble
        for k, r in enumerate(recs):
            r.path = r.path.rename(r.path.parent / f"IM{seed}{k:04d}")
    return Series(
        recs[0].series_instance_uid,
        recs[0].study_instance_uid,
        [r.sop_instance_uid for r in recs],
        [int(r.lesion) for r in recs],
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Series], int]:
    """``a`` and ``b`` (files without extension) mixed in one folder, ``c`` five folders deep, ``d`` unlabeled,
    ``ct_01.nii.gz`` (7 slices)."""
    root = tmp_path_factory.mktemp("site")
    mixed = root / "export" / "2024"
    s = {
        "a": _series(mixed, 6, 0, True),
        "b": _series(mixed, 5, 1, False, extensionless=True),
        "c": _series(root / "p2" / "s1" / "x" / "y" / "z", 6, 2, True),
        "d": _series(root / "p3", 4, 3, False),
    }
    write_nifti(make_phantom_volume("head", 7, size=16, lesion=False, seed=4), root / "nifti" / "ct_01.nii.gz")
    return root, s, 7


def _labels(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _good_rows(s: dict[str, Series]) -> list[dict]:
    return [
        {"SeriesInstanceUID": s["a"].uid, "label": 1, "patient_id": "P1", "slice_labels": json.dumps(s["a"].lesion)},
        {"SeriesInstanceUID": s["b"].uid, "label": 0, "patient_id": "P1", "slice_labels": ""},
        {"StudyInstanceUID": s["c"].study, "label": 1, "patient_id": "P2", "slice_labels": ""},
        {"nifti_file": "ct_01.nii.gz", "label": 0, "patient_id": "P3", "slice_labels": json.dumps([0] * 7)},
    ]


def test_round_trip_mixed_nested_and_nifti(site, tmp_path: Path) -> None:
    root, s, n_nifti = site
    csv = _labels(tmp_path / "labels.csv", _good_rows(s))
    manifest, failures = build_folder_manifest(root, csv, workers=1, progress=False)
    rows = manifest.set_index("scan_id")
    assert sorted(rows.index) == sorted([s["a"].uid, s["b"].uid, s["c"].uid, "ct_01"])
    for key, label, patient in (("a", 1, "P1"), ("b", 0, "P1"), ("c", 1, "P2")):
        row = rows.loc[s[key].uid]
        assert row["slice_sop_uids"] == s[key].sops  # inferior -> superior from positions, not names / numbers
        assert (row["label"], row["patient_id"], row["dataset"]) == (label, patient, "folder")
        assert row["n_slices"] == len(row["slice_files"]) == len(s[key].sops)
        assert row["series_uid"] == s[key].uid and row["geometry_issues"] == []
        assert all(Path(f).parent.name == Path(row["slice_files"][0]).parent.name for f in row["slice_files"])
    assert all(Path(f).suffix == "" for f in rows.loc[s["b"].uid, "slice_files"])
    assert rows.loc[s["a"].uid, "slice_labels"] == s["a"].lesion and 1 in s["a"].lesion
    assert rows.loc[s["b"].uid, "slice_labels"] == [0] * 5  # negative scan without slice labels: every slice 0
    assert rows.loc[s["c"].uid, "slice_labels"] == [-1] * 6  # positive without slice labels: unknown
    nii = rows.loc["ct_01"]
    assert nii["slice_files"] == [str(root / "nifti" / "ct_01.nii.gz")] and nii["n_slices"] == n_nifti
    # the unlabeled series is skipped and recorded as such; nothing else fails
    assert failures == [(f"scan {s['d'].uid}", f"unlabeled: no row in {csv}; series skipped")]


@pytest.mark.filterwarnings("ignore:too few patients per class")
def test_cli_writes_a_valid_split_manifest_and_pseudonymizes(site, tmp_path: Path, capsys) -> None:
    root, s, _ = site
    csv = _labels(tmp_path / "labels.csv", [{**r, "patient_id": PATIENT + r["patient_id"]} for r in _good_rows(s)])
    key = tmp_path / "pseudonym.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    out = tmp_path / "m" / "manifest.csv"
    argv = ["ingest", "--dataset", "folder", "--root", str(root), "--labels", str(csv), "--out", str(out)]
    assert main([*argv, "--no-progress", "--pseudonymize-key-file", str(key)]) == 0
    manifest = read_scan_manifest(out)
    assert len(manifest) == 4 and {"split_1001", "split_2001", "split_3001"} <= set(manifest.columns)
    assert all(p.startswith("p") and PATIENT not in p for p in manifest["patient_id"])
    # patient-level: the two scans of P1 share a pseudonym and a split
    p1 = manifest[manifest["scan_id"].isin([s["a"].uid, s["b"].uid])]
    assert p1["patient_id"].nunique() == 1 and p1["split_1001"].nunique() == 1
    text = out.read_text() + (out.parent / "failures.csv").read_text() + "".join(capsys.readouterr())
    assert PATIENT not in text


def test_slice_label_csv_by_sop(site, tmp_path: Path) -> None:
    root, s, _ = site
    rows = [{k: v for k, v in r.items() if k != "slice_labels"} for r in _good_rows(s)]
    sop_rows = [{"SOPInstanceUID": u, "label": v} for u, v in zip(s["a"].sops, s["a"].lesion, strict=True)]
    sop_rows += [{"SOPInstanceUID": u, "label": v} for u, v in zip(s["c"].sops[1:], s["c"].lesion[1:], strict=True)]
    sop_rows.append({"SOPInstanceUID": "1.2.3.999", "label": 0})  # matches no slice
    slices = _labels(tmp_path / "slices.csv", sop_rows[::-1])  # order in the file does not matter
    manifest, failures = ADAPTER.build_manifest(
        root, progress=False, labels=_labels(tmp_path / "labels.csv", rows), slice_labels=slices
    )
    rows_by = manifest.set_index("scan_id")
    assert rows_by.loc[s["a"].uid, "slice_labels"] == s["a"].lesion
    assert rows_by.loc[s["c"].uid, "slice_labels"] == [-1, *s["c"].lesion[1:]]
    assert rows_by.loc[s["b"].uid, "slice_labels"] == [0] * 5
    reasons = dict(failures)
    assert reasons[f"scan {s['c'].uid}"].startswith("1 of 6 slices not in")
    assert "1 SOPInstanceUID(s) have no readable DICOM file" in reasons[str(slices)]


def test_study_with_several_ct_series_is_an_error(site, tmp_path: Path) -> None:
    root = tmp_path / "two"
    first = _series(root / "s1", 4, 5, False)
    _series(root / "s2", 4, 6, False, study=first.study)
    csv = _labels(tmp_path / "labels.csv", [{"StudyInstanceUID": first.study, "label": 0, "patient_id": "P"}])
    with pytest.raises(ValueError, match=rf"line 2: study {first.study} holds 2 CT series .*SeriesInstanceUID"):
        build_folder_manifest(root, csv, progress=False)


def _bad(s: dict[str, Series], case: str) -> tuple[list[dict], str]:
    rows = _good_rows(s)
    if case == "missing_columns":
        return [{k: v for k, v in r.items() if k != "patient_id"} for r in rows], r"lacks column\(s\) \['patient_id'\]"
    if case == "no_key_column":
        return [{"label": 0, "patient_id": "P"}], r"lacks column\(s\) \[\"one of \['SeriesInstanceUID'"
    if case == "unknown_series":
        rows[1]["SeriesInstanceUID"] = "1.2.3.4.5"
        return (
            rows,
            r"1 row\(s\) match no readable DICOM series or NIfTI file .*line 3 \(SeriesInstanceUID 1\.2\.3\.4\.5\)",
        )
    if case == "unknown_nifti":
        rows[3]["nifti_file"] = "ct_02"
        return rows, r"line 5 \(nifti_file ct_02\)"
    if case == "duplicate_key":
        return [*rows, rows[0]], rf"line 6: SeriesInstanceUID '{s['a'].uid}' already labelled on line 2"
    if case == "same_scan_twice":  # the study row and a series row name one series
        return [*rows, {**rows[0], "SeriesInstanceUID": s["c"].uid, "slice_labels": ""}], "line 6: labels the same scan"
    if case == "label_not_binary":
        rows[2]["label"] = 2
        return rows, r"line 4: label must be 0 or 1, got '2'"
    if case == "label_empty":
        rows[2]["label"] = ""
        return rows, r"line 4: label must be 0 or 1, got ''"
    if case == "two_keys":
        rows[0]["nifti_file"] = "ct_01"
        return rows, r"line 2: fill exactly one key column"
    if case == "empty_patient":
        rows[1]["patient_id"] = ""
        return rows, r"line 3: empty patient_id"
    if case == "slice_length":
        rows[0]["slice_labels"] = json.dumps(s["a"].lesion[:-1])
        return rows, rf"line 2: slice_labels has 5 entries but series {s['a'].uid} has 6 slices"
    if case == "nifti_slice_length":
        rows[3]["slice_labels"] = json.dumps([0] * 6)
        return rows, r"line 5: slice_labels has 6 entries but .*ct_01.nii.gz has 7 axial slices"
    if case == "slice_not_json":
        rows[0]["slice_labels"] = "0,1,1"
        return rows, r"line 2: slice_labels must be a non-empty JSON array"
    if case == "slice_value":
        rows[0]["slice_labels"] = json.dumps([0, 2, 0, 0, 0, 0])
        return rows, r"line 2: slice_labels must hold 0, 1 or -1"
    if case == "slice_contradicts":
        rows[1]["slice_labels"] = json.dumps([0, 1, 0, 0, 0])
        return rows, r"line 3: scan label 0 but slice\(s\) \[1\] are 1"
    raise AssertionError(case)


BAD_CASES = [
    "missing_columns",
    "no_key_column",
    "unknown_series",
    "unknown_nifti",
    "duplicate_key",
    "same_scan_twice",
    "label_not_binary",
    "label_empty",
    "two_keys",
    "empty_patient",
    "slice_length",
    "nifti_slice_length",
    "slice_not_json",
    "slice_value",
    "slice_contradicts",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_label_csv(site, tmp_path: Path, case: str) -> None:
    root, s, _ = site
    rows, pattern = _bad(s, case)
    rows = [{**r, "patient_id": PATIENT + r["patient_id"]} if r.get("patient_id") else r for r in rows]
    csv = _labels(tmp_path / "labels.csv", rows)
    with pytest.raises(ValueError, match=pattern) as info:
        build_folder_manifest(root, csv, progress=False)
    message = str(info.value)
    assert message.startswith(str(csv)) and PATIENT not in message


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (
            [{"SOPInstanceUID": "1.2", "label": 1}, {"SOPInstanceUID": "1.2", "label": 0}],
            "line 3: SOPInstanceUID '1.2'",
        ),
        ([{"SOPInstanceUID": "1.2", "label": "yes"}], "line 2: label must be 0 or 1"),
        ([{"SOP": "1.2", "label": 1}], r"lacks column\(s\) \['SOPInstanceUID'\]"),
    ],
)
def test_bad_slice_label_csv(site, tmp_path: Path, rows: list[dict], pattern: str) -> None:
    root, s, _ = site
    labels = _labels(
        tmp_path / "labels.csv", [{k: v for k, v in r.items() if k != "slice_labels"} for r in _good_rows(s)]
    )
    slices = _labels(tmp_path / "slices.csv", rows)
    with pytest.raises(ValueError, match=pattern):
        build_folder_manifest(root, labels, slices, progress=False)


def test_cli_fatal_errors_exit_2(site, tmp_path: Path, capsys) -> None:
    root, s, _ = site
    out = tmp_path / "m.csv"
    argv = ["ingest", "--dataset", "folder", "--root", str(root), "--out", str(out), "--no-progress"]
    assert main(argv) == 2  # no --labels and no <root>/labels.csv
    assert "pass --labels LABELS.csv" in capsys.readouterr().err
    rows = _good_rows(s)
    labels = _labels(tmp_path / "labels.csv", rows)
    slices = _labels(tmp_path / "slices.csv", [{"SOPInstanceUID": s["a"].sops[0], "label": 0}])
    assert main([*argv, "--labels", str(labels), "--slice-labels", str(slices)]) == 2
    assert "use one of the two" in capsys.readouterr().err
    assert not out.exists()


def test_registered_and_nifti_stem_or_relative_path(site, tmp_path: Path) -> None:
    root, s, n = site
    assert load_dataset_adapter("folder") is ADAPTER
    assert nifti_slice_count(root / "nifti" / "ct_01.nii.gz") == n
    for key in ("ct_01", "nifti/ct_01.nii.gz"):
        csv = _labels(tmp_path / "labels.csv", [{"nifti_file": key, "label": 1, "patient_id": "P"}])
        manifest, failures = build_folder_manifest(root, csv, progress=False)
        assert list(manifest["scan_id"]) == ["ct_01"] and manifest["slice_labels"][0] == [-1] * n
        assert len(failures) == 4 and all(r.startswith("unlabeled") for _, r in failures)


def test_end_to_end_head_bundle(tmp_path: Path) -> None:
    """ingest --dataset folder -> the head bundle's embed.json -> train.json for one epoch (tiny random encoder)."""
    from bundles.bundle_workspace import BUNDLES_DIR, FAST
    from monai.bundle import ConfigWorkflow

    name = "head_ct_hemorrhage_localization"
    if not (BUNDLES_DIR / name / "configs" / "metadata.json").is_file():
        pytest.skip(f"bundle {name} not found")
    bundle = tmp_path / name
    shutil.copytree(BUNDLES_DIR / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    root, rows = tmp_path / "dicom", []
    for i in range(12):
        positive = i % 2 == 0
        series = _series(root / f"patient{i // 2}" / f"study{i}", 6, 100 + i, positive)
        labels = json.dumps(series.lesion)
        rows.append(
            {"SeriesInstanceUID": series.uid, "label": int(positive), "patient_id": f"P{i}", "slice_labels": labels}
        )
    labels = _labels(tmp_path / "labels.csv", rows)
    manifest = tmp_path / "scans.csv"
    argv = ["ingest", "--dataset", "folder", "--root", str(root), "--labels", str(labels), "--out", str(manifest)]
    assert main([*argv, "--no-progress"]) == 0

    def workflow(config: str, kind: str | None, **override) -> ConfigWorkflow:
        wf = ConfigWorkflow(
            config_file=str(bundle / "configs" / config),
            meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=str(bundle / "configs" / "logging.conf"),
            workflow_type=kind,
            **{"bundle_root": str(bundle), **FAST, **override},
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        return wf

    store = tmp_path / "store"
    common = {"manifest_file": str(manifest), "dataset_dir": str(store)}
    workflow("embed.json", None, **common, num_workers=0, progress=False, amp="none", scans_per_shard=8)
    embedded = EmbeddingStore(store)
    truth = {r["SeriesInstanceUID"]: json.loads(r["slice_labels"]) for r in rows}
    assert sorted(embedded.scan_ids) == sorted(truth)
    for i, scan in enumerate(embedded.scan_ids):  # slice labels reach the bags inferior -> superior
        assert embedded.bag(i).slice_labels.tolist() == truth[scan]
    workflow("train.json", "train", dataset_dir=str(store), max_epochs=1, batch_size=4)
    assert (bundle / "models" / "model.pt").is_file()
