"""Training and evaluation through MONAI engines: batch preparation, handlers, best-epoch selection, checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from monai_ng.data import BagDataset, collate_bags
from monai_ng.engines import (
    GradientNormClipper,
    SelectionScore,
    TrainingConfig,
    build_evaluator,
    evaluate_mil,
    prepare_bag_batch,
    train_mil,
)
from monai_ng.losses import MILObjective
from monai_ng.networks import build_mil_network, load_mil_checkpoint


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
    # the best weights were saved as a plain state_dict (weights_only=True) that also rebuilds the network
    assert res.checkpoint == tmp_path / "run" / "best_model.pt"
    state = torch.load(res.checkpoint, weights_only=True)
    assert list(state) == list(net.state_dict())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state[k], v)
    rebuilt, header = load_mil_checkpoint(res.checkpoint)
    assert header["network"] == "abmil" and rebuilt.build_arguments == net.build_arguments
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
    net = build_mil_network("mean_pool", 8)
    with pytest.raises(ValueError, match="max_epochs"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(max_epochs=0))
    with pytest.raises(ValueError, match="selection_metric"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(selection_metric="accuracy"))
    with pytest.raises(ValueError, match="train_eval_loader"):
        train_mil(net, MILObjective(ng_weight=0), train, val, TrainingConfig(require_train_above_val=True))
    with pytest.raises(TypeError, match="out_dir needs a MILNetwork"):
        train_mil(torch.nn.Linear(8, 1), MILObjective(ng_weight=0), train, val, TrainingConfig(out_dir="x"))


class _StopAtTrainer(Exception):
    pass


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_copies_to_a_gpu_do_not_block(easy_store, monkeypatch, device):
    """On a CUDA device the trainer and the evaluators copy batches with ``non_blocking=True`` (asynchronous when the
    loader pins them); on the CPU they do not ask for it. Checked without a GPU: nothing is run on the device."""
    import monai_ng.engines.training as training

    seen = {}

    def fake_trainer(**kwargs):
        seen.update(kwargs)
        raise _StopAtTrainer

    monkeypatch.setattr(training, "SupervisedTrainer", fake_trainer)
    net = build_mil_network("abmil", 8)
    net.to = lambda *args, **kwargs: net  # keep the weights where they are: no GPU here
    train, val, train_eval = _loaders(easy_store)
    with pytest.raises(_StopAtTrainer):
        train_mil(net, MILObjective(), train, val, TrainingConfig(max_epochs=1), device, train_eval_loader=train_eval)
    assert seen["non_blocking"] is (device == "cuda")
    assert build_evaluator(net, val, device).non_blocking is (device == "cuda")
