"""MONAI workflow wiring for MIL: batch preparation, event handlers, training and evaluation."""

from __future__ import annotations

from monai_ng.engines.bag_batch import prepare_bag_batch
from monai_ng.engines.evaluation import build_evaluator, evaluate_mil, evaluation_metrics
from monai_ng.engines.handlers import (
    SELECTION_KEY,
    BestStateKeeper,
    GradientNormClipper,
    SelectionScore,
    SliceScoreCollector,
    numeric_metrics,
)
from monai_ng.engines.training import TrainingConfig, TrainingResult, train_mil

__all__ = [
    "SELECTION_KEY",
    "BestStateKeeper",
    "GradientNormClipper",
    "SelectionScore",
    "SliceScoreCollector",
    "TrainingConfig",
    "TrainingResult",
    "build_evaluator",
    "evaluate_mil",
    "evaluation_metrics",
    "numeric_metrics",
    "prepare_bag_batch",
    "train_mil",
]
