"""MONAI workflow wiring for MIL: batch preparation, gradient clipping, model selection, train/evaluate."""

from __future__ import annotations

from monai_ng.engines.mil_workflow import (
    BestStateKeeper,
    GradientNormClipper,
    SelectionScore,
    TrainingConfig,
    TrainingResult,
    build_evaluator,
    evaluation_metrics,
    prepare_bag_batch,
    train_mil,
)

__all__ = [
    "BestStateKeeper",
    "GradientNormClipper",
    "SelectionScore",
    "TrainingConfig",
    "TrainingResult",
    "build_evaluator",
    "evaluation_metrics",
    "prepare_bag_batch",
    "train_mil",
]
