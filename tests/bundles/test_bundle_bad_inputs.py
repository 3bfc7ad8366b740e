"""Bad input to a bundle fails at initialisation with a message naming the file and the reason, writing nothing."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from bundles.bundle_workspace import Workspace

from monai_ng.bundle import BundleInputError, ScanInputError


def test_missing_and_empty_dataset_dir(workspace: Workspace, tmp_path):
    missing = tmp_path / "missing"
    wf = workspace.workflow("inference.json", "infer", dataset_dir=str(missing), output_dir=str(tmp_path / "out"))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    assert isinstance(err.value.__cause__, ScanInputError)
    assert str(missing) in str(err.value.__cause__) and "does not exist" in str(err.value.__cause__)
    empty = tmp_path / "empty"
    empty.mkdir()
    wf = workspace.workflow("inference.json", "infer", dataset_dir=str(empty), output_dir=str(tmp_path / "out"))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    assert "is empty" in str(err.value.__cause__)
    assert not (tmp_path / "out").exists()

    wf = workspace.workflow("train.json", "train", dataset_dir=str(empty))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    assert isinstance(err.value.__cause__, BundleInputError) and str(empty) in str(err.value.__cause__)


def test_store_made_with_another_encoder(workspace: Workspace):
    wf = workspace.workflow(
        "train.json", "train", dataset_dir=str(workspace.store), encoder_name="vit_small_patch16_224"
    )
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    message = str(err.value.__cause__)
    assert "store.json" in message and "encoder.name" in message and "vit_small_patch16_224" in message
    wf = workspace.workflow("train.json", "train", dataset_dir=str(workspace.store), window_preset="brain", channels=1)
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    assert "store.json" in str(err.value.__cause__)


def test_model_with_wrong_shapes(workspace: Workspace, tmp_path):
    models = workspace.bundle / "models"
    models.mkdir(exist_ok=True)
    backup = tmp_path / "model.pt.bak"
    if (models / "model.pt").is_file():
        shutil.copy(models / "model.pt", backup)
    try:
        torch.save({"attention_v.weight": torch.zeros(3, 3)}, models / "model.pt")
        wf = workspace.workflow(
            "inference.json", "infer", dataset_dir=str(workspace.images), output_dir=str(tmp_path / "o")
        )
        with pytest.raises(RuntimeError) as err:
            wf.initialize()
        message = str(err.value.__cause__)
        assert "model.pt" in message and "attention_v.weight" in message and "(3, 3)" in message
        assert not (tmp_path / "o").exists()
    finally:
        if backup.is_file():
            shutil.copy(backup, models / "model.pt")
        else:
            (models / "model.pt").unlink()


def test_manifest_without_labels(workspace: Workspace, tmp_path):
    frame = pd.read_csv(workspace.manifest).drop(columns=["label"])
    unlabelled = tmp_path / "unlabelled.csv"
    frame.to_csv(unlabelled, index=False)
    with pytest.raises(RuntimeError) as err:
        workspace.embed(manifest=unlabelled, store=tmp_path / "store")
    message = str(err.value.__cause__)
    assert str(unlabelled) in message and "label" in message
    assert not (tmp_path / "store").exists()
