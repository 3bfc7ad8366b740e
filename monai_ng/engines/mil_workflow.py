"""Training and evaluation of MIL networks through MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

The stock MONAI iteration is used as it is: :func:`prepare_bag_batch` hands the network the padded bags and their mask
(``network(x, mask=mask)``) and hands the loss a target dict (scan labels, mask, slice labels), so the loss
(:class:`monai_ng.losses.MILObjective`) sees the attention and the mask. Gradient-norm clipping runs on MONAI's
``BACKWARD_COMPLETED`` iteration event. Model selection follows Harvey, Loevlie & Hughes (2026): keep the epoch with
the best validation scan AUROC, optionally only among epochs whose train AUROC exceeds the validation AUROC.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler, ValidationHandler
from torch import nn
from torch.utils.data import DataLoader

from monai_ng.data.bag_dataset import BagKeys
from monai_ng.losses.mil_objective import unpack_mil_output
from monai_ng.metrics import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    ScanAUPRC,
    ScanAUROC,
)

__all__ = [
    "prepare_bag_batch",
    "GradientNormClipper",
    "SelectionScore",
    "BestStateKeeper",
    "TrainingConfig",
    "TrainingResult",
    "evaluation_metrics",
    "build_evaluator",
    "train_mil",
    "SliceScoreCollector",
    "evaluate_mil",
]

logger = logging.getLogger(__name__)

SELECTION_KEY = "selection_score"


def prepare_bag_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, Any], tuple, dict[str, torch.Tensor]]:
    """MONAI ``prepare_batch`` for collated bags (:func:`monai_ng.data.collate_bags`).

    Returns:
        ``(embeddings [B, N, D], target, (), {"mask": mask [B, N]})`` where ``target`` holds ``label`` ``[B]``,
        ``mask``, ``slice_labels`` ``[B, N]``, ``scan_id`` (list) and ``index`` ``[B]``; MONAI's iteration then calls
        ``network(embeddings, mask=mask)`` and ``loss(pred, target)``.
    """
    if not isinstance(batchdata, Mapping) or BagKeys.EMBEDDINGS not in batchdata or BagKeys.MASK not in batchdata:
        raise TypeError("prepare_bag_batch expects a dict from collate_bags with 'embeddings' and 'mask'")

    def _to(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, non_blocking=non_blocking, **kwargs)

    mask = _to(batchdata[BagKeys.MASK])
    target = {
        BagKeys.LABEL: _to(batchdata[BagKeys.LABEL]),
        BagKeys.MASK: mask,
        BagKeys.SLICE_LABELS: _to(batchdata[BagKeys.SLICE_LABELS]),
        BagKeys.SCAN_ID: batchdata.get(BagKeys.SCAN_ID),
        BagKeys.INDEX: batchdata.get(BagKeys.INDEX),
    }
    return _to(batchdata[BagKeys.EMBEDDINGS]), target, (), {"mask": mask}


class GradientNormClipper:
    """Clip the global gradient norm after every backward pass of a MONAI trainer (the paper clips at 1.0).

    Args:
        max_norm: the largest allowed total 2-norm of the gradients.
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)

    def attach(self, engine: SupervisedTrainer) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: SupervisedTrainer) -> None:
        scaler = getattr(engine, "scaler", None)
        if engine.amp and scaler is not None:
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


class SelectionScore:
    """Write the model-selection score into a validation evaluator's metrics at each epoch's end.

    ``selection_score`` = validation scan AUROC, or -inf when ``require_train_above_val`` and the train AUROC (from
    ``train_evaluator``) does not exceed it (the paper's rule). Attach it before :class:`BestStateKeeper` and
    MONAI's ``CheckpointSaver(key_metric_name="selection_score")``.
    """

    def __init__(
        self,
        metric_name: str = "scan_auroc",
        train_evaluator: Engine | None = None,
        require_train_above_val: bool = False,
    ) -> None:
        if require_train_above_val and train_evaluator is None:
            raise ValueError("require_train_above_val needs the train-set evaluator")
        self.metric_name = metric_name
        self.train_evaluator = train_evaluator
        self.require_train_above_val = require_train_above_val

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        val = float(engine.state.metrics[self.metric_name])
        score = val if math.isfinite(val) else -math.inf
        if self.require_train_above_val:
            train = float(self.train_evaluator.state.metrics.get(self.metric_name, math.nan))
            engine.state.metrics[f"train_{self.metric_name}"] = train
            if not train > val:
                score = -math.inf
        engine.state.metrics[SELECTION_KEY] = score


class BestStateKeeper:
    """Keep (in memory) the network state and metrics of the best epoch by ``selection_score``."""

    def __init__(self, network: nn.Module, trainer: Engine) -> None:
        self.network = network
        self.trainer = trainer
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        score = engine.state.metrics[SELECTION_KEY]
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = self.trainer.state.epoch
            self.best_metrics = {k: float(v) for k, v in engine.state.metrics.items() if _is_number(v)}
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.network.state_dict().items()})


def _loss_value(output: Mapping[str, Any]) -> float:
    return float(torch.as_tensor(output["loss"]).detach())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) or isinstance(v, torch.Tensor) and v.numel() == 1


