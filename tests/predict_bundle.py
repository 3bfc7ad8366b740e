"""Shared set-up of the ``monai-ng predict`` tests: a head-bundle copy with a tiny random model, and phantom DICOM.

The bundle is copied into a temporary folder, its ``inference.json`` set to a tiny random-init encoder
(``vit_tiny_patch16_224`` on 32 x 32 slices, no AMP) and its ``models/`` given ``model.pt`` = ``network_def``'s
``state_dict()`` (random init, seed 0) plus ``embedding.json`` describing that encoder and preprocessing -- what the
bundle's training would leave there. Phantom series carry a fake patient name, id and accession number so that the
tests can check none of them reaches an output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import torch
from monai.bundle import ConfigParser

from monai_ng.data.phantom import make_phantom_volume, write_dicom_series, write_nifti

REPO = Path(__file__).resolve().parents[1]
HEAD_BUNDLE = REPO / "bundles" / "head_ct_hemorrhage_localization"
TINY = {"encoder_name": "vit_tiny_patch16_224", "image_size": 32, "amp": "none", "num_workers": 0}

PATIENT_NAME = "Doe^Janet"
PATIENT_ID = "PAT-H10-4711"
ACCESSION = "ACC-H10-0815"
IDENTIFIERS = (PATIENT_NAME, "Doe", "Janet", PATIENT_ID, ACCESSION, "19610203")


def make_bundle(root: Path) -> Path:
    """A copy of the head bundle under ``root`` whose inference runs the tiny encoder and a random ABMIL."""
    bundle = root / "bundle"
    shutil.copytree(HEAD_BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config.update(TINY)
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser.update({"bundle_root": str(bundle)})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    encoder = parser.get_parsed_content("encoder_def")
    loader = parser.get_parsed_content("stack_loader")
    models = bundle / "models"
    models.mkdir()
    torch.save(network.state_dict(), models / "model.pt")
    spec = {"encoder": encoder.metadata, "preprocessing": loader.describe()}
    (models / "embedding.json").write_text(json.dumps(spec, indent=2) + "\n")
    return bundle


def write_series(folder: Path, n_slices: int = 8, seed: int = 0, study_uid: str | None = None) -> list[str]:
    """A 32 x 32 phantom head series (with identifiers in its headers); returns its SOPInstanceUIDs, inferior first."""
    volume = make_phantom_volume("head", n_slices=n_slices, size=32, seed=seed)
    records = write_dicom_series(volume, folder, patient_id=PATIENT_ID, study_uid=study_uid, seed=seed)
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT_NAME
        ds.PatientBirthDate = "19610203"
        ds.AccessionNumber = ACCESSION
        ds.save_as(path)
    return [r.sop_instance_uid for r in sorted(records, key=lambda r: r.slice_index)]


def write_nifti_scan(path: Path, n_slices: int = 8, seed: int = 0) -> Path:
    """A 32 x 32 phantom head volume as NIfTI."""
    return write_nifti(make_phantom_volume("head", n_slices=n_slices, size=32, seed=seed), path)
