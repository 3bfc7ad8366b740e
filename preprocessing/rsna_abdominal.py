"""RSNA Abdominal Trauma Detection 2023 -> scan manifest.

Download layout: ``train_images/<patient_id>/<series_id>/<instance_number>.dcm``, ``train.csv`` (one row per
patient: ``bowel_healthy, bowel_injury, extravasation_healthy, extravasation_injury, kidney_{healthy,low,high},
liver_*, spleen_*, any_injury``), ``image_level_labels.csv`` (``patient_id, series_id, instance_number,
injury_name`` with ``injury_name`` in ``{Bowel, Active_Extravasation}``) and ``train_series_meta.csv``
(``patient_id, series_id, aortic_hu, incomplete_organ``). A scan is a series; labels are per patient and apply to
each of the patient's series; slices are ordered along the slice normal.

Slice-level truth exists only for bowel injury and active extravasation (``image_level_labels.csv``). Targets:

* ``bowel_or_extravasation`` (default, as the paper): scan label = ``bowel_injury or extravasation_injury``; a
  slice is 1 when ``image_level_labels.csv`` lists it (either injury), else 0; a positive series with no listed
  image gets -1 (unknown) on every slice.
* ``bowel`` / ``extravasation``: the same for one injury.
* ``any_injury``, ``kidney``, ``liver``, ``spleen``: scan labels only (organ label = not ``<organ>_healthy``);
  slices of negative scans are 0 (nothing is injured anywhere), slices of positive scans -1.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd

from monai_ng.data.rsna_schema import ABDOMINAL_IMAGE_COLUMNS as _IMAGE_COLUMNS
from monai_ng.data.rsna_schema import ABDOMINAL_IMAGE_CSV as IMAGE_CSV
from monai_ng.data.rsna_schema import ABDOMINAL_SERIES_COLUMNS as _SERIES_COLUMNS
from monai_ng.data.rsna_schema import ABDOMINAL_SERIES_CSV as SERIES_CSV
from monai_ng.data.rsna_schema import ABDOMINAL_TRAIN_COLUMNS as _TRAIN_COLUMNS
from monai_ng.data.rsna_schema import ABDOMINAL_TRAIN_CSV as TRAIN_CSV
from monai_ng.data.scan_manifest import scan_manifest_row
from monai_ng.io.header_scan import group_by_series
from preprocessing.rsna_common import RsnaAdapter, order_or_record, read_dicom_headers, require_dir

__all__ = [
    "ABDOMINAL_TARGETS",
    "ADAPTER",
    "AbdominalAdapter",
    "IMAGE_CSV",
    "SERIES_CSV",
    "TRAIN_CSV",
    "build_abdominal_manifest",
    "read_abdominal_tables",
]

ABDOMINAL_TARGETS = ("bowel_or_extravasation", "bowel", "extravasation", "any_injury", "kidney", "liver", "spleen")
_INJURY_NAMES = {"bowel": ("Bowel",), "extravasation": ("Active_Extravasation",)}
_INJURY_NAMES["bowel_or_extravasation"] = _INJURY_NAMES["bowel"] + _INJURY_NAMES["extravasation"]


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: CSV not found")
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (found {list(df.columns)})")
    for c in ("patient_id", "series_id", "instance_number"):
        if c in df.columns:
            values = pd.to_numeric(df[c], errors="coerce")
            if values.isna().any():
                raise ValueError(
                    f"{path}: column {c} must be integer ids, got e.g. {df[c][values.isna()].head(3).tolist()}"
                )
            df[c] = values.astype("int64").astype(str)
    return df


def read_abdominal_tables(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Read and check ``train.csv``, ``image_level_labels.csv`` and (optional) ``train_series_meta.csv``.

    Returns:
        ``(train indexed by patient_id, image-level labels, series meta or None)``; ids are strings.
    """
    root = Path(root)
    train = _read(root / TRAIN_CSV, _TRAIN_COLUMNS)
    for c in _TRAIN_COLUMNS[1:]:
        if not train[c].isin([0, 1]).all():
            raise ValueError(f"{root / TRAIN_CSV}: column {c} must be 0 or 1")
    if train["patient_id"].duplicated().any():
        raise ValueError(
            f"{root / TRAIN_CSV}: duplicated patient_id {train['patient_id'][train['patient_id'].duplicated()].head(3).tolist()}"
        )
    images = _read(root / IMAGE_CSV, _IMAGE_COLUMNS)
    bad = sorted(set(images["injury_name"]) - set(_INJURY_NAMES["bowel_or_extravasation"]))
    if bad:
        raise ValueError(f"{root / IMAGE_CSV}: unknown injury_name {bad[:5]} (expected Bowel, Active_Extravasation)")
    series = _read(root / SERIES_CSV, _SERIES_COLUMNS) if (root / SERIES_CSV).is_file() else None
    return train.set_index("patient_id"), images, series


