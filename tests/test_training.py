"""Training and evaluation through MONAI engines; the experiment runner and its command line."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from monai_ng.cli import main
from monai_ng.data import BagDataset, collate_bags
from monai_ng.engines import (
    GradientNormClipper,
    SelectionScore,
    TrainingConfig,
    evaluate_mil,
    prepare_bag_batch,
    train_mil,
)
from monai_ng.experiment import ExperimentConfig, MethodSpec, load_mil_checkpoint, run_experiment, split_indices
from monai_ng.losses import MILObjective
from monai_ng.networks import build_mil_network


def _loaders(store, batch_size=16):
    ds = BagDataset(store)
    n = len(ds)
    train = BagDataset(ds.store, range(0, int(n * 0.7)))
    val = BagDataset(ds.store, range(int(n * 0.7), n))
    g = torch.Generator().manual_seed(0)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate_bags, generator=g),
        DataLoader(val, batch_size=batch_size, collate_fn=collate_bags),
        DataLoader(train, batch_size=batch_size, collate_fn=collate_bags),
    )


def test_prepare_bag_batch(easy_store):
    batch = collate_bags([BagDataset(easy_store)[i] for i in range(3)])
    x, target, args, kwargs = prepare_bag_batch(batch, "cpu")
    assert x.shape[0] == 3 and args == () and set(kwargs) == {"mask"}
    assert target["mask"] is kwargs["mask"] and target["label"].tolist() == [0.0, 0.0, 1.0]
    assert target["scan_id"] == ["scan000", "scan001", "scan002"]
    with pytest.raises(TypeError, match="collate_bags"):
        prepare_bag_batch((x, target))


def test_abmil_ng_learns_and_checkpoints(easy_store, tmp_path):
    train, val, train_eval = _loaders(easy_store)
    torch.manual_seed(0)
    net = build_mil_network("abmil", 8)
    obj = MILObjective(ng_weight=1.0, l1_weight=1e-4, network=net)
    res = train_mil(
        net, obj, train, val, TrainingConfig(lr=0.1, max_epochs=8, out_dir=tmp_path / "run", tensorboard=True), "cpu"
    )
    assert len(res.history) == 8 and 1 <= res.best_epoch <= 8
    assert res.best_metrics["scan_auroc"] == max(h["scan_auroc"] for h in res.history)
    assert res.best_metrics["scan_auroc"] > 0.9 and res.best_metrics["loc_auroc"] > 0.8
    # the network holds the best epoch's weights: re-evaluating reproduces its validation metrics
    metrics, scans, slices = evaluate_mil(net, val)
    assert metrics["scan_auroc"] == pytest.approx(res.best_metrics["scan_auroc"], abs=1e-9)
    assert metrics["loc_auroc"] == pytest.approx(res.best_metrics["loc_auroc"], abs=1e-9)
    # MONAI's CheckpointSaver wrote the same weights; they load with weights_only=True
    state = torch.load(res.checkpoint, weights_only=True)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state[k], v)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    # per-scan and per-slice outputs line up with the dataset
    assert len(scans) == len(val.dataset) and len(slices) == int(val.dataset.n_slices.sum())
    sums = slices.groupby("scan_id")["attention"].sum()
    assert ((sums - 1).abs() < 1e-5).all()
    assert set(scans["probability"].between(0, 1)) == {True}


def test_gradient_clipping_bounds_the_norm(easy_store):
    train, val, _ = _loaders(easy_store)
    net = build_mil_network("abmil", 8)
    norms = []

    class Recorder:
        def attach(self, engine):
            from monai.engines.utils import IterationEvents

            engine.add_event_handler(
                IterationEvents.BACKWARD_COMPLETED,
                lambda e: norms.append(float(torch.norm(torch.stack([p.grad.norm() for p in e.network.parameters()])))),
            )

    from monai.engines import SupervisedTrainer

    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=train,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=lambda pred, target: 1e4 * MILObjective(ng_weight=1.0)(pred, target),
        prepare_batch=prepare_bag_batch,
        decollate=False,
    )
    GradientNormClipper(0.5).attach(trainer)
    Recorder().attach(trainer)
    trainer.run()
    assert norms and max(norms) <= 0.5 + 1e-5
    with pytest.raises(ValueError, match="max_norm"):
        GradientNormClipper(0.0)


def test_selection_requires_train_above_val():
    class FakeState:
        def __init__(self, metrics):
            self.metrics = metrics

    class FakeEngine:
        def __init__(self, metrics):
            self.state = FakeState(metrics)

    train_ev = FakeEngine({"scan_auroc": 0.8})
    sel = SelectionScore("scan_auroc", train_ev, require_train_above_val=True)
    val = FakeEngine({"scan_auroc": 0.9})
    sel(val)
    assert val.state.metrics["selection_score"] == -math.inf  # train 0.8 does not exceed val 0.9
    train_ev.state.metrics["scan_auroc"] = 0.95
    sel(val)
    assert val.state.metrics["selection_score"] == 0.9
    plain = FakeEngine({"scan_auroc": float("nan")})
    SelectionScore()(plain)
    assert plain.state.metrics["selection_score"] == -math.inf
    with pytest.raises(ValueError, match="train-set evaluator"):
        SelectionScore(require_train_above_val=True)


def test_training_config_checks(easy_store):
    train, val, _ = _loaders(easy_store)
    net = build_mil_network("mean", 8)
    with pytest.raises(ValueError, match="max_epochs"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(max_epochs=0))
    with pytest.raises(ValueError, match="selection_metric"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(selection_metric="accuracy"))
    with pytest.raises(ValueError, match="train_eval_loader"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(require_train_above_val=True))


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
        MethodSpec("centre baseline", "centre"),
        MethodSpec("ABMIL+NG", "abmil", ng=True),
        MethodSpec("ceiling", "ceiling", {"kernel_size": 3}, instance_weight=1.0, selection_metric="loc_auroc"),
    ]
    cfg = ExperimentConfig(lrs=(0.1,), ng_weights=(0.1, 1.0), max_epochs=2, batch_size=32, seeds=(1001, 2001))
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
