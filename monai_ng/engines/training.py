"""Training of MIL networks through MONAI's ``SupervisedTrainer``, validated every epoch by a ``SupervisedEvaluator``.

The stock MONAI iteration is used as it is: :func:`~monai_ng.engines.bag_batch.prepare_bag_batch` hands the network
the padded bags and their mask (``network(x, mask=mask)``) and hands the loss a target dict (scan labels, mask, slice
labels), so the loss (:class:`monai_ng.losses.MILObjective`) sees the attention and the mask. Model selection follows
Harvey, Loevlie & Hughes (2026), see :mod:`monai_ng.engines.handlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.handlers import StatsHandler, TensorBoardStatsHandler, ValidationHandler
from torch import nn
from torch.utils.data import DataLoader

from monai_ng.engines.bag_batch import prepare_bag_batch
from monai_ng.engines.evaluation import build_evaluator
from monai_ng.engines.handlers import BestStateKeeper, GradientNormClipper, SelectionScore, numeric_metrics
from monai_ng.networks.checkpoint import save_mil_checkpoint
from monai_ng.networks.mil_network import MILNetwork

__all__ = ["TrainingConfig", "TrainingResult", "train_mil"]

logger = logging.getLogger(__name__)

BEST_CHECKPOINT = "best_model.pt"


def _loss_value(output: Mapping[str, Any]) -> float:
    return float(torch.as_tensor(output["loss"]).detach())


@dataclass
class TrainingConfig:
    """Optimisation settings (the paper's: SGD, momentum 0.9, grad-norm clip 1.0, up to 1000 epochs).

    Attributes:
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (the paper uses none; it uses the L1 term of the objective instead).
        max_epochs: number of epochs.
        clip_norm: gradient-norm clip (None disables).
        require_train_above_val: select only epochs whose train AUROC exceeds the validation AUROC.
        out_dir: where the best checkpoint and TensorBoard logs go (None: no files, best state kept in memory only).
        tensorboard: write TensorBoard event files under ``out_dir/tensorboard``.
        seed: torch seed set before training (network init should be seeded by the caller).
        log_every: StatsHandler iteration logging interval (0 disables iteration logs).
        selection_metric: validation metric that selects the epoch: ``"scan_auroc"`` (the paper; scan labels only) or
            a localization metric such as ``"loc_auroc"`` (uses slice labels: only for the instance-level ceiling,
            which is trained on them anyway).
    """

    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    max_epochs: int = 50
    clip_norm: float | None = 1.0
    require_train_above_val: bool = False
    out_dir: str | Path | None = None
    tensorboard: bool = False
    seed: int | None = None
    log_every: int = 0
    selection_metric: str = "scan_auroc"


@dataclass
class TrainingResult:
    """What :func:`train_mil` returns: the best epoch, its validation metrics, and per-epoch history."""

    best_epoch: int
    best_score: float
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None


def train_mil(
    network: nn.Module,
    objective: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: TrainingConfig,
    device: str | torch.device = "cpu",
    train_eval_loader: DataLoader | None = None,
) -> TrainingResult:
    """Train ``network`` with MONAI's ``SupervisedTrainer``, validate every epoch, keep the best epoch.

    Args:
        network: a MIL network (``forward(x [B, N, D], mask [B, N]) -> MILOutput``).
        objective: the loss, usually :class:`monai_ng.losses.MILObjective`.
        train_loader: shuffled bag batches (``collate_fn=collate_packed_bags`` or ``collate_bags``).
        val_loader: validation bag batches.
        config: optimisation and selection settings.
        device: torch device.
        train_eval_loader: un-shuffled train batches, evaluated each epoch when ``require_train_above_val``.

    Returns:
        :class:`TrainingResult`; the network is left holding the best epoch's weights. With ``config.out_dir``, these
        weights are also saved as ``best_model.pt`` with :func:`monai_ng.networks.checkpoint.save_mil_checkpoint` (a
        plain ``state_dict``, ``torch.load(path, weights_only=True)``; ``best_model.json`` beside it rebuilds the
        network with :func:`~monai_ng.networks.checkpoint.load_mil_checkpoint`).
    """
    if config.max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {config.max_epochs}")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")
    selectable = ("scan_auroc", "scan_auprc", "loc_auroc", "loc_auprc", "pooled_loc_auroc", "positive_attention_mass")
    if config.selection_metric not in selectable:
        raise ValueError(f"selection_metric must be one of {selectable}, got {config.selection_metric!r}")
    if config.out_dir is not None and not isinstance(network, MILNetwork):
        raise TypeError(
            f"out_dir needs a MILNetwork (its checkpoint records how to rebuild it), got {type(network).__name__}"
        )
    if config.seed is not None:
        torch.manual_seed(config.seed)
    device = torch.device(device)
    network.to(device)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    out_dir = None if config.out_dir is None else Path(config.out_dir)

    train_evaluator = None
    if config.require_train_above_val:
        if train_eval_loader is None:
            raise ValueError("require_train_above_val=True needs train_eval_loader (un-shuffled train batches)")
        train_evaluator = build_evaluator(
            network, train_eval_loader, device, with_localization=config.selection_metric != "scan_auroc"
        )
    evaluator = build_evaluator(network, val_loader, device)
    SelectionScore(config.selection_metric, train_evaluator, config.require_train_above_val).attach(evaluator)

    train_handlers: list[Any] = []
    if train_evaluator is not None:
        train_handlers.append(ValidationHandler(validator=train_evaluator, interval=1, epoch_level=True))
    train_handlers.append(ValidationHandler(validator=evaluator, interval=1, epoch_level=True))
    if config.log_every:
        train_handlers.append(StatsHandler(tag_name="train_loss", output_transform=_loss_value))
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=config.max_epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=optimizer,
        loss_function=objective,
        prepare_batch=prepare_bag_batch,
        non_blocking=device.type == "cuda",  # asynchronous when the loader pins its batches; synchronous otherwise
        train_handlers=train_handlers,
        decollate=False,
    )
    if config.clip_norm is not None:
        GradientNormClipper(config.clip_norm).attach(trainer)
    keeper = BestStateKeeper(network, trainer)
    keeper.attach(evaluator)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if config.tensorboard:
            tb_dir = str(out_dir / "tensorboard")
            TensorBoardStatsHandler(log_dir=tb_dir, output_transform=_loss_value, tag_name="train_loss").attach(trainer)
            TensorBoardStatsHandler(
                log_dir=tb_dir, iteration_log=False, global_epoch_transform=lambda _: trainer.state.epoch
            ).attach(evaluator)

    history: list[dict[str, float]] = []

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _record(engine: Engine) -> None:
        row = {"epoch": float(trainer.state.epoch)}
        row.update(numeric_metrics(engine.state.metrics))
        if isinstance(trainer.state.output, Mapping) and "loss" in trainer.state.output:
            row["last_train_loss"] = _loss_value(trainer.state.output)
        history.append(row)

    trainer.run()
    if keeper.best_state is None:
        logger.warning("no epoch was eligible for selection; keeping the last epoch's weights")
        keeper.best_epoch = trainer.state.epoch
        keeper.best_metrics = dict(history[-1]) if history else {}
    else:
        network.load_state_dict(keeper.best_state)
    checkpoint = None if out_dir is None else save_mil_checkpoint(network, out_dir / BEST_CHECKPOINT)
    return TrainingResult(keeper.best_epoch, keeper.best_score, keeper.best_metrics, history, checkpoint)
