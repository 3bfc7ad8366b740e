"""Batch buffers recycled (:mod:`monai_ng.data.host_buffers`) against a fresh array per batch, side by side (issue 12).

Why :class:`~monai_ng.data.host_buffers.HostBufferPool` exists: this measures it. The packed collate
(:func:`~monai_ng.data.collate_packed_bags`) of float32 items held in memory makes one large array per 64-bag batch
(``[T, 768]``; the path of ``benchmarks/bench_official.py`` and of any in-memory dataset). (A training loader on an
embedding store takes another path: ``BagDataset.__getitems__`` reads one block that the collate takes as it is. Pooling
that read was measured too, 0.95-1.09x over 21 rounds, neutral, and is not done; see ``docs/performance.md``.)

Both for bags of 20-60 and 100-300 slices, while the last ``--keep`` batches stay alive (as in a training loop: the
batch being built, the one in the engine's state, one more in its output), one batch after another, either back to
back (``data only``) or with an ABMIL training step (forward, backward, SGD; not timed) on each batch before the next
is built (``with a step``: the network's own allocations come and go between batches, as in training). In each of
``--rounds`` rounds the two settings (``set_batch_buffer_reuse`` off, then on, order alternating) run the same batch
sequence; a cell is the median over rounds of the median per-batch time, the ratio the median of per-round ratios
(fresh / recycled: above 1 means recycling is faster), for the collate alone and for collate + step.

Usage::

    python3 benchmarks/bench_collate.py                                  # 1 thread, keep 1 2, 7 rounds
    python3 benchmarks/bench_collate.py --keep 2 --rounds 3 --out benchmarks/results/collate.json
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.data import collate_packed_bags  # noqa: E402
from monai_ng.data.host_buffers import batch_buffer_pool, set_batch_buffer_reuse  # noqa: E402
from monai_ng.engines import prepare_bag_batch  # noqa: E402
from monai_ng.losses.mil_objective import MILObjective  # noqa: E402
from monai_ng.networks import build_mil_network  # noqa: E402

DIM = 768
BATCH = 64
REGIMES = {"20-60": (20, 60), "100-300": (100, 300)}


def bag_lengths(low: int, high: int, n: int, seed: int = 0) -> list[int]:
    """``n`` bag lengths drawn from U{low..high}."""
    if not 1 <= low <= high:
        raise ValueError(f"bag_lengths: need 1 <= low <= high, got {low}, {high}")
    return np.random.default_rng(seed).integers(low, high + 1, size=n).tolist()


def memory_items(lengths: Sequence[int], seed: int = 0) -> list[dict[str, Any]]:
    """Bag items with float32 ``[S, 768]`` embeddings held in memory (as ``BagDataset`` yields them)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "embeddings": torch.from_numpy(rng.standard_normal((n, DIM), dtype=np.float32)),
            "label": k % 2,
            "slice_labels": torch.full((n,), -1, dtype=torch.int8),
            "scan_id": f"bag{k}",
            "index": k,
        }
        for k, n in enumerate(lengths)
    ]


