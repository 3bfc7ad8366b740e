"""DICOM documents that bring one scan's result back into the PACS, built with highdicom.

Per scan, in the source study, each in a new series of its own (a series holds one modality):

* a **Key Object Selection** document (modality KO, :class:`highdicom.ko.KeyObjectSelectionDocument`, template
  TID 2010) whose content flags the top-k slices of the source series, best first, and whose Key Object
  Description text item carries the scan-level probability and finding. Its Current Requested Procedure Evidence
  Sequence lists exactly the flagged instances, since PS3.3 C.17.2.2 defines it as the instances referenced by the
  document — so a viewer opening the KOS opens the source study and series at those slices.
* a **Secondary Capture** image (modality OT, :class:`highdicom.sc.SCImage`, RGB) of the attention figure
  (:mod:`monai_ng.reporting.attention_figure`), with a Source Image Sequence pointing to every scored slice.

Document title: (113000, DCM, "Of Interest") from CID 7010 "Key Object Selection Document Title". The selection is
a machine's pointer to slices worth reading, which is what "Of Interest" says. The alternatives mean something else
and some are harmful: "Best In Set" is a quality choice among similar images; the rejection titles ("Rejected for
Quality Reasons", "Rejected for Patient Safety Reasons", "Incorrect Modality Worklist Entry", "Data Retention
Policy Expired") make IHE IOCM-aware archives hide or delete the referenced images; "For Referring Provider", "For
Teaching", ... address a person or purpose the model does not know. The document names its observer as a Device
(the model), so nobody mistakes it for a radiologist's selection.

Identifiers: the documents carry the source study's Patient and General Study modules (copied from the first source
dataset by highdicom, as PS3.3 requires for them to belong to the same study). That is the only place this package
writes them; nothing here logs or names files with them.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from monai_ng.reporting.atomic_file import write_atomic
from monai_ng.reporting.scan_result import ScanResult, check_scan_id

__all__ = [
    "DOCUMENT_TITLE",
    "MANUFACTURER",
    "build_key_object_selection",
    "build_attention_secondary_capture",
    "write_dicom_documents",
]

DOCUMENT_TITLE = codes.DCM.OfInterest
"""(113000, DCM, "Of Interest"): the KOS title (reasons in the module docstring)."""

MANUFACTURER = "monai_ng"
"""Manufacturer written into the documents' General Equipment module."""

_REQUIRED_SOURCE = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Type 2 Patient / General Study attributes highdicom copies from the first source dataset: present (maybe empty)
# in any conformant CT, but de-identified files sometimes drop them. Filled empty on a private copy when absent.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
# Optional attributes that help an archive match the patient and study; copied when the source has them.
_EXTRA_COPIED = ("IssuerOfPatientID", "StudyDescription")


def _check_sources(source_datasets: Sequence[Dataset], result: ScanResult) -> dict[str, Dataset]:
    """Validate the source headers against the result; return ``{SOPInstanceUID: dataset}``."""
    if not isinstance(result, ScanResult):
        raise TypeError(f"result must be a ScanResult, got {type(result).__name__}")
    where = f"scan {result.scan_id!r}"
    if isinstance(source_datasets, Dataset) or not isinstance(source_datasets, Sequence):
        raise TypeError(f"{where}: source_datasets must be a sequence of pydicom Datasets (one per slice)")
    if len(source_datasets) == 0:
        raise ValueError(f"{where}: source_datasets is empty")
    by_uid: dict[str, Dataset] = {}
    for pos, ds in enumerate(source_datasets):
        if not isinstance(ds, Dataset):
            raise TypeError(f"{where}: source_datasets[{pos}] must be a pydicom Dataset, got {type(ds).__name__}")
        missing = [k for k in _REQUIRED_SOURCE if not ds.get(k)]
        if missing:
            raise ValueError(f"{where}: source_datasets[{pos}] lacks {', '.join(missing)}")
        uid = str(ds.SOPInstanceUID)
        if uid in by_uid:
            raise ValueError(f"{where}: SOPInstanceUID {uid} appears twice in source_datasets")
        by_uid[uid] = ds
    studies = sorted({str(ds.StudyInstanceUID) for ds in source_datasets})
    if len(studies) != 1:
        raise ValueError(
            f"{where}: source_datasets come from {len(studies)} different studies ({', '.join(studies)}); "
            "one scan's documents must reference one study"
        )
    series = sorted({str(ds.SeriesInstanceUID) for ds in source_datasets})
    if len(series) != 1:
        raise ValueError(
            f"{where}: source_datasets come from {len(series)} different series ({', '.join(series)}); "
            "pass the datasets of the one scored series"
        )
    if result.study_instance_uid is not None and result.study_instance_uid != studies[0]:
        raise ValueError(
            f"{where}: result study_instance_uid {result.study_instance_uid} is not the source study {studies[0]}"
        )
    if result.series_instance_uid is not None and result.series_instance_uid != series[0]:
        raise ValueError(
            f"{where}: result series_instance_uid {result.series_instance_uid} is not the source series {series[0]}"
        )
    if result.slices[0].sop_instance_uid is None:
        raise ValueError(f"{where}: the result has no SOPInstanceUIDs (non-DICOM input); DICOM documents need them")
    for s in result.slices:
        ds = by_uid.get(s.sop_instance_uid)  # type: ignore[arg-type]
        if ds is None:
            raise ValueError(
                f"{where}: slice {s.index} SOPInstanceUID {s.sop_instance_uid} is not among the source_datasets"
            )
        if s.sop_class_uid is not None and s.sop_class_uid != str(ds.SOPClassUID):
            raise ValueError(
                f"{where}: slice {s.index} has sop_class_uid {s.sop_class_uid} but its dataset has {ds.SOPClassUID}"
            )
    return by_uid


