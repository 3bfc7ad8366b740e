"""MIL metrics under torch.distributed: 2 CPU processes (gloo) holding unequal shares of the epoch's bags report the
metrics of the whole epoch -- the hand-computed values of test_mil_metrics.py, the same on both ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine
from metrics.test_mil_metrics import ATT, LABELS, LENGTHS, LOGITS, SL

from monai_ng.metrics import (
    LocalizationAUPRC,
    LocalizationAUROC,
    PooledLocalizationAUROC,
    PositiveAttentionMass,
    ScanAUPRC,
    ScanAUROC,
)
from monai_ng.networks import MILOutput

# the four hand-computed bags of test_mil_metrics.py; rank 0 gets bags 0-2 (two iterations), rank 1 bag 3
SHARDS = {0: [slice(0, 2), slice(2, 3)], 1: [slice(3, 4)]}


def _batch(sl: slice) -> dict:
    mask = torch.arange(4)[None] < torch.tensor(LENGTHS)[:, None]
    label = {"label": torch.tensor(LABELS), "mask": mask, "slice_labels": torch.tensor(SL, dtype=torch.int8)}
    return {
        "pred": MILOutput(torch.tensor(LOGITS)[sl], torch.tensor(ATT)[sl].unsqueeze(-1)),
        "label": {k: v[sl] for k, v in label.items()},
    }


def _worker(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        engine = Engine(lambda e, batch: batch)
        metrics = {
            "scan_auroc": ScanAUROC(),
            "scan_auprc": ScanAUPRC(),
            "loc": LocalizationAUROC(),
            "loc_pr": LocalizationAUPRC(),
            "pooled": PooledLocalizationAUROC(),
            "mass": PositiveAttentionMass(),
        }
        for name, metric in metrics.items():
            metric.attach(engine, name)
        engine.run([_batch(s) for s in SHARDS[rank]], max_epochs=2)  # the second epoch: gathered afresh
        out[rank] = dict(engine.state.metrics)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed gloo missing")
def test_metrics_gather_every_rank_bags(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()  # fork: no re-import in the children (spawn takes ~1 minute on a loaded 2-core box)
        mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"), out), nprocs=2, start_method="fork")
        ranks = [dict(out[0]), dict(out[1])]
    assert ranks[0] == ranks[1]
    m = ranks[0]
    assert m["scan_auroc"] == pytest.approx(1 / 3)
    assert m["scan_auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["loc"] == pytest.approx(0.5)
    assert m["loc_skipped"] == 1 and m["loc_scored"] == 2
    assert m["loc_pr"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["pooled"] == pytest.approx(14 / 20)
    assert m["mass"] == pytest.approx((0.7 + 0.2 + 1.0) / 3)