def batch_makers(lengths: Sequence[int]) -> list[Callable[[], dict[str, Any]]]:
    """One callable per 64-bag batch of in-memory float32 items, each collating that batch."""
    items = memory_items(lengths)
    return [lambda b=b: collate_packed_bags(items[b * BATCH : (b + 1) * BATCH]) for b in range(len(lengths) // BATCH)]


class TrainStep:
    """One ABMIL training step (forward, backward, clipped SGD) on a collated batch: the work between two batches."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.network = build_mil_network("abmil", DIM)
        self.objective = MILObjective()
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=1e-3)

    def __call__(self, batch: dict[str, Any]) -> None:
        x, target, _, kwargs = prepare_bag_batch(batch, torch.device("cpu"))
        self.optimizer.zero_grad(set_to_none=True)
        self.objective(self.network(x, **kwargs), target).backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()


def run_sequence(
    makers: Sequence[Callable[[], dict[str, Any]]], keep: int, step: Callable[[dict[str, Any]], None] | None = None
) -> tuple[list[float], list[float]]:
    """Per-batch seconds ``(collate, collate + step)`` of building each batch in turn while the last ``keep`` batches
    stay alive, ``step`` running on each batch before the next is built."""
    alive: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(keep, 1))
    collate, whole = [], []
    for make in makers:
        start = time.perf_counter()
        batch = make()
        collate.append(time.perf_counter() - start)
        if step is not None:
            step(batch)
        whole.append(time.perf_counter() - start)
        if keep > 0:
            alive.append(batch)
        del batch
    return collate, whole


def measure(
    makers: Sequence[Callable[[], dict[str, Any]]],
    keep: int,
    rounds: int,
    step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Interleaved fresh / recycled per-batch medians over ``rounds`` rounds and their per-round ratios, for the
    collate alone and (with ``step``) for collate + step."""
    sides = ("fresh", "recycled")
    per_round: dict[str, dict[str, list[float]]] = {"collate": {s: [] for s in sides}, "step": {s: [] for s in sides}}
    reused_before = batch_buffer_pool_stats()
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            set_batch_buffer_reuse(side == "recycled")
            collate, whole = run_sequence(makers, keep, step)
            per_round["collate"][side].append(statistics.median(collate))
            per_round["step"][side].append(statistics.median(whole))
    set_batch_buffer_reuse(True)
    nbytes = sum(make()["embeddings"].nbytes for make in makers[:3]) / 3
    row: dict[str, Any] = {"keep": keep, "batch_mb": nbytes / 1e6}
    for what, times in per_round.items():
        if what == "step" and step is None:
            continue
        row[what] = {
            "ms": {side: 1e3 * statistics.median(ts) for side, ts in times.items()},
            "ratio": statistics.median(f / c for f, c in zip(times["fresh"], times["recycled"], strict=True)),
        }
    row["reused"] = batch_buffer_pool_stats() - reused_before
    return row


def batch_buffer_pool_stats() -> int:
    """Requests served from a recycled buffer so far (0 when reuse is off)."""
    pool = batch_buffer_pool()
    return pool.reused if pool is not None else 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| bags | between batches | batches kept alive | batch array | collate ms, fresh / recycled (ratio) "
        "| collate + ABMIL train step ms, fresh / recycled (ratio) | collate share of that step, fresh / recycled |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        c = row["collate"]
        cells = [f"{c['ms']['fresh']:.2f} / {c['ms']['recycled']:.2f} ({c['ratio']:.2f}×)", "–", "–"]
        if "step" in row:
            s = row["step"]
            cells[1] = f"{s['ms']['fresh']:.2f} / {s['ms']['recycled']:.2f} ({s['ratio']:.2f}×)"
            cells[2] = " / ".join(f"{100 * c['ms'][k] / s['ms'][k]:.1f} %" for k in ("fresh", "recycled"))
        lines.append(
            f"| {row['regime']} slices | {row['between']} | {row['keep']} | {row['batch_mb']:.1f} MB {row['dtype']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--between", nargs="+", default=["data only", "with a step"], choices=["data only", "with a step"]
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=8, help="64-bag batches per sequence")
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "collate.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batches < 1 or any(k < 0 for k in args.keep):
        parser.error("--rounds and --batches must be >= 1 and --keep >= 0")
    torch.set_num_threads(args.threads)
    command = "python3 benchmarks/bench_collate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {"machine": machine_info(), "command": command.strip(), "rounds": args.rounds, "rows": []}
    for regime in args.regimes:
        makers = batch_makers(bag_lengths(*REGIMES[regime], args.batches * BATCH))
        for between, keep in itertools.product(args.between, args.keep):
            row = measure(makers, keep, args.rounds, TrainStep() if between == "with a step" else None)
            row.update(regime=regime, between=between, dtype="float32")
            print(row, flush=True)
            results["rows"].append(row)
    write_results(results, markdown(results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