def _patient_study_header(ds: Dataset) -> Dataset:
    """A header-only copy of ``ds`` whose Type 2 Patient/Study attributes exist (empty when the source lacks them)."""
    header = Dataset()
    for keyword in (*_REQUIRED_SOURCE, "SpecificCharacterSet", *_TYPE2_COPIED, *_EXTRA_COPIED, "Rows", "Columns"):
        if keyword in ds:
            setattr(header, keyword, copy.deepcopy(ds[keyword].value))
    for keyword in _TYPE2_COPIED:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _copy_extras(document: Dataset, source: Dataset) -> None:
    for keyword in _EXTRA_COPIED:
        if keyword in source and keyword not in document:
            setattr(document, keyword, copy.deepcopy(source[keyword].value))


def _description(result: ScanResult, k: int) -> str:
    verdict = "present" if result.finding else "absent"
    ranked = ", ".join(f"{s.index} (a={s.score:.3f})" for s in result.top_k(k))
    return (
        f"NG attention MIL: P(finding)={result.scan_probability:.2f}; finding {verdict} "
        f"(threshold {result.threshold:.2f}); top-{min(k, result.num_slices)} slices by attention, "
        f"0-based inferior-to-superior index (attention): {ranked}"
    )


def build_key_object_selection(
    source_datasets: Sequence[Dataset],
    result: ScanResult,
    top_k: int = 5,
    series_number: int = 901,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    device_uid: str | None = None,
    manufacturer: str = MANUFACTURER,
) -> hd.ko.KeyObjectSelectionDocument:
    """A Key Object Selection document flagging the scan's top-k slices (see the module docstring).

    Args:
        source_datasets: one pydicom Dataset per source slice (headers, e.g. read with ``stop_before_pixels=True``),
            all of one study and one series; every slice of ``result`` must be among them (extra datasets, e.g. a
            localizer the loader dropped, are ignored).
        result: the scan's result, with SOPInstanceUIDs.
        top_k: number of slices to flag (``min(top_k, N)``), referenced best first.
        series_number: SeriesNumber of the new KO series.
        series_instance_uid: UID of the new series; generated when None.
        sop_instance_uid: UID of the document; generated when None.
        device_uid: UID identifying the observing device (the model); generated when None.
        manufacturer: Manufacturer of the General Equipment module.

    Returns:
        The document (a pydicom Dataset subclass), in the source study, modality KO.
    """
    by_uid = _check_sources(source_datasets, result)
    selected = [by_uid[s.sop_instance_uid] for s in result.top_k(top_k)]  # type: ignore[index]
    # highdicom copies the Patient and General Study modules from evidence[0]; the evidence is exactly the flagged
    # instances, the first one as a header copy whose Type 2 attributes are sure to exist.
    evidence = [_patient_study_header(selected[0]), *selected[1:]]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid or hd.UID(), name="NG attention MIL", manufacturer_name=manufacturer
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=DOCUMENT_TITLE,
        referenced_objects=selected,
        observer_device_context=observer,
        description=_description(result, top_k),
    )
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=evidence,
        content=content,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
    )
    document.SeriesDescription = "NG attention MIL key slices"
    _copy_extras(document, selected[0])
    return document


