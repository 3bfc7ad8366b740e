"""ABMIL packed vs padded: training-step and eval speed, NG and collation shares (issue 12).

Measured in one process on the CPU, old and new interleaved (A B A B ...) so that load from other processes hits
both alike; each ratio is the median of the per-round ratios. For each bag regime (768-d, 64 bags of U{20..60} and of
U{100..300} slices, fp16 rows collated with :func:`monai_ng.data.collate_bags`) and each intra-op thread count:

1. ABMIL and gated ABMIL, ``net.packed = False`` (per-slice layers on the padded ``[B, N, D]`` batch) against
   ``net.packed = True`` (on the ``[T, D]`` valid slices, segment pooling): training step (forward + :class:`MILObjective`
   with NG + backward + grad-norm clip 1.0 + SGD momentum) and eval (``inference_mode``); outputs checked equal.
2. The NG term's share of a (packed) training step: step with NG vs the same step with ``ng_weight=0``.
3. Collation's share: :func:`collate_bags` of the 64 bags against the (packed, NG) training step.

Usage::

    python3 benchmarks/bench_packed.py            # full run (~3 min on 2 cores), markdown table on stdout
    python3 benchmarks/bench_packed.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from monai_ng.data.bag_dataset import BagKeys, collate_bags  # noqa: E402
from monai_ng.engines import prepare_bag_batch  # noqa: E402
from monai_ng.losses.mil_objective import MILObjective  # noqa: E402
from monai_ng.networks import build_mil_network  # noqa: E402

DIM = 768
BATCH = 64
REGIMES = {"20-60": (20, 60), "100-300": (100, 300)}


def bag_items(seed: int, low: int, high: int, batch: int = BATCH) -> list[dict[str, Any]]:
    """``batch`` random bags of U{low..high} fp16 slices, as :class:`~monai_ng.data.BagDataset` yields them."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(batch):
        n = int(rng.integers(low, high + 1))
        items.append(
            {
                BagKeys.EMBEDDINGS: torch.from_numpy(
                    rng.standard_normal((n, DIM), dtype=np.float32).astype(np.float16)
                ),
                BagKeys.LABEL: int(i % 2),
                BagKeys.SLICE_LABELS: torch.from_numpy((rng.random(n) < 0.2).astype(np.int8)),
                BagKeys.SCAN_ID: f"b{i}",
                BagKeys.INDEX: i,
            }
        )
    return items