def _scan_label(row: pd.Series, target: str) -> int:
    if target == "bowel_or_extravasation":
        return int(row["bowel_injury"] or row["extravasation_injury"])
    if target in ("bowel", "extravasation"):
        return int(row[f"{target}_injury"])
    if target == "any_injury":
        return int(row["any_injury"])
    return int(1 - row[f"{target}_healthy"])


def build_abdominal_manifest(
    root: str | os.PathLike, workers: int = 1, progress: bool = True, target: str = "bowel_or_extravasation"
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Build the scan manifest of an RSNA abdominal trauma download.

    Args:
        root: folder holding the CSVs and ``train_images/``.
        workers: header-reading processes.
        progress: show a progress bar.
        target: one of ``ABDOMINAL_TARGETS`` (see module docstring for which have slice-level truth).

    Returns:
        ``(manifest, failures)``; the manifest also has ``aortic_hu`` and ``incomplete_organ`` when
        ``train_series_meta.csv`` exists, and ``target``.
    """
    if target not in ABDOMINAL_TARGETS:
        raise ValueError(f"target must be one of {ABDOMINAL_TARGETS}, got {target!r}")
    root = require_dir(Path(root))
    train, images, series_meta = read_abdominal_tables(root)
    image_dir = require_dir(root / "train_images", "train_images/<patient>/<series>/<n>.dcm")
    headers, failures = read_dicom_headers(image_dir, root, workers, progress)
    names = _INJURY_NAMES.get(target, ())
    positives: dict[tuple[str, str], set[str]] = {}
    for r in images.itertuples(index=False):
        if r.injury_name in names:
            positives.setdefault((r.patient_id, r.series_id), set()).add(r.instance_number)
    meta = series_meta.set_index("series_id") if series_meta is not None else None
    rows = []
    for _, group in group_by_series(headers).items():
        # the folder names are the dataset's ids; the series UID header is kept for reference
        rel = Path(group[0].path).relative_to(image_dir).parts
        if len(rel) != 3:
            failures.extend((h.path, "not at train_images/<patient_id>/<series_id>/<n>.dcm") for h in group)
            continue
        patient_id, series_id = rel[0], rel[1]
        if any(Path(h.path).relative_to(image_dir).parts[:2] != (patient_id, series_id) for h in group):
            failures.append((f"scan {series_id}", "one SeriesInstanceUID spread over several series folders; dropped"))
            continue
        if patient_id not in train.index:
            failures.append((f"scan {series_id}", f"patient_id {patient_id} not in {TRAIN_CSV}; scan dropped"))
            continue
        result = order_or_record(group, series_id, failures)
        if result is None:
            continue
        ordered, geometry = result
        label = _scan_label(train.loc[patient_id], target)
        instances = [str(h.instance_number) if h.instance_number is not None else Path(h.path).stem for h in ordered]
        listed = positives.get((patient_id, series_id), set())
        if label == 0:
            if listed:
                failures.append(
                    (f"scan {series_id}", f"{IMAGE_CSV} lists injured images of a negative patient; dropped")
                )
                continue
            slice_labels = [0] * len(ordered)
        elif names and listed:
            slice_labels = [int(i in listed) for i in instances]
            missing = sorted(listed - set(instances))
            if missing:
                failures.append((f"scan {series_id}", f"{IMAGE_CSV} instance numbers without a file: {missing[:5]}"))
        else:
            slice_labels = [-1] * len(ordered)
        row = scan_manifest_row(series_id, patient_id, label, ordered, slice_labels, "abdominal", geometry.issues)
        row["target"] = target
        if meta is not None and series_id in meta.index:
            row["aortic_hu"] = float(meta.loc[series_id, "aortic_hu"])
            row["incomplete_organ"] = int(meta.loc[series_id, "incomplete_organ"])
        rows.append(row)
    return pd.DataFrame(rows), failures


class AbdominalAdapter(RsnaAdapter):
    """``monai-ng ingest --dataset abdominal [--target T]``: :func:`build_abdominal_manifest`."""

    name = "abdominal"
    description = "RSNA Abdominal Trauma Detection 2023"
    build = staticmethod(build_abdominal_manifest)

    def add_arguments(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--target",
            default="bowel_or_extravasation",
            choices=ABDOMINAL_TARGETS,
            help="abdominal only: label to build (only bowel / extravasation have slice-level truth)",
        )

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"target": args.target}


#: The adapter registered under the ``monai_ng.dataset_adapters`` entry point ``abdominal``.
ADAPTER = AbdominalAdapter()