def build_attention_secondary_capture(
    source_datasets: Sequence[Dataset],
    result: ScanResult,
    rgb: np.ndarray,
    series_number: int = 902,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    manufacturer: str = MANUFACTURER,
) -> hd.sc.SCImage:
    """The attention figure as an RGB Secondary Capture image in a new series of the source study.

    Args:
        source_datasets: the source slice headers (as for :func:`build_key_object_selection`).
        result: the scan's result, with SOPInstanceUIDs.
        rgb: ``[H, W, 3]`` uint8 figure, e.g. from :func:`monai_ng.reporting.attention_figure.render_attention_figure`.
        series_number: SeriesNumber of the new OT series.
        series_instance_uid: UID of the new series; generated when None.
        sop_instance_uid: UID of the image; generated when None.
        manufacturer: Manufacturer of the General Equipment module.

    Returns:
        The SC image: Conversion Type WSD (rendered on a workstation), Burned In Annotation NO (the figure holds no
        identifier), empty Patient Orientation (a chart has none), Source Image Sequence = every scored slice.
    """
    by_uid = _check_sources(source_datasets, result)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise ValueError(
            f"scan {result.scan_id!r}: rgb must be an [H, W, 3] uint8 array, got shape {rgb.shape} dtype {rgb.dtype}"
        )
    reference = _patient_study_header(by_uid[result.slices[0].sop_instance_uid])  # type: ignore[index]
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        patient_orientation=("L", "P"),  # required by highdicom for PATIENT; emptied below (Type 2)
    )
    image.PatientOrientation = None
    # General Series: Laterality is Type 2C (paired body parts); a figure of a whole scan has none, so present, empty
    if "Laterality" not in image:
        image.Laterality = None
    image.ConversionType = "WSD"
    image.BurnedInAnnotation = "NO"
    image.SeriesDescription = "NG attention MIL figure"
    image.DerivationDescription = "slice attention with fitted normal (NG reference) and top-k slices"
    sources = []
    for s in result.slices:
        item = Dataset()
        item.ReferencedSOPClassUID = by_uid[s.sop_instance_uid].SOPClassUID  # type: ignore[index]
        item.ReferencedSOPInstanceUID = s.sop_instance_uid
        sources.append(item)
    image.SourceImageSequence = sources
    _copy_extras(image, reference)
    return image


def _encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_documents(
    source_datasets: Sequence[Dataset],
    result: ScanResult,
    out_dir: str | os.PathLike[str],
    rgb: np.ndarray | None = None,
    top_k: int = 5,
    manufacturer: str = MANUFACTURER,
) -> dict[str, Path]:
    """Build and write the scan's documents: ``<scan_id>_kos.dcm`` and, when ``rgb`` is given, ``<scan_id>_sc.dcm``.

    Every document is built before any is written, so a bad input writes nothing; each file is written atomically.

    Args:
        source_datasets: the source slice headers (see :func:`build_key_object_selection`).
        result: the scan's result, with SOPInstanceUIDs.
        out_dir: existing output folder.
        rgb: the ``[H, W, 3]`` uint8 attention figure for the Secondary Capture; None skips it.
        top_k: number of slices flagged in the KOS.
        manufacturer: Manufacturer written into the documents.

    Returns:
        ``{"kos": path, "sc": path}`` (``"sc"`` only when ``rgb`` is given).
    """
    if not isinstance(result, ScanResult):
        raise TypeError(f"result must be a ScanResult, got {type(result).__name__}")
    folder = Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    stem = check_scan_id(result.scan_id)
    documents = {"kos": build_key_object_selection(source_datasets, result, top_k=top_k, manufacturer=manufacturer)}
    if rgb is not None:
        documents["sc"] = build_attention_secondary_capture(source_datasets, result, rgb, manufacturer=manufacturer)
    encoded = {name: _encode(doc) for name, doc in documents.items()}
    return {name: write_atomic(folder / f"{stem}_{name}.dcm", data) for name, data in encoded.items()}
