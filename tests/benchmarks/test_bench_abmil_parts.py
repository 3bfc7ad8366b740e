"""Tests of ``benchmarks/bench_abmil_parts.py`` (ABMIL's eval stages and training phases, with their floors)."""

from __future__ import annotations

import json
import time
from types import ModuleType

import pytest
import torch
from benchmark_script import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_abmil_parts")


def test_staged_forward_is_the_network_forward(bench):
    torch.manual_seed(0)
    side = bench.OurSide(bench.ModelSpec("ABMIL", "abmil", False), torch.device("cpu"), None, lr=1e-3)
    items = bench.our_items(bench.shifted_mean_bags(1, 3, 9, 5))
    x, _, kwargs = side.batch(items)
    net = side.network.eval()
    marks = [time.perf_counter()]
    with torch.inference_mode():
        staged = bench.staged_forward(net, x, kwargs["mask"], marks)
        whole = net(x, **kwargs)
    assert len(marks) == len(bench.EVAL_STAGES) - 1  # one mark per timed network stage
    assert marks == sorted(marks)
    torch.testing.assert_close(staged.logits, whole.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(staged.attention, whole.attention, rtol=0, atol=1e-7)


def test_main_writes_every_stage_phase_and_floor(bench, tmp_path):
    out = tmp_path / "parts.json"
    argv = ["--regimes", "20-60", "--threads", "1", "--rounds", "1", "--copy-mb", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["regime"] == "20-60" and rows[0]["threads"] == 1
    assert 20 * bench.BATCH <= rows[0]["rows"] <= 60 * bench.BATCH
    assert set(rows[0]["eval"]) == set(bench.EVAL_STAGES) and set(rows[0]["train"]) == set(bench.TRAIN_PHASES)
    assert all(v > 0 for part in ("eval", "train", "floors", "copy") for v in rows[0][part].values())
    floors = rows[0]["floors"]
    assert floors["products_ms"] == pytest.approx(floors["projection_ms"] + floors["weight_gradient_ms"])
    assert "| 20-60 | 1 |" in json.loads(out.read_text())["markdown"]


def test_bad_arguments_are_refused(bench, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--rounds", "0", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()
