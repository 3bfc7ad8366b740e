"""End to end, one direction: phantom DICOM -> RSNA ICH adapter -> frozen ViT -> embedding store -> MIL experiment."""

from __future__ import annotations

import pandas as pd

from monai_ng.cli import main
from monai_ng.data import EmbeddingStore


def test_phantom_to_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["phantom", "--layout", "ich", "--out", "ich", "--n", "12", "--seed", "3"]) == 0
    assert main(["ingest", "--dataset", "ich", "--root", "ich", "--out", "manifest.csv"]) == 0
    manifest = pd.read_csv("manifest.csv")
    assert len(manifest) == 12
    rc = main(
        ["embed", "--manifest", "manifest.csv", "--out", "store", "--encoder", "vit_tiny_patch16_224",
         "--weights", "random-init", "--batch-size", "16", "--workers", "0", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    store = EmbeddingStore("store", check_finite=True)
    assert len(store) == 12 and store.dim == 192 and store.metadata["encoder"]["pretrained"] is False
    # slice order and labels survive the whole chain: the store's slice labels are the manifest's
    first = manifest.iloc[0]
    row = store.scan_ids.index(str(first["scan_id"]))
    assert store.bag(row).slice_labels.tolist() == [int(v) for v in first["slice_labels"].strip("[]").split(",")]
    rc = main(
        ["experiment", "--data", "store", "--out", "exp", "--methods", "centre baseline,ABMIL+NG (forward KL)",
         "--epochs", "2", "--lrs", "0.1", "--ng-weights", "1", "--l1-weights", "0", "--seeds", "1001"]
    )  # fmt: skip
    assert rc == 0
    results = pd.read_csv("exp/results.csv")
    assert results["method"].tolist() == ["centre baseline", "ABMIL+NG (forward KL)"]
