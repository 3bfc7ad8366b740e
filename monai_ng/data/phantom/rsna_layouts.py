"""Phantom downloads in the layouts of the three RSNA challenges (ICH 2019, PE 2020, abdominal trauma 2023).

Each writer returns the ground truth (one row per scan) that the dataset adapters' output is tested against.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid
from tqdm.auto import tqdm

from monai_ng.data.phantom.dicom_writer import SliceRecord, write_dicom_series
from monai_ng.data.phantom.volume import PhantomVolume, make_phantom_volume
from monai_ng.data.rsna_schema import (
    ABDOMINAL_IMAGE_COLUMNS,
    ABDOMINAL_IMAGE_CSV,
    ABDOMINAL_SERIES_COLUMNS,
    ABDOMINAL_SERIES_CSV,
    ABDOMINAL_TRAIN_COLUMNS,
    ABDOMINAL_TRAIN_CSV,
    ICH_COLUMNS,
    ICH_CSV,
    ICH_SUBTYPES,
    PE_COLUMNS,
    PE_CSV,
)

__all__ = ["write_rsna_abdominal", "write_rsna_ich", "write_rsna_pe"]


def _hex_id(rng: np.random.Generator, n_hex: int = 9) -> str:
    return "ID_" + "".join(rng.choice(list("0123456789abcdef"), size=n_hex))


def _truth_row(records: list[SliceRecord], volume: PhantomVolume, **extra) -> dict:
    return {
        "scan_id": records[0].series_instance_uid,
        "patient_id": records[0].patient_id,
        "study_uid": records[0].study_instance_uid,
        "series_uid": records[0].series_instance_uid,
        "label": volume.label,
        "n_slices": volume.n_slices,
        "sop_uids": [r.sop_instance_uid for r in records],
        "instance_numbers": [r.instance_number for r in records],
        "slice_labels": volume.lesion_slices.astype(int).tolist(),
        "region": volume.region,
        **extra,
    }


def _check_layout_args(n: int, what: str, size: int, slices: tuple[int, int]) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    if len(slices) != 2 or not 1 <= slices[0] <= slices[1]:
        raise ValueError(f"slice range must be (min, max) with 1 <= min <= max, got {slices!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")


def write_rsna_ich(
    root: str | os.PathLike,
    n_scans: int = 4,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (8, 14),
    positive_rate: float = 0.5,
    quirk_rate: float = 0.34,
    kaggle_uids: bool = True,
    lesion_hu: tuple[float, float] | None = None,
    lesion_scale: tuple[float, float] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Write an RSNA intracranial hemorrhage 2019 style download: ``stage_2_train/ID_<hex>.dcm`` + ``stage_2_train.csv``.

    ``stage_2_train.csv`` has columns ``ID, Label`` with one row per image and subtype (``ID_<img>_<subtype>`` for
    ``ICH_SUBTYPES``); a positive slice has ``any = 1`` and one subtype (fixed per scan) = 1. As in the real data the
    Study / Series / SOP UIDs and PatientID are ``ID_<hex>`` strings (``kaggle_uids=True``), the file name stem is the
    SOPInstanceUID, some patients have two scans, and some scans use the ``unsigned12_wrapped`` pixel quirk.
    ``lesion_hu`` / ``lesion_scale`` vary the hemorrhage's contrast and size (see
    :func:`~monai_ng.data.phantom.make_phantom_volume`); ``progress`` shows a tqdm bar over scans.

    Returns:
        Ground truth, one row per scan: ``scan_id`` (= SeriesInstanceUID), ``patient_id``, ``study_uid``,
        ``series_uid``, ``label``, ``n_slices``, ``sop_uids`` and ``slice_labels`` (inferior -> superior),
        ``instance_numbers``, ``pixel_mode``, ``subtype``, ``lesion_hu`` and ``lesion_radius_mm`` (NaN for negatives).
    """
    _check_layout_args(n_scans, "n_scans", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / "stage_2_train"
    image_dir.mkdir(parents=True, exist_ok=True)
    uid = (lambda: _hex_id(rng, 10)) if kaggle_uids else generate_uid
    truth, csv_rows = [], []
    patient = _hex_id(rng, 8)
    for s in tqdm(range(n_scans), desc="phantom CT", unit="scan", disable=not progress):
        if s > 0 and rng.random() >= 0.3:  # ~30 % of scans share the previous scan's patient
            patient = _hex_id(rng, 8)
        positive = bool(rng.random() < positive_rate)
        n_slices = int(rng.integers(slices[0], slices[1] + 1))
        vol = make_phantom_volume(
            "head", n_slices, size, positive, rng=rng, lesion_hu=lesion_hu, lesion_scale=lesion_scale
        )
        mode = "unsigned12_wrapped" if rng.random() < quirk_rate else str(rng.choice(["unsigned12", "signed16"]))
        sops = [uid() for _ in range(vol.n_slices)]
        numbering = "descending" if rng.random() < 0.5 else "shuffled"
        records = write_dicom_series(
            vol,
            image_dir,
            patient_id=patient,
            study_uid=uid(),
            series_uid=uid(),
            sop_uids=sops,
            file_naming="sop",
            pixel_mode=mode,
            instance_numbers=numbering,
            seed=rng,
        )
        subtype = str(rng.choice(ICH_SUBTYPES[:5])) if positive else ""
        for rec in records:
            for sub in ICH_SUBTYPES:
                value = int(rec.lesion and (sub == "any" or sub == subtype))
                csv_rows.append((f"{rec.sop_instance_uid}_{sub}", value))
        lesion_facts = {"lesion_hu": vol.lesion_hu, "lesion_radius_mm": vol.lesion_radius_mm}
        truth.append(_truth_row(records, vol, pixel_mode=mode, subtype=subtype, **lesion_facts))
    # shuffle CSV rows by image (keeping each image's six subtype rows together, as the real file)
    blocks = [csv_rows[i : i + 6] for i in range(0, len(csv_rows), 6)]
    order = rng.permutation(len(blocks))
    rows = [row for i in order for row in blocks[i]]
    pd.DataFrame(rows, columns=list(ICH_COLUMNS)).to_csv(root / ICH_CSV, index=False)
    return pd.DataFrame(truth)


def write_rsna_pe(
    root: str | os.PathLike,
    n_scans: int = 4,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (12, 20),
    positive_rate: float = 0.5,
    indeterminate_rate: float = 0.0,
) -> pd.DataFrame:
    """Write an RSNA pulmonary embolism 2020 style download: ``train/<Study>/<Series>/<SOP>.dcm`` + ``train.csv``.

    ``train.csv`` has the columns ``PE_COLUMNS`` with one row per image; exam-level columns repeat on every row of a
    study and follow the challenge's consistency rules (negative exam => no PE columns and no RV/LV ratio; positive
    exam => exactly one RV/LV column and at least one of left / right / central). Indeterminate exams (rate
    ``indeterminate_rate``) have no PE images, ``negative_exam_for_pe = 0`` and ``indeterminate = 1``. InstanceNumber
    follows position in most series but is shuffled in some (so ordering by position is required).

    Returns:
        Ground truth per scan (see ``write_rsna_ich``) plus ``indeterminate`` and ``instance_numbering``.
    """
    _check_layout_args(n_scans, "n_scans", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth, csv_rows = [], []
    for _ in range(n_scans):
        indeterminate = bool(rng.random() < indeterminate_rate)
        positive = (not indeterminate) and bool(rng.random() < positive_rate)
        vol = make_phantom_volume("chest", int(rng.integers(slices[0], slices[1] + 1)), size, positive, rng=rng)
        study, series = generate_uid(), generate_uid()
        numbering = str(rng.choice(["ascending", "descending", "shuffled"], p=[0.45, 0.45, 0.1]))
        records = write_dicom_series(
            vol,
            root / "train" / study / series,
            patient_id=study,
            study_uid=study,
            series_uid=series,
            file_naming="sop",
            instance_numbers=numbering,
            pixel_mode=str(rng.choice(["unsigned16", "signed16"])),
            seed=rng,
        )
        exam = dict.fromkeys(PE_COLUMNS[4:], 0)
        if positive:
            exam[str(rng.choice(["rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1"]))] = 1
            for side in rng.choice(["leftsided_pe", "rightsided_pe", "central_pe"], size=int(rng.integers(1, 3))):
                exam[str(side)] = 1
            chronicity = rng.choice(["", "chronic_pe", "acute_and_chronic_pe"], p=[0.7, 0.15, 0.15])
            if chronicity:
                exam[str(chronicity)] = 1
        elif indeterminate:
            exam["indeterminate"] = 1
            exam[str(rng.choice(["qa_motion", "qa_contrast"]))] = 1
        else:
            exam["negative_exam_for_pe"] = 1
        exam["flow_artifact"] = int(rng.random() < 0.1)
        for rec in records:
            csv_rows.append(
                {
                    "StudyInstanceUID": study,
                    "SeriesInstanceUID": series,
                    "SOPInstanceUID": rec.sop_instance_uid,
                    "pe_present_on_image": int(rec.lesion),
                    **exam,
                }
            )
        truth.append(_truth_row(records, vol, indeterminate=int(indeterminate), instance_numbering=numbering))
    order = rng.permutation(len(csv_rows))
    pd.DataFrame([csv_rows[i] for i in order], columns=list(PE_COLUMNS)).to_csv(root / PE_CSV, index=False)
    return pd.DataFrame(truth)


def write_rsna_abdominal(
    root: str | os.PathLike,
    n_patients: int = 3,
    seed: int | None = 0,
    *,
    size: int = 32,
    slices: tuple[int, int] = (10, 18),
    positive_rate: float = 0.5,
    quirk_rate: float = 0.34,
    organ_injury_rate: float = 0.0,
) -> pd.DataFrame:
    """Write an RSNA abdominal trauma 2023 style download.

    Layout: ``train_images/<patient_id>/<series_id>/<instance_number>.dcm``, ``train.csv`` (``ABDOMINAL_TRAIN_COLUMNS``,
    one row per patient), ``image_level_labels.csv`` (one row per positive image: ``patient_id, series_id,
    instance_number, injury_name`` with ``injury_name`` in ``{Bowel, Active_Extravasation}``) and
    ``train_series_meta.csv`` (``patient_id, series_id, aortic_hu, incomplete_organ``). Patients have one or two
    series; every series of a positive patient shows the lesion. Instance numbers do not start at 1 and run
    ascending or descending along z; some series use the ``signed12_in16`` pixel quirk. With
    ``organ_injury_rate > 0`` some negative patients get a solid-organ injury (``any_injury = 1``) that has no image
    level labels, as in the real data.

    Returns:
        Ground truth per series (see ``write_rsna_ich``) with ``scan_id`` = series_id (str), ``patient_id`` (str),
        ``injury_name``, ``pixel_mode``, ``any_injury``.
    """
    _check_layout_args(n_patients, "n_patients", size, slices)
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth, patients, image_rows, series_rows = [], [], [], []
    used_ids: set[int] = set()

    def new_id(lo: int, hi: int) -> int:
        while True:
            value = int(rng.integers(lo, hi))
            if value not in used_ids:
                used_ids.add(value)
                return value

    for _ in range(n_patients):
        patient_id = new_id(10000, 66000)
        positive = bool(rng.random() < positive_rate)
        injury = str(rng.choice(["Bowel", "Active_Extravasation"])) if positive else ""
        row = dict.fromkeys(ABDOMINAL_TRAIN_COLUMNS, 0)
        row["patient_id"] = patient_id
        row["bowel_injury"] = int(injury == "Bowel")
        row["extravasation_injury"] = int(injury == "Active_Extravasation")
        organ_injured = (not positive) and bool(rng.random() < organ_injury_rate)
        organ_grade = {o: "healthy" for o in ("kidney", "liver", "spleen")}
        if organ_injured:
            organ_grade[str(rng.choice(["kidney", "liver", "spleen"]))] = str(rng.choice(["low", "high"]))
        for organ, grade in organ_grade.items():
            row[f"{organ}_{grade}"] = 1
        row["bowel_healthy"] = 1 - row["bowel_injury"]
        row["extravasation_healthy"] = 1 - row["extravasation_injury"]
        row["any_injury"] = int(positive or organ_injured)
        patients.append(row)
        for _s in range(int(rng.integers(1, 3))):
            series_id = new_id(100, 65000)
            vol = make_phantom_volume("abdomen", int(rng.integers(slices[0], slices[1] + 1)), size, positive, rng=rng)
            mode = "signed12_in16" if rng.random() < quirk_rate else "unsigned16"
            records = write_dicom_series(
                vol,
                root / "train_images" / str(patient_id) / str(series_id),
                patient_id=str(patient_id),
                file_naming="instance",
                instance_numbers=str(rng.choice(["ascending", "descending"])),
                first_instance_number=int(rng.integers(1, 40)),
                pixel_mode=mode,
                seed=rng,
            )
            for rec in records:
                if rec.lesion:
                    image_rows.append((patient_id, series_id, rec.instance_number, injury))
            series_rows.append((patient_id, series_id, round(float(rng.uniform(90, 400)), 2), int(rng.random() < 0.2)))
            t = _truth_row(records, vol, injury_name=injury, pixel_mode=mode, any_injury=row["any_injury"])
            t["scan_id"] = str(series_id)
            t["patient_id"] = str(patient_id)
            truth.append(t)
    pd.DataFrame(patients, columns=list(ABDOMINAL_TRAIN_COLUMNS)).to_csv(root / ABDOMINAL_TRAIN_CSV, index=False)
    pd.DataFrame(image_rows, columns=list(ABDOMINAL_IMAGE_COLUMNS)).to_csv(root / ABDOMINAL_IMAGE_CSV, index=False)
    pd.DataFrame(series_rows, columns=list(ABDOMINAL_SERIES_COLUMNS)).to_csv(root / ABDOMINAL_SERIES_CSV, index=False)
    return pd.DataFrame(truth)
