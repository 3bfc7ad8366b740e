"""Tests of the pure parts of ``benchmarks/bench_epoch.py`` (one epoch end to end, ours against the paper's code)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from benchmark_script import load_script

from monai_ng.data.embedding_store import EmbeddingStore, EmbeddingStoreWriter
from monai_ng.networks import build_mil_network

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The script as a module (``sys.path`` restored after its import)."""
    return load_script("bench_epoch")


def _store(path: Path, lengths: list[int], labels: list[int]) -> tuple[EmbeddingStore, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((sum(lengths), 8)).astype(np.float16)
    with EmbeddingStoreWriter(path, dim=8, dtype="float16") as w:
        start = 0
        for i, (n, y) in enumerate(zip(lengths, labels, strict=True)):
            w.add_scan(f"s{i}", f"p{i}", y, rows[start : start + n], np.zeros(n, np.int8))
            start += n
    return EmbeddingStore(path), rows


def test_skips_without_official_src(bench, tmp_path, capsys):
    out = tmp_path / "epoch.json"
    assert bench.main(["--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("bench_epoch: skipped: no --official-src given")
    assert not out.exists()


def test_arguments_are_checked(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--amp", "bf16"])  # autocast needs CUDA
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "NoSuchModel"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])
    assert bench.parse_args([]).models == ["ABMIL+NG", "TransMIL+NG"]


def test_performance_doc_has_the_markers(bench):
    text = (REPO / "docs" / "performance.md").read_text()
    for begin, end in bench.DOCS_MARKERS.values():
        assert text.count(begin) == 1 and text.count(end) == 1
        assert text.index(begin) < text.index(end)


def test_their_training_set_is_the_store_as_float32(bench, tmp_path):
    store, rows = _store(tmp_path / "store", [3, 5, 2], [1, 0, 1])
    x, lengths, y = bench.their_training_set(store)
    assert x.dtype == torch.float32 and tuple(x.shape) == (10, 8)
    assert torch.equal(x, torch.from_numpy(rows.astype(np.float32)))  # fp16 -> fp32 is exact
    assert lengths == (3, 5, 2)
    assert torch.equal(y, torch.tensor([[1.0], [0.0], [1.0]]))


def test_our_epoch_trains_on_every_bag(bench, tmp_path):
    store, _ = _store(tmp_path / "store", [4, 6, 3, 7, 5], [1, 0, 1, 0, 1])
    spec = bench.ModelSpec("ABMIL+NG", "abmil", True)
    side = bench.OurSide(spec, torch.device("cpu"), None, 1e-2)
    side.network = build_mil_network("abmil", 8)  # the store's width, not the 768 of the benchmark
    side.optimizer = torch.optim.SGD(side.network.parameters(), lr=1e-2, momentum=0.9)
    before = [p.detach().clone() for p in side.network.parameters()]
    epoch = bench.OurEpoch(side, store, workers=0)
    trainer = epoch.trainer()
    trainer.run()
    assert trainer.state.iteration == 1  # 5 bags, batch 64
    assert any(not torch.equal(a, b) for a, b in zip(before, side.network.parameters(), strict=True))
    assert epoch.data_only() == 25


def test_markdown(bench):
    row = {
        "model": "ABMIL+NG",
        "theirs_s": [10.0, 12.0],
        "ours_s": [4.0, 5.0],
        "theirs_bags_per_s": 2000.0,
        "ours_bags_per_s": 4800.0,
        "ratio": 2.4,
        "ours_fp32_s": 6.0,
        "data_only_s": 1.5,
        "data_share": 1.5 / 4.5,
        "theirs_peak_gib": 1.25,
        "ours_peak_gib": 0.5,
    }
    results = {"bags": 21_744, "slices": 752_803, "rounds": 2, "amp": "bf16", "timings": [row]}
    lines = bench.markdown(results).splitlines()
    assert lines[0].startswith("One epoch over the head-CT-sized synthetic store (21,744 bags, 752,803 slices")
    assert "autocast bf16 on both sides" in lines[0]
    assert lines[-1] == "| ABMIL+NG | 11.00 / 4.50 | 2000 / 4800 | 2.40 | 6.00 | 1.50 (33 %) | 1.25 / 0.50 |"
    plain = bench.markdown(dict(results, amp=None, bags=100, interrupted=True)).splitlines()
    assert plain[0].startswith("One epoch over a synthetic store (100 bags")
    assert "fp32" not in plain[2] and plain[-1].startswith("Interrupted (SIGINT) after 1 model(s)")


def test_pageable_epochs_need_cuda(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--also-pageable"])
    assert bench.parse_args(["--device", "cuda", "--also-pageable"]).also_pageable


@pytest.mark.parametrize(
    ("device", "pinned", "expected"), [("cuda", True, True), ("cuda", False, False), ("cpu", True, False)]
)
def test_our_epoch_pins_and_copies_without_blocking_on_cuda_only(bench, tmp_path, device, pinned, expected):
    """Built only (nothing runs on the device, so no GPU is needed): the loader's ``pin_memory`` and the trainer's
    ``non_blocking`` follow ``pinned`` on CUDA, and are off elsewhere."""
    from types import SimpleNamespace

    store, _ = _store(tmp_path / "store", [4, 6, 3], [1, 0, 1])
    network = build_mil_network("abmil", 8)
    side = SimpleNamespace(
        device=torch.device(device),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1e-2),
        criterion=torch.nn.Identity(),
        amp=None,
    )
    epoch = bench.OurEpoch(side, store, workers=0, pinned=pinned)
    assert epoch.loader.pin_memory is expected
    assert epoch.trainer().non_blocking is expected


def test_the_table_gains_the_pageable_column_when_measured(bench):
    row = {
        "model": "ABMIL+NG",
        "theirs_s": [10.0],
        "ours_s": [2.0],
        "theirs_bags_per_s": 100.0,
        "ours_bags_per_s": 500.0,
        "ratio": 5.0,
        "data_only_s": 1.0,
        "data_share": 0.5,
    }
    results = {"amp": None, "bags": 1000, "slices": 30000, "rounds": 1, "timings": [row]}
    assert "pageable" not in bench.markdown(results)
    row["ours_pageable_s"] = 2.5
    table = bench.markdown(results).splitlines()
    assert "our epoch, pageable batches and blocking copies, s" in table[2]
    assert table[3].count("|") == table[2].count("|") == table[4].count("|")
    assert "| 5.00 | 2.50 | 1.00 (50 %) |" in table[4]
