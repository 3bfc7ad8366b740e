"""ABMIL, SmAP and TransMIL packed vs padded: training-step and eval speed, NG and collation shares (issue 12).

Measured in one process on the CPU, old and new interleaved (A B A B ...) so that load from other processes hits
both alike; each ratio is the median of the per-round ratios. For each bag regime (768-d, 64 bags of U{20..60} and of
U{100..300} slices, fp16 rows collated with :func:`monai_ng.data.collate_bags`) and each intra-op thread count:

1. Each model (``--models``: ABMIL, gated ABMIL, SmAP, SmAP pooling smoothed features, TransMIL at 768-d with 8
   heads), ``net.packed = False`` (per-slice layers on the padded ``[B, N, D]`` batch; TransMIL: masked attention on
   the padded length) against ``net.packed = True`` (on the ``[T, D]`` valid slices, segment pooling; TransMIL: tokens
   packed back to back, attention per bag on its exact length): training step (forward + :class:`MILObjective` with
   NG + backward + grad-norm clip 1.0 + SGD momentum) and eval (``inference_mode``); outputs checked equal. The
   training step's achieved FLOP rate (``3 x flops_per_bag`` over the valid slices) is divided by the rate of a 2048²
   fp32 ``torch.mm`` timed in the same round (median over rounds): the fraction of the matmul rate.
2. The NG term's share of a (packed) training step: step with NG vs the same step with ``ng_weight=0``.
3. Collation's share: :func:`collate_bags` of the 64 bags against the (packed, NG) training step.

Usage::

    python3 benchmarks/bench_packed.py            # full run (TransMIL on long bags dominates: ~30 min at 1 thread)
    python3 benchmarks/bench_packed.py --quick
    python3 benchmarks/bench_packed.py --models transmil --threads 1
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
#: benchmark name -> (registry name, constructor arguments)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "abmil": ("abmil", {}),
    "abmil_gated": ("abmil_gated", {}),
    "smap": ("smap", {}),
    "smap_pooled_smoothed": ("smap", {"pool_smoothed": True}),
    "transmil": ("transmil", {}),
}


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

    def __init__(self, name: str, packed: bool, ng: bool, seed: int = 0, **kwargs: Any) -> None:
        torch.manual_seed(seed)
        self.network = build_mil_network(name, DIM, **kwargs)
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


def check_equal(name: str, data: dict[str, Any], **kwargs: Any) -> float:
    """Max |difference| of logits and attention, padded vs packed, same weights (eval)."""
    old, new = build_mil_network(name, DIM, **kwargs), build_mil_network(name, DIM, **kwargs)
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
        "collate": lambda: collate_bags(items, dtype=torch.float32),
        "collate_keep": lambda: collate_bags(items, dtype=None),
        "train_new_fp16": lambda: steppers["new"].train(data16),
        "mm": MatmulProbe(),
    }


class MatmulProbe:
    """One fp32 ``torch.mm`` of 2048² matrices, timed in every round beside the models (same-moment matmul rate)."""

    size = 2048

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        self.a, self.b = (
            torch.randn(self.size, self.size, generator=gen),
            torch.randn(self.size, self.size, generator=gen),
        )

    def __call__(self) -> None:
        torch.mm(self.a, self.b)


def matmul_fraction(times: dict[str, list[float]], key: str, flops: float) -> float:
    """Median over rounds of (``flops`` / time of ``key``) / (2048² ``torch.mm`` rate in the same round)."""
    mm_flops = 2.0 * MatmulProbe.size**3
    return statistics.median(flops / t / (mm_flops / m) for t, m in zip(times[key], times["mm"], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--regimes", default=",".join(REGIMES), help=f"comma-separated, of {', '.join(REGIMES)}")
    args = parser.parse_args(argv)
    rounds, steps = (2, 1) if args.quick else (args.rounds, args.steps)
    threads = [int(t) for t in args.threads.split(",")]
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(args.regimes.split(",")) - set(REGIMES))
    if unknown:
        parser.error(f"unknown models/regimes {unknown}; models: {', '.join(MODELS)}; regimes: {', '.join(REGIMES)}")
    print(f"# load average before: {os.getloadavg()}  torch {torch.__version__}  cores {os.cpu_count()}")
    rows = []
    for regime in args.regimes.split(","):
        low, high = REGIMES[regime]
        items = bag_items(0, low, high)
        data = collate_bags(items, dtype=torch.float32)
        data16 = collate_bags(items, dtype=None)  # the store's float16 kept; the network casts the valid rows
        n_mean = float(data[BagKeys.N_SLICES].float().mean())
        n_pad = int(data[BagKeys.MASK].shape[1])
        for model in models:
            name, kwargs = MODELS[model]
            diff = check_equal(name, data, **kwargs)
            steppers = {
                "old": Stepper(name, packed=False, ng=True, **kwargs),
                "new": Stepper(name, packed=True, ng=True, **kwargs),
                "new_no_ng": Stepper(name, packed=True, ng=False, **kwargs),
            }
            train_flops = 3.0 * sum(steppers["new"].network.flops_per_bag(n) for n in data[BagKeys.N_SLICES].tolist())
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
                        "model": model,
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
                        "train_old_mm_fraction": matmul_fraction(times, "train_old", train_flops),
                        "train_new_mm_fraction": matmul_fraction(times, "train_new", train_flops),
                    }
                )
                print(rows[-1], flush=True)
    print(f"# load average after: {os.getloadavg()}")
    print(
        "| regime (mean / padded N) | model | threads | train old / new ms | train old/new | eval old / new ms "
        "| eval old/new | train: fraction of matmul rate, old / new | NG share | collate ms (share) "
        "| fp16 batch: collate ms (share) | max |diff| |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['regime']} ({r['mean_n']:.0f} / {r['padded_n']}) | {r['model']} | {r['threads']} "
            f"| {r['train_old_ms']:.1f} / {r['train_new_ms']:.1f} | **{r['train_speedup']:.2f}x** "
            f"| {r['eval_old_ms']:.1f} / {r['eval_new_ms']:.1f} | **{r['eval_speedup']:.2f}x** "
            f"| {100 * r['train_old_mm_fraction']:.0f} % / {100 * r['train_new_mm_fraction']:.0f} % "
            f"| {100 * r['ng_share']:.1f} % | {r['collate_ms']:.1f} ({100 * r['collate_share']:.1f} %) "
            f"| {r['collate_keep_ms']:.1f} ({100 * r['collate_keep_share']:.1f} %) | {r['max_diff']:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
