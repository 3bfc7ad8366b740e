"""MIL metrics: hand-computed scan and localization values through an ignite engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from monai_ng.metrics import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    ScanAUPRC,
    ScanAUROC,
)
from monai_ng.networks import MILOutput

# four bags padded to 4 slices; slice labels -1 = unknown or padding
ATT = [[0.1, 0.4, 0.3, 0.2], [0.2, 0.5, 0.3, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
SL = [[0, 1, 1, 0], [1, 0, 0, -1], [1, 1, -1, -1], [0, 0, 0, 0]]
LENGTHS = [4, 3, 2, 4]
LABELS = [1.0, 1.0, 1.0, 0.0]
LOGITS = [2.0, 1.0, 0.5, 1.5]


def _batches(heads: int = 1):
    mask = torch.arange(4)[None] < torch.tensor(LENGTHS)[:, None]
    att = torch.tensor(ATT)
    if heads > 1:  # two heads whose mean is ATT
        delta = 0.05 * mask.float()
        att = torch.stack([att + delta, att - delta], dim=-1)
    else:
        att = att.unsqueeze(-1)
    full = {
        "pred": MILOutput(torch.tensor(LOGITS), att),
        "label": {"label": torch.tensor(LABELS), "mask": mask, "slice_labels": torch.tensor(SL, dtype=torch.int8)},
    }

    def part(sl):  # split the batch in two iterations to exercise accumulation
        return {
            "pred": MILOutput(full["pred"].logits[sl], full["pred"].attention[sl]),
            "label": {k: v[sl] for k, v in full["label"].items()},
        }

    return [part(slice(0, 2)), part(slice(2, 4))]


def _run(metrics, heads=1):
    engine = Engine(lambda e, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    engine.run(_batches(heads), max_epochs=1)
    return engine.state.metrics


@pytest.mark.parametrize("heads", [1, 2])
def test_hand_computed_metrics(heads):
    m = _run(
        {
            "scan_auroc": ScanAUROC(),
            "scan_auprc": ScanAUPRC(),
            "loc": LocalizationAUROC(),
            "loc_pr": LocalizationAUPRC(),
            "pooled": PooledLocalizationAUROC(),
            "mass": PositiveAttentionMass(),
        },
        heads,
    )
    # scan: positives score 2, 1, 0.5 against the negative's 1.5 -> 1 of 3 pairs
    assert m["scan_auroc"] == pytest.approx(1 / 3)
    # AP: ranking 2 (+), 1.5 (-), 1 (+), 0.5 (+): precisions at positives 1, 2/3, 3/4 -> mean
    assert m["scan_auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # bag 1: positives {0.4, 0.3} beat negatives {0.1, 0.2} -> 1; bag 2: positive 0.2 below {0.5, 0.3} -> 0;
    # bag 3 has no negative slice -> skipped; bag 4 is negative -> not scored
    assert m["loc"] == pytest.approx(0.5)
    assert m["loc_skipped"] == 1 and m["loc_scored"] == 2
    # AP bag 1 = 1; bag 2: ranking 0.5 (-), 0.3 (-), 0.2 (+) -> 1/3
    assert m["loc_pr"] == pytest.approx((1 + 1 / 3) / 2)
    # pooled over positive bags, scores S * a: positives 1.6, 1.2, 0.6, 1.0, 1.0; negatives 0.4, 0.8, 1.5, 0.9
    # -> 4 + 3 + 1 + 3 + 3 = 14 of 20 pairs ordered correctly
    assert m["pooled"] == pytest.approx(14 / 20)
    # attention on positive slices: 0.7, 0.2, 1.0
    assert m["mass"] == pytest.approx((0.7 + 0.2 + 1.0) / 3)


def test_one_class_gives_nan_with_warning():
    engine = Engine(lambda e, batch: batch)
    ScanAUROC().attach(engine, "auc")
    batch = _batches()[0]  # two positive bags only
    with pytest.warns(UserWarning, match="one class"):
        engine.run([batch], max_epochs=1)
    assert math.isnan(engine.state.metrics["auc"])


def test_metric_requires_data():
    with pytest.raises(RuntimeError, match="at least one example"):  # ignite's NotComputableError
        ScanAUROC().compute()


def test_fast_binary_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from monai_ng.metrics import binary_auroc, binary_average_precision

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        s = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.normal(size=n)  # with and without ties
        assert binary_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert binary_average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_scan_metrics_are_ignite_epoch_metrics_equal_to_scikit_learn():
    from ignite.metrics import ROC_AUC, AveragePrecision
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=40), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, 40), dtype=torch.float32)
    batches = [
        {"pred": MILOutput(logits[i : i + 16], torch.ones(len(logits[i : i + 16]), 1, 1)),
         "label": {"label": labels[i : i + 16]}}
        for i in range(0, 40, 16)
    ]  # fmt: skip
    engine = Engine(lambda e, batch: batch)
    auroc, auprc = ScanAUROC(), ScanAUPRC()
    assert isinstance(auroc, ROC_AUC) and isinstance(auprc, AveragePrecision)
    auroc.attach(engine, "auroc")
    auprc.attach(engine, "auprc")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["auroc"] == roc_auc_score(labels.numpy(), logits.numpy())
    assert engine.state.metrics["auprc"] == average_precision_score(labels.numpy(), logits.numpy())
