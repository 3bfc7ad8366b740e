"""Where one ABMIL batch's time goes on the CPU, part by part, in context (issue 12).

ABMIL's ratio against the paper's public code (``bench_official.py``) stays below the 1.5x goal on 20-60-slice bags at
2 threads. This script measures the parts of our side that bound it, with the very loop ``bench_official.py`` times
(:class:`bench_official.OurSide`: ``collate_packed_bags`` of in-memory float32 bags, ``prepare_bag_batch``, the packed
ABMIL, ``MILObjective``, clip 1.0, SGD momentum):

- eval, stage by stage: the collate (with ``prepare_bag_batch``), the input checks and packing, the ``768 -> 128``
  projection (oneDNN, ``tanh`` fused), the scores, softmax + gather, the pooling, the classifier + loss;
- training, phase by phase: the batch, ``zero_grad``, forward, loss, backward, clip, SGD step;
- the floors beside them: the projection alone on rows already in cache (and its GFLOP/s), the forward product plus
  the weight-gradient product (``(x^T g)^T``), and this machine's copy rate for large arrays (NumPy at 1 thread,
  ``torch`` at the run's thread count).

"In context" means that the stages run in their real order over three different batches in turn, so each collate
reads bags the previous batches' work has pushed out of cache, as in training. Every cell is the median over
``--rounds`` x 3 batches (after one warm-up round).

Usage::

    python3 benchmarks/bench_abmil_parts.py                      # 20-60 and 100-300 slices, 1 and 2 threads
    python3 benchmarks/bench_abmil_parts.py --regimes 20-60 --threads 2 --rounds 10
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_official import BATCH, DIM, REGIMES, ModelSpec, OurSide, our_items, shifted_mean_bags  # noqa: E402
from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.networks.fused_linear import fused_linear  # noqa: E402
from monai_ng.networks.mil_network import MILOutput  # noqa: E402

EVAL_STAGES = (
    "collate",
    "checks + packing",
    "projection",
    "scores",
    "softmax + gather",
    "pooling",
    "classifier + loss",
)
TRAIN_PHASES = ("batch", "zero_grad", "forward", "loss", "backward", "clip", "step")
N_BATCHES = 3


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def staged_forward(net: nn.Module, x: torch.Tensor, mask: torch.Tensor, marks: list[float]) -> MILOutput:
    """The packed ABMIL forward (eval, no dropout) split into the stages of ``EVAL_STAGES[1:-1]``, appending a
    ``time.perf_counter()`` mark after each stage to ``marks``; returns the network's output."""
    bags = net.prepare_packed(x, mask)
    marks.append(time.perf_counter())
    h = net.attention_hidden(bags.x)
    marks.append(time.perf_counter())
    scores = net.attention_w(h).squeeze(-1)
    marks.append(time.perf_counter())
    attention = bags.scatter(scores, float("-inf")).softmax(dim=1)
    weights = bags.gather(attention)
    marks.append(time.perf_counter())
    pooled = bags.weighted_sum(weights)
    marks.append(time.perf_counter())
    return MILOutput(logits=net.classifier(pooled).squeeze(-1), attention=attention.unsqueeze(-1))


def eval_stages(side: OurSide, batches: list[list[dict[str, Any]]], rounds: int) -> dict[str, float]:
    """Median ms of each stage of our eval pass (``EVAL_STAGES``), stages run in order over the batches in turn."""
    net, objective = side.network.eval(), side.criterion
    samples: dict[str, list[float]] = {k: [] for k in EVAL_STAGES}
    with torch.inference_mode():
        for r in range(rounds + 1):
            for items in batches:
                marks = [time.perf_counter()]
                x, target, kwargs = side.batch(items)
                marks.append(time.perf_counter())
                objective(staged_forward(net, x, kwargs["mask"], marks), target)
                marks.append(time.perf_counter())
                if r:  # round 0 warms up
                    for name, (a, b) in zip(EVAL_STAGES, itertools.pairwise(marks), strict=True):
                        samples[name].append(b - a)
    return {k: _median_ms(v) for k, v in samples.items()}


def train_phases(side: OurSide, batches: list[list[dict[str, Any]]], rounds: int) -> dict[str, float]:
    """Median ms of each phase of our training step (``TRAIN_PHASES``)."""
    net, objective, optimizer = side.network.train(), side.criterion, side.optimizer
    samples: dict[str, list[float]] = {k: [] for k in TRAIN_PHASES}
    for r in range(rounds + 1):
        for items in batches:
            t = [time.perf_counter()]
            x, target, kwargs = side.batch(items)
            t.append(time.perf_counter())
            optimizer.zero_grad(set_to_none=True)
            t.append(time.perf_counter())
            out = net(x, **kwargs)
            t.append(time.perf_counter())
            loss = objective(out, target)
            t.append(time.perf_counter())
            loss.backward()
            t.append(time.perf_counter())
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            t.append(time.perf_counter())
            optimizer.step()
            t.append(time.perf_counter())
            if r:
                for name, (a, b) in zip(TRAIN_PHASES, itertools.pairwise(t), strict=True):
                    samples[name].append(b - a)
    return {k: _median_ms(v) for k, v in samples.items()}


