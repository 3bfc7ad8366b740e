"""The experiment runner (splits x grid x methods) and its command line, end to end on a small store."""

from __future__ import annotations

import pandas as pd

from monai_ng.cli import main
from monai_ng.data import BagDataset
from monai_ng.experiment import ExperimentConfig, MethodSpec, run_experiment, split_indices
from monai_ng.networks.checkpoint import load_mil_checkpoint


def test_splits_are_patient_disjoint(easy_store):
    from monai_ng.data import EmbeddingStore

    store = EmbeddingStore(easy_store)
    parts = split_indices(store, 1001)
    assert sum(len(v) for v in parts.values()) == len(store)
    patients = {k: {store.patient_ids[i] for i in v} for k, v in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert split_indices(store, 1001)["test"].tolist() == parts["test"].tolist()


def test_experiment_runner_and_cli(easy_store, tmp_path):
    methods = [
        MethodSpec("centre baseline", "centre_gaussian"),
        MethodSpec("ABMIL+NG", "abmil", ng=True),
        MethodSpec(
            "ceiling", "instance_ceiling", {"kernel_size": 3}, instance_weight=1.0, selection_metric="loc_auroc"
        ),
    ]
    cfg = ExperimentConfig(
        lrs=(0.1,), ng_weights=(0.1, 1.0), l1_weights=(0.0,), max_epochs=2, batch_size=32, seeds=(1001, 2001)
    )
    results = run_experiment(easy_store, tmp_path / "exp", methods, cfg)
    assert len(results) == 6
    assert results.loc[results["method"] == "ceiling", "selected_by"].tolist() == ["loc_auroc"] * 2
    csv = pd.read_csv(tmp_path / "exp" / "results.csv")
    assert {"method", "split", "scan_auroc", "loc_auroc"} <= set(csv.columns)
    grid = pd.read_csv(tmp_path / "exp" / "grid.csv")
    assert len(grid) == 2 * (1 + 2 + 1)  # centre: 1 grid point, ABMIL+NG: 2 lambdas, ceiling: 1; two splits
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| centre baseline |" in table and "| ABMIL+NG |" in table
    assert (tmp_path / "exp" / "slice_scores" / "abmil_ng_split1.csv").is_file()
    # the selected model's checkpoint rebuilds the network and scores a store from the command line
    ckpt = tmp_path / "exp" / "checkpoints" / "abmil_ng_split1.safetensors"
    net, meta = load_mil_checkpoint(ckpt)
    assert meta["network"] == "abmil" and meta["method"] == "ABMIL+NG"
    assert main(["predict", "--data", str(easy_store), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred")]) == 0
    slices = pd.read_csv(tmp_path / "pred" / "slice_scores.csv")
    assert len(slices) == int(BagDataset(easy_store).n_slices.sum())
    assert main(["predict", "--data", str(easy_store), "--checkpoint", str(tmp_path / "no.safetensors"),
                 "--out", str(tmp_path / "p2")]) == 1  # fmt: skip
    # a run does not depend on the methods run before it in the same process
    alone = run_experiment(easy_store, tmp_path / "alone", methods[1:2], cfg)
    both = results[results["method"] == "ABMIL+NG"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone[both.columns], both, check_exact=False, rtol=1e-12)
    # the same through the command line
    rc = main(
        ["experiment", "--data", str(easy_store), "--out", str(tmp_path / "cli"), "--methods", "mean pool",
         "--epochs", "1", "--seeds", "1001", "--lrs", "0.1", "--l1-weights", "0,0.001"]
    )  # fmt: skip
    assert rc == 0 and len(pd.read_csv(tmp_path / "cli" / "grid.csv")) == 2
    assert main(["experiment", "--data", str(easy_store), "--out", str(tmp_path / "x"), "--methods", "nope"]) == 2
