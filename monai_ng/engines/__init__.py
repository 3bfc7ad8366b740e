"""MONAI workflow wiring for MIL: batch preparation, gradient clipping, model selection, train/evaluate."""

from __future__ import annotations

from monai_ng.engines.mil_workflow import (
    BestStateKeeper,
    GradientNormClipper,
    SelectionScore,
    SliceScoreCollector,
    TrainingConfig,
    TrainingResult,
    build_evaluator,
    evaluate_mil,
    evaluation_metrics,
    prepare_bag_batch,
    train_mil,
)

__all__ = [
    "BestStateKeeper",
    "GradientNormClipper",
    "SelectionScore",
    "SliceScoreCollector",
    "TrainingConfig",
    "TrainingResult",
    "build_evaluator",
    "evaluate_mil",
    "evaluation_metrics",
    "prepare_bag_batch",
    "train_mil",
]