def _best_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _median_ms(times)


def product_floors(side: OurSide, rows: int, repeats: int = 20) -> dict[str, float]:
    """The projection alone on ``rows`` cached rows (ms and GFLOP/s), and the forward + weight-gradient products."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, DIM, generator=gen)
    grad = torch.randn(rows, side.network.hidden, generator=gen)
    layer = side.network.attention_v
    with torch.inference_mode():
        forward = _best_ms(lambda: fused_linear(x, layer.weight, layer.bias, "tanh"), repeats)
        weight_grad = _best_ms(lambda: x.t().mm(grad).t(), repeats)
    flops = 2 * rows * DIM * side.network.hidden
    return {
        "projection_ms": forward,
        "projection_gflops": flops / forward / 1e6,
        "weight_gradient_ms": weight_grad,
        "products_ms": forward + weight_grad,
    }


def copy_rates(megabytes: int = 256, repeats: int = 3) -> dict[str, float]:
    """GB/s of a large array copy: NumPy (one thread) and ``torch`` (the current intra-op threads)."""
    src = np.random.default_rng(0).random(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    numpy_ms = _best_ms(lambda: np.copyto(dst, src), repeats)
    torch_ms = _best_ms(lambda: torch.from_numpy(dst).copy_(torch.from_numpy(src)), repeats)
    return {"numpy_gb_per_s": src.nbytes / numpy_ms / 1e6, "torch_gb_per_s": src.nbytes / torch_ms / 1e6}


def _parts_table(results: dict[str, Any], key: str, names: tuple[str, ...], title: str, total: str) -> list[str]:
    """Markdown lines of one table of timed parts (``row[key][name]`` ms per batch), with their sum."""
    lines = [title, "", "| bags | threads | " + " | ".join(names) + f" | {total} |", "|---" * (len(names) + 3) + "|"]
    for row in results["rows"]:
        cells = [f"{row[key][k]:.2f}" for k in names] + [f"{sum(row[key].values()):.2f}"]
        lines.append(f"| {row['regime']} | {row['threads']} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = _parts_table(results, "eval", EVAL_STAGES, "Eval pass, ms per 64-bag batch, in context:", "eval sum")
    lines += [""] + _parts_table(results, "train", TRAIN_PHASES, "Training step, ms per 64-bag batch:", "step sum")
    lines += [
        "",
        "Floors:",
        "",
        "| bags | threads | rows | projection alone, cached: ms (GFLOP/s) | projection + weight gradient ms "
        "| copy GB/s: NumPy 1 thread / torch |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        f, c = row["floors"], row["copy"]
        lines.append(
            f"| {row['regime']} | {row['threads']} | {row['rows']} | {f['projection_ms']:.2f} "
            f"({f['projection_gflops']:.0f}) | {f['products_ms']:.2f} | {c['numpy_gb_per_s']:.1f} / "
            f"{c['torch_gb_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--rounds", type=int, default=20, help="rounds over the three batches (after one warm-up)")
    parser.add_argument("--copy-mb", type=int, default=256, help="array size of the copy-rate probe")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "abmil_parts.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.copy_mb < 1 or any(t < 1 for t in args.threads):
        parser.error("--rounds, --copy-mb and --threads must be >= 1")
    command = "python3 benchmarks/bench_abmil_parts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {"machine": machine_info(), "command": command.strip(), "rounds": args.rounds, "rows": []}
    for regime in args.regimes:
        items = our_items(shifted_mean_bags(0, *REGIMES[regime], N_BATCHES * BATCH))
        batches = [items[k * BATCH : (k + 1) * BATCH] for k in range(N_BATCHES)]
        rows = round(statistics.mean(sum(int(it["embeddings"].shape[0]) for it in b) for b in batches))
        for threads in args.threads:
            torch.set_num_threads(threads)
            side = OurSide(ModelSpec("ABMIL", "abmil", False), torch.device("cpu"), None, lr=1e-3)
            row = {
                "regime": regime,
                "threads": threads,
                "rows": rows,
                "eval": eval_stages(side, batches, args.rounds),
                "train": train_phases(side, batches, args.rounds),
                "floors": product_floors(side, rows),
                "copy": copy_rates(args.copy_mb),
            }
            print(row, flush=True)
            results["rows"].append(row)
    write_results(results, markdown(results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
