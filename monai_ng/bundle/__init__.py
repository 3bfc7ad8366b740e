"""Library support for the MONAI bundles in ``bundles/`` (configs reference these by full dotted path).

* :mod:`~monai_ng.bundle.scan_inputs`: the scans of an inference folder (DICOM series by UID, NIfTI files).
* :mod:`~monai_ng.bundle.scan_stack`: load a scan as the embedding step's slice stack, plus per-slice facts.
* :mod:`~monai_ng.bundle.slice_encoding_inferer`: frozen encoder in slice batches, then the MIL network.
* :mod:`~monai_ng.bundle.prediction_writer`: per-scan JSON / PNG / KOS + SC, one CSV, ``failures.csv``.
* :mod:`~monai_ng.bundle.components`: builders and initialisation checks (store, manifest, weights, encoder).
* :mod:`~monai_ng.bundle.config_flags`: on / off config keys read alike from files and the command line.
* :mod:`~monai_ng.bundle.handlers`: training switches as handlers (clip, selection rule, early stop), scan scores.
* :mod:`~monai_ng.bundle.predict`: :func:`predict` / :func:`predict_dicomweb`, the API of ``monai-ng predict``.
* :mod:`~monai_ng.bundle.package`: ``<name>_v<version>.zip`` in the model zoo's release layout.
"""

from __future__ import annotations

from monai_ng.bundle.components import (
    EMBEDDING_SPEC_FILE,
    BundleInputError,
    build_slice_encoder,
    check_encoder_matches,
    default_encoder_weights,
    embedding_spec,
    load_checkpoint_network,
    load_network_weights,
    open_embedding_store,
    read_labelled_manifest,
    store_split,
    write_embedding_spec,
)
from monai_ng.bundle.config_flags import config_flag
from monai_ng.bundle.handlers import (
    ModelSelectionScore,
    OptionalGradientClipper,
    ScanScoresSaver,
    ValidationEarlyStopping,
)
from monai_ng.bundle.package import PackageError, package_bundle, read_large_files

# after the pieces above: predict runs inference.json, whose expressions name them as monai_ng.bundle.<name>
from monai_ng.bundle.predict import (  # noqa: E402
    PredictError,
    PredictSummary,
    is_embedding_store,
    predict,
    predict_dicomweb,
)
from monai_ng.bundle.prediction_writer import PredictionWriter, split_network_output
from monai_ng.bundle.scan_inputs import ScanInputError, dicom_scan_id, find_scan_inputs, read_manifest_scans
from monai_ng.bundle.scan_stack import LoadSliceStackd, collate_scans, prepare_scan_batch, slice_z_positions
from monai_ng.bundle.slice_encoding_inferer import SliceEncodingInferer

__all__ = [
    "EMBEDDING_SPEC_FILE",
    "BundleInputError",
    "LoadSliceStackd",
    "ModelSelectionScore",
    "OptionalGradientClipper",
    "PackageError",
    "PredictError",
    "PredictSummary",
    "PredictionWriter",
    "ScanInputError",
    "ScanScoresSaver",
    "SliceEncodingInferer",
    "ValidationEarlyStopping",
    "build_slice_encoder",
    "check_encoder_matches",
    "collate_scans",
    "config_flag",
    "default_encoder_weights",
    "dicom_scan_id",
    "embedding_spec",
    "find_scan_inputs",
    "is_embedding_store",
    "load_checkpoint_network",
    "load_network_weights",
    "open_embedding_store",
    "package_bundle",
    "predict",
    "predict_dicomweb",
    "prepare_scan_batch",
    "read_labelled_manifest",
    "read_manifest_scans",
    "read_large_files",
    "slice_z_positions",
    "split_network_output",
    "store_split",
    "write_embedding_spec",
]