class Stepper:
    """A network, objective and optimiser; ``train`` and ``eval`` on a fixed collated batch."""

    def __init__(self, name: str, packed: bool, ng: bool, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.network = build_mil_network(name, DIM)
        self.network.packed = packed
        self.objective = MILObjective(ng_weight=1.0 if ng else 0.0)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=1e-3, momentum=0.9)

    def train(self, data: dict[str, Any]) -> None:
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        x, target, _, kw = prepare_bag_batch(data)
        self.objective(self.network(x, **kw), target).backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()

    def eval(self, data: dict[str, Any]) -> None:
        self.network.eval()
        with torch.inference_mode():
            self.network(data[BagKeys.EMBEDDINGS], mask=data[BagKeys.MASK])


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, steps: int) -> dict[str, list[float]]:
    """Per-round seconds per call of each function, run A B A B ... after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[k].append((time.perf_counter() - t0) / steps)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num] / times[den]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def check_equal(name: str, data: dict[str, Any]) -> float:
    """Max |difference| of logits and attention, padded vs packed, same weights (eval)."""
    old, new = build_mil_network(name, DIM), build_mil_network(name, DIM)
    old.packed = False
    new.load_state_dict(old.state_dict())
    old.eval(), new.eval()
    with torch.inference_mode():
        a, b = (
            old(data[BagKeys.EMBEDDINGS], mask=data[BagKeys.MASK]),
            new(data[BagKeys.EMBEDDINGS], mask=data[BagKeys.MASK]),
        )
    return max(float((a.logits - b.logits).abs().max()), float((a.attention - b.attention).abs().max()))


def callables(
    steppers: dict[str, Stepper], items: list[dict[str, Any]], data: dict[str, Any], data16: dict[str, Any]
) -> dict[str, Callable[[], None]]:
    """The timed calls of one configuration, in their interleaving order."""
    return {
        "train_old": lambda: steppers["old"].train(data),
        "train_new": lambda: steppers["new"].train(data),
        "train_new_no_ng": lambda: steppers["new_no_ng"].train(data),
        "eval_old": lambda: steppers["old"].eval(data),
        "eval_new": lambda: steppers["new"].eval(data),
        "collate": lambda: collate_bags(items),
        "collate_keep": lambda: collate_bags(items, dtype=None),
        "train_new_fp16": lambda: steppers["new"].train(data16),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    args = parser.parse_args(argv)
    rounds, steps = (2, 1) if args.quick else (args.rounds, args.steps)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"# load average before: {os.getloadavg()}  torch {torch.__version__}  cores {os.cpu_count()}")
    rows = []
    for regime, (low, high) in REGIMES.items():
        items = bag_items(0, low, high)
        data = collate_bags(items)
        data16 = collate_bags(items, dtype=None)  # the store's float16 kept; the network casts the valid rows
        n_mean = float(data[BagKeys.N_SLICES].float().mean())
        n_pad = int(data[BagKeys.MASK].shape[1])
        for name in ("abmil", "abmil_gated"):
            diff = check_equal(name, data)
            steppers = {
                "old": Stepper(name, packed=False, ng=True),
                "new": Stepper(name, packed=True, ng=True),
                "new_no_ng": Stepper(name, packed=True, ng=False),
            }
            for t in threads:
                torch.set_num_threads(t)
                fns = callables(steppers, items, data, data16)
                times = interleaved(fns, rounds, steps)
                med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                rows.append(
                    {
                        "regime": regime,
                        "mean_n": n_mean,
                        "padded_n": n_pad,
                        "model": name,
                        "threads": t,
                        "max_diff": diff,
                        "train_old_ms": med["train_old"],
                        "train_new_ms": med["train_new"],
                        "eval_old_ms": med["eval_old"],
                        "eval_new_ms": med["eval_new"],
                        "train_speedup": ratio(times, "train_old", "train_new"),
                        "eval_speedup": ratio(times, "eval_old", "eval_new"),
                        "ng_share": 1.0 - ratio(times, "train_new_no_ng", "train_new"),
                        "collate_share": ratio(times, "collate", "train_new"),
                        "collate_ms": med["collate"],
                        "collate_keep_ms": med["collate_keep"],
                        "train_new_fp16_ms": med["train_new_fp16"],
                        "collate_keep_share": ratio(times, "collate_keep", "train_new_fp16"),
                    }
                )
                print(rows[-1], flush=True)
    print(f"# load average after: {os.getloadavg()}")
    print(
        "| regime (mean / padded N) | model | threads | train old / new ms | train old/new | eval old / new ms "
        "| eval old/new | NG share | collate ms (share) | fp16 batch: collate ms (share) | max |diff| |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['regime']} ({r['mean_n']:.0f} / {r['padded_n']}) | {r['model']} | {r['threads']} "
            f"| {r['train_old_ms']:.1f} / {r['train_new_ms']:.1f} | **{r['train_speedup']:.2f}x** "
            f"| {r['eval_old_ms']:.1f} / {r['eval_new_ms']:.1f} | **{r['eval_speedup']:.2f}x** "
            f"| {100 * r['ng_share']:.1f} % | {r['collate_ms']:.1f} ({100 * r['collate_share']:.1f} %) "
            f"| {r['collate_keep_ms']:.1f} ({100 * r['collate_keep_share']:.1f} %) | {r['max_diff']:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