def evaluation_metrics(with_localization: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(key metric, additional metrics)`` for a MONAI evaluator: scan AUROC as key, the rest additional."""
    key = {"scan_auroc": ScanAUROC()}
    extra: dict[str, Any] = {"scan_auprc": ScanAUPRC()}
    if with_localization:
        extra.update(
            loc_auroc=LocalizationAUROC(),
            loc_auprc=LocalizationAUPRC(),
            pooled_loc_auroc=PooledLocalizationAUROC(),
            positive_attention_mass=PositiveAttentionMass(),
        )
    return key, extra


def build_evaluator(
    network: nn.Module,
    loader: DataLoader,
    device: str | torch.device = "cpu",
    with_localization: bool = True,
    handlers: list | None = None,
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator`` over bag batches with scan and localization metrics."""
    key, extra = evaluation_metrics(with_localization)
    return SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network,
        prepare_batch=prepare_bag_batch,
        key_val_metric=key,
        additional_metrics=extra,
        val_handlers=handlers,
        decollate=False,
    )


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
        out_dir: where checkpoints and TensorBoard logs go (None: no files, best state kept in memory only).
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
        train_loader: shuffled bag batches (``collate_fn=collate_bags``).
        val_loader: validation bag batches.
        config: optimisation and selection settings.
        device: torch device.
        train_eval_loader: un-shuffled train batches, evaluated each epoch when ``require_train_above_val``.

    Returns:
        :class:`TrainingResult`; the network is left holding the best epoch's weights. With ``config.out_dir``, the
        best weights are also saved by MONAI's ``CheckpointSaver`` as ``best_model.pt`` (load with
        ``torch.load(path, weights_only=True)``).
    """
    if config.max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {config.max_epochs}")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")
    selectable = ("scan_auroc", "scan_auprc", "loc_auroc", "loc_auprc", "pooled_loc_auroc", "positive_attention_mass")
    if config.selection_metric not in selectable:
        raise ValueError(f"selection_metric must be one of {selectable}, got {config.selection_metric!r}")
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
        train_handlers=train_handlers,
        decollate=False,
    )
    if config.clip_norm is not None:
        GradientNormClipper(config.clip_norm).attach(trainer)
    keeper = BestStateKeeper(network, trainer)
    keeper.attach(evaluator)
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        CheckpointSaver(
            save_dir=str(out_dir),
            save_dict={"network": network},
            save_key_metric=True,
            key_metric_name=SELECTION_KEY,
            key_metric_filename="best_model.pt",
        ).attach(evaluator)
        checkpoint = out_dir / "best_model.pt"
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
        row.update({k: float(v) for k, v in engine.state.metrics.items() if _is_number(v)})
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
    return TrainingResult(keeper.best_epoch, keeper.best_score, keeper.best_metrics, history, checkpoint)


class SliceScoreCollector:
    """Collect per-scan probabilities and per-slice attention from an evaluator's iterations.

    After a run, :meth:`scan_frame` has one row per scan (``scan_id``, ``label``, ``probability``, ``n_slices``) and
    :meth:`slice_frame` one row per valid slice (``scan_id``, ``slice`` 0-based inferior -> superior, ``attention``
    head-averaged, ``attention_h<k>`` per head when H > 1, ``slice_label``).
    """

    def __init__(self) -> None:
        self._scans: list[dict[str, Any]] = []
        self._slices: list[dict[str, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def reset(self) -> None:
        self._scans, self._slices = [], []

    def __call__(self, engine: Engine) -> None:
        logits, attention, _ = unpack_mil_output(engine.state.output["pred"])
        target = engine.state.output["label"]
        probs = torch.sigmoid(logits.detach().float()).cpu().numpy()
        att = attention.detach().float().cpu().numpy()  # [B, N, H]
        mask = target[BagKeys.MASK].cpu().numpy()
        sl = target[BagKeys.SLICE_LABELS].cpu().numpy()
        labels = target[BagKeys.LABEL].cpu().numpy()
        ids = target.get(BagKeys.SCAN_ID) or [str(i) for i in range(att.shape[0])]
        for b, scan_id in enumerate(ids):
            valid = mask[b]
            n = int(valid.sum())
            self._scans.append(
                {"scan_id": scan_id, "label": int(labels[b]), "probability": float(probs[b]), "n_slices": n}
            )
            cols = {
                "scan_id": np.full(n, scan_id, dtype=object),
                "slice": np.arange(n),
                "attention": att[b, valid].mean(axis=-1),
                "slice_label": sl[b, valid].astype(np.int64),
            }
            if att.shape[-1] > 1:
                cols.update({f"attention_h{k}": att[b, valid, k] for k in range(att.shape[-1])})
            self._slices.append(cols)

    def scan_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._scans, columns=["scan_id", "label", "probability", "n_slices"])

    def slice_frame(self) -> pd.DataFrame:
        if not self._slices:
            return pd.DataFrame(columns=["scan_id", "slice", "attention", "slice_label"])
        keys = list(self._slices[0])
        return pd.DataFrame({k: np.concatenate([s[k] for s in self._slices]) for k in keys})


def evaluate_mil(
    network: nn.Module, loader: DataLoader, device: str | torch.device = "cpu"
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Evaluate a MIL network with a MONAI evaluator.

    Returns:
        ``(metrics, scan_scores, slice_scores)``: the metric values (scan and localization, with skipped counts), one
        row per scan and one row per valid slice (see :class:`SliceScoreCollector`).
    """
    collector = SliceScoreCollector()
    evaluator = build_evaluator(network.to(torch.device(device)), loader, device, handlers=[collector])
    evaluator.run()
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if _is_number(v)}
    return metrics, collector.scan_frame(), collector.slice_frame()
