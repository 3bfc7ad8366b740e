"""Phantom CT series written with pydicom, and results scored on them, for the reporting tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import ct_slice, save_slice
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from monai_ng.reporting.scan_result import ScanResult, SliceScore

# Identifier markers: none of these strings may appear in a JSON/CSV/PNG output.
PATIENT_NAME = "Zzmarker^Quintessa"
PATIENT_ID = "PIDMARKER7731"
BIRTH_DATE = "19230517"
ACCESSION = "ACCMARK99"
MARKERS = (PATIENT_NAME, "Zzmarker", "Quintessa", PATIENT_ID, BIRTH_DATE, ACCESSION)

SCORES = (0.02, 0.05, 0.30, 0.20, 0.20, 0.12, 0.08, 0.03)  # a tie at 0.20 between slices 3 and 4


def write_ct_series(
    folder: Path, n: int = 8, study_uid: str | None = None, z0: float = -40.0, dz: float = 5.0, shuffle: bool = True
) -> list[Dataset]:
    """Write ``n`` 16x16 CT slices of one series, return their headers (read back with ``stop_before_pixels``).

    Headers are returned inferior→superior (increasing z); files are written in shuffled instance order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(0)
    order = rng.permutation(n) if shuffle else np.arange(n)
    paths = []
    for j in range(n):
        ds = ct_slice(
            rng.integers(900, 1200, size=(16, 16)).astype(np.uint16),
            sop=generate_uid(),
            series=series_uid,
            ipp=(-8.0, -8.0, z0 + dz * j),
            study=study_uid,
            patient_id=PATIENT_ID,
            instance=int(order[j]) + 1,
            spacing=(1.0, 1.0),
            intercept=-1024,
            SpecificCharacterSet="ISO_IR 100",
            FrameOfReferenceUID=frame_uid,
            PatientName=PATIENT_NAME,
            PatientBirthDate=BIRTH_DATE,
            PatientSex="F",
            AccessionNumber=ACCESSION,
            StudyID="1",
            StudyDate="20240102",
            StudyTime="101500",
            ReferringPhysicianName="",
            Manufacturer="phantom",
            SeriesNumber=3,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
            SliceThickness=dz,
            KVP=120,
        )
        path = save_slice(ds, folder / f"IM{int(order[j]):04d}.dcm")
        paths.append(path)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def result_for(
    headers: list[Dataset], scan_id: str = "scan001", probability: float = 0.87, scores=SCORES
) -> ScanResult:
    """A ScanResult over ``headers`` (inferior→superior) with the given slice scores."""
    assert len(scores) == len(headers)
    return ScanResult(
        scan_id=scan_id,
        scan_probability=probability,
        threshold=0.5,
        study_instance_uid=str(headers[0].StudyInstanceUID),
        series_instance_uid=str(headers[0].SeriesInstanceUID),
        slices=tuple(
            SliceScore(
                index=i,
                score=s,
                z_mm=float(ds.ImagePositionPatient[2]),
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
            )
            for i, (ds, s) in enumerate(zip(headers, scores, strict=True))
        ),
    )


@pytest.fixture
def ct_headers(tmp_path) -> list[Dataset]:
    return write_ct_series(tmp_path / "ct")


@pytest.fixture
def make_series() -> Callable[..., list[Dataset]]:
    return write_ct_series


@pytest.fixture
def scan_result(ct_headers) -> ScanResult:
    return result_for(ct_headers)


@pytest.fixture
def make_result() -> Callable[..., ScanResult]:
    return result_for


@pytest.fixture
def identifier_markers() -> tuple[str, ...]:
    return MARKERS
