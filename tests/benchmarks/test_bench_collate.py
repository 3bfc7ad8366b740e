"""Tests of ``benchmarks/bench_collate.py`` (recycled batch buffers against fresh arrays, side by side)."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
import torch
from benchmark_script import load_script

from monai_ng.data.host_buffers import batch_buffer_reuse_enabled


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_collate")


def test_bag_lengths_are_in_range_and_reproducible(bench):
    lengths = bench.bag_lengths(20, 60, 500, seed=3)
    assert len(lengths) == 500 and min(lengths) >= 20 and max(lengths) <= 60
    assert lengths == bench.bag_lengths(20, 60, 500, seed=3)
    with pytest.raises(ValueError, match="1 <= low <= high"):
        bench.bag_lengths(5, 4, 10)


def test_batch_makers_collate_whole_batches(bench):
    lengths = [3, 5] * bench.BATCH + [2]  # two full batches and one bag left over (dropped)
    makers = bench.batch_makers(lengths)
    assert len(makers) == 2
    batch = makers[1]()
    assert batch["embeddings"].shape == (4 * bench.BATCH, bench.DIM)
    assert batch["embeddings"].dtype == torch.float32
    assert batch["n_slices"].tolist() == [3, 5] * (bench.BATCH // 2)


def test_run_sequence_keeps_the_last_batches_alive(bench):
    seen: list[int] = []

    def maker(k):
        def make():
            seen.append(k)
            return {"k": k}

        return make

    steps: list[int] = []
    collate, whole = bench.run_sequence([maker(k) for k in range(4)], keep=2, step=lambda b: steps.append(b["k"]))
    assert len(collate) == len(whole) == 4 and all(0 <= c <= w for c, w in zip(collate, whole, strict=True))
    assert seen == [0, 1, 2, 3] and steps == [0, 1, 2, 3]


def test_main_writes_rows_and_leaves_reuse_on(bench, tmp_path):
    out = tmp_path / "collate.json"
    argv = ["--rounds", "2", "--batches", "1", "--regimes", "20-60", "--keep", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert [(r["regime"], r["between"], r["keep"]) for r in rows] == [
        ("20-60", "data only", 1),
        ("20-60", "with a step", 1),
    ]
    assert "step" not in rows[0] and "step" in rows[1]
    for r in rows:
        for part in ("collate", "step") if "step" in r else ("collate",):
            assert set(r[part]["ms"]) == {"fresh", "recycled"} and r[part]["ratio"] > 0
        assert r["batch_mb"] > 0
    assert rows[1]["step"]["ms"]["fresh"] > rows[1]["collate"]["ms"]["fresh"]
    assert "| 20-60 slices | with a step | 1 |" in results["markdown"]
    assert batch_buffer_reuse_enabled()
