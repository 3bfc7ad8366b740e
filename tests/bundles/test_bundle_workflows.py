"""Each bundle end to end on phantom CT, as the model zoo's CI runs bundles: verify_metadata, then ConfigWorkflow
train -> evaluate (train.json + evaluate.json) -> inference, each with check_properties(); inference from another
working directory; model.pt a plain state_dict of network_def."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from bundles.bundle_workspace import FAST_INFERENCE_ARGS, SCHEMA, Workspace

from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.reporting import read_results_csv, read_scan_json


def _run(wf) -> None:
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"offline schema copy {SCHEMA} not found")
def test_verify_metadata(workspace: Workspace):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_metadata",
            "--meta_file",
            workspace.config("metadata.json"),
            "--filepath",
            str(SCHEMA),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "metadata is verified with no error" in out.stdout + out.stderr
    meta = json.loads((workspace.bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert "monai_ng" in meta["required_packages_version"]


def test_embed_store_records_encoder_and_is_resumable(workspace: Workspace):
    store = EmbeddingStore(workspace.store)
    assert len(store) > 0 and store.dim == 192
    assert store.metadata["encoder"]["name"] == "vit_tiny_patch16_224"
    assert store.metadata["encoder"]["pretrained"] is False
    assert (workspace.store / "failures.csv").is_file()
    before = (workspace.store / "embeddings.npy").read_bytes()
    workspace.embed()  # a second run finds the finished store and leaves it as it is
    assert (workspace.store / "embeddings.npy").read_bytes() == before


def test_train_evaluate_infer(workspace: Workspace, tmp_path):
    ws = workspace
    _run(ws.workflow("train.json", "train", dataset_dir=str(ws.store), max_epochs=2, batch_size=8))
    model = ws.bundle / "models" / "model.pt"
    state = torch.load(model, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    net = ws.workflow("inference.json", "infer", dataset_dir=str(ws.images)).parser.get_parsed_content("network_def")
    assert set(state) == set(net.state_dict())  # exactly network_def's state_dict
    assert (ws.bundle / "models" / "embedding.json").is_file()

    _run(ws.workflow(["train.json", "evaluate.json"], "train", dataset_dir=str(ws.store), batch_size=8))
    metrics = (ws.bundle / "eval" / "metrics.csv").read_text()
    for name in ("scan_auroc", "scan_auprc", "loc_auroc", "loc_auprc"):
        assert name in metrics
    assert len(pd.read_csv(ws.bundle / "eval" / "scan_scores.csv")) > 0

    out = tmp_path / "out"
    _run(ws.workflow("inference.json", "infer", dataset_dir=str(ws.images), output_dir=str(out), amp="none"))
    results = read_results_csv(out / "predictions.csv")
    assert len(results) == len(pd.read_csv(ws.manifest))
    assert pd.read_csv(out / "failures.csv").empty
    first = read_scan_json(out / f"{results[0].scan_id}.json")
    assert first.slices[0].z_mm is not None and first.num_slices > 1
    assert first.scan_id.startswith("series-")
    assert (out / f"{results[0].scan_id}.png").is_file()
    assert abs(sum(s.score for s in first.slices) - 1.0) < 1e-4


def test_inference_from_another_working_directory(workspace: Workspace, tmp_path):
    """`python -m monai.bundle run` from an unrelated folder: every path comes from --bundle_root / --output_dir."""
    ws = workspace
    if not (ws.bundle / "models" / "model.pt").is_file():
        _run(ws.workflow("train.json", "train", dataset_dir=str(ws.store), max_epochs=1, batch_size=8))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        ws.config("inference.json"),
        "--meta_file",
        ws.config("metadata.json"),
        "--logging_file",
        ws.config("logging.conf"),
        "--bundle_root",
        str(ws.bundle),
        "--dataset_dir",
        str(ws.images),
        "--output_dir",
        str(out),
        *FAST_INFERENCE_ARGS,
    ]
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RANDOM-INIT ENCODER" in proc.stdout + proc.stderr
    assert (out / "predictions.csv").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing written into the working directory
