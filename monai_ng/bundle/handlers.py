"""Event handlers that make a bundle's training switches plain config values (null / 0 / false disables them).

MONAI's ``--tracking mlflow`` and ``ConfigWorkflow.check_properties()`` need ``train#handlers`` and
``validate#handlers`` to be lists of ``_target_`` components, so a switch cannot drop a handler from the list with an
expression; these handlers take the switch as an argument instead:

* :class:`OptionalGradientClipper`: the paper's gradient-norm clip (1.0), ``max_norm: null`` disables it.
* :class:`ModelSelectionScore`: writes ``selection_score`` into the validation metrics each validation: the
  validation scan AUROC, or, with ``require_train_above_val`` (Harvey, Loevlie & Hughes 2026), -inf for epochs whose
  train scan AUROC does not exceed it (the train AUROC is computed here, on un-shuffled train bags).
  ``CheckpointSaver`` keeps the best epoch by this score.
* :class:`ValidationEarlyStopping`: stop training after ``patience`` validations without a better score (0 disables).
* :class:`ScanScoresSaver`: evaluation: ``scan_scores.csv`` and ``slice_scores.csv`` (per-scan details).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader

from monai_ng.engines.evaluation import build_evaluator
from monai_ng.engines.handlers import SELECTION_KEY, GradientNormClipper, SelectionScore, SliceScoreCollector

__all__ = ["ModelSelectionScore", "OptionalGradientClipper", "ScanScoresSaver", "ValidationEarlyStopping"]

logger = logging.getLogger(__name__)


class OptionalGradientClipper:
    """Clip the global gradient norm after each backward pass (``max_norm`` None or 0: no clipping)."""

    def __init__(self, max_norm: float | None = 1.0) -> None:
        self.clipper = GradientNormClipper(float(max_norm)) if max_norm else None

    def attach(self, engine: Engine) -> None:
        if self.clipper is not None:
            self.clipper.attach(engine)


class ModelSelectionScore:
    """Write ``selection_score`` into a validation evaluator's metrics (attach it first in ``validate#handlers``).

    Args:
        metric_name: the validation metric that selects (``scan_auroc``).
        require_train_above_val: the paper's rule: only epochs whose train scan AUROC exceeds the validation one.
        network: the trained network (needed with the rule).
        train_loader: un-shuffled train bag batches (needed with the rule).
        device: device of the train evaluation.
    """

    def __init__(
        self,
        metric_name: str = "scan_auroc",
        require_train_above_val: bool = False,
        network: nn.Module | None = None,
        train_loader: DataLoader | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.train_evaluator = None
        if require_train_above_val:
            if network is None or train_loader is None:
                raise ValueError("require_train_above_val needs network and train_loader")
            self.train_evaluator = build_evaluator(network, train_loader, device, with_localization=False)
        self.score = SelectionScore(metric_name, self.train_evaluator, bool(require_train_above_val))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.train_evaluator is not None:
            self.train_evaluator.run()
        self.score(engine)


class ValidationEarlyStopping:
    """Stop the trainer after ``patience`` validations without improvement of ``score_name`` (0 disables).

    Attach it to the trainer, after the ``ValidationHandler`` (it reads the evaluator's metrics at the end of each
    trainer epoch on which the evaluator ran). Non-finite scores never count as an improvement.
    """

    def __init__(self, evaluator: Engine, patience: int = 0, score_name: str = SELECTION_KEY, min_delta: float = 0.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0 (0 disables early stopping), got {patience!r}")
        self.evaluator = evaluator
        self.patience = patience
        self.score_name = score_name
        self.min_delta = float(min_delta)
        self.best = -math.inf
        self.bad = 0
        self._seen_epoch = -1

    def attach(self, engine: Engine) -> None:
        if self.patience > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = self.evaluator.state
        if state is None or state.epoch == self._seen_epoch or self.score_name not in (state.metrics or {}):
            return
        self._seen_epoch = state.epoch
        score = float(state.metrics[self.score_name])
        if math.isfinite(score) and score > self.best + self.min_delta:
            self.best, self.bad = score, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            logger.info(
                "early stopping at epoch %d: no better %s for %d validations",
                engine.state.epoch,
                self.score_name,
                self.bad,
            )
            engine.terminate()


class ScanScoresSaver:
    """Write the per-scan probabilities (``scan_scores.csv``) and per-slice attention (``slice_scores.csv``)."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.collector = SliceScoreCollector()

    def attach(self, engine: Engine) -> None:
        self.collector.attach(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.collector.scan_frame().to_csv(self.output_dir / "scan_scores.csv", index=False)
        self.collector.slice_frame().to_csv(self.output_dir / "slice_scores.csv", index=False)
