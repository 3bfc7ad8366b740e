"""Event handlers for the MIL engines: gradient clipping, model selection, best-state keeping, score collection.

Gradient-norm clipping runs on MONAI's ``BACKWARD_COMPLETED`` iteration event. Model selection follows Harvey, Loevlie
& Hughes (2026): keep the epoch with the best validation scan AUROC, optionally only among epochs whose train AUROC
exceeds the validation AUROC.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from torch import nn

from monai_ng.data.bag_dataset import BagKeys
from monai_ng.networks.mil_network import unpack_mil_output

__all__ = [
    "SELECTION_KEY",
    "GradientNormClipper",
    "SelectionScore",
    "BestStateKeeper",
    "SliceScoreCollector",
    "numeric_metrics",
]

SELECTION_KEY = "selection_score"


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
    anything that reads ``selection_score``.
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
            self.best_metrics = numeric_metrics(engine.state.metrics)
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.network.state_dict().items()})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) or isinstance(v, torch.Tensor) and v.numel() == 1


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of an engine's ``state.metrics`` as floats (per-bag lists and the like left out)."""
    return {k: float(v) for k, v in metrics.items() if _is_number(v)}


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
