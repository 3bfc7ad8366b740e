"""oneDNN fused linear against ``F.linear`` + activation (the BLAS path) on the MIL networks' own shapes (issue 12).

Why :mod:`monai_ng.networks.fused_linear` exists: this measures it. For each shape the networks run on a 64-bag batch
(768-d slices; ``T`` = 2,600 rows for bags of 20-60 slices, 13,000 for 100-300), in one process on the CPU, the two
paths alternate (A B A B ...) for ``--rounds`` rounds; each cell is the median over rounds and the ratio is the
median of the per-round ratios (BLAS time / oneDNN time: above 1 means oneDNN is faster).

- ``forward``: ``act(x W^T + b)`` in ``inference_mode``.
- ``train``: forward and backward with the weight and bias trainable and ``x`` not (data, as ABMIL's and SmAP's
  projections), or ``x`` trainable too (``dx``: inner TransMIL layers).

GFLOP/s count ``2 M K O`` per product (3 products for a ``train`` with ``dx``, 2 without).

Usage::

    python3 benchmarks/bench_linear.py                    # 1 and 2 threads, 5 rounds
    python3 benchmarks/bench_linear.py --threads 1 --rounds 3 --out benchmarks/results/linear.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.networks.fused_linear import fused_linear, onednn_linear_available  # noqa: E402

#: (label, rows M, in K, out O, activation, x trainable)
SHAPES: list[tuple[str, int, int, int, str, bool]] = [
    ("ABMIL / SmAP attention 768->128 + tanh, 20-60 slices", 2_600, 768, 128, "tanh", False),
    ("ABMIL / SmAP attention 768->128 + tanh, 100-300 slices", 13_000, 768, 128, "tanh", False),
    ("TransMIL qkv 768->2304, 20-60 slices", 2_600, 768, 2_304, "none", True),
    ("TransMIL qkv 768->2304, 100-300 slices", 13_000, 768, 2_304, "none", True),
    ("TransMIL out 768->768, 100-300 slices", 13_000, 768, 768, "none", True),
]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"none": lambda y: y, "tanh": torch.tanh}


def blas_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, activation: str) -> torch.Tensor:
    return ACTIVATIONS[activation](F.linear(x, w, b))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step(linear: Callable[..., torch.Tensor], x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str, train: bool):
    if not train:

        def infer() -> None:
            with torch.inference_mode():
                linear(x, w, b, act)

        return infer

    def run() -> None:
        y = linear(x, w, b, act)
        y.backward(torch.ones_like(y))
        w.grad = b.grad = x.grad = None

    return run


def measure(shape: tuple[str, int, int, int, str, bool], rounds: int) -> dict[str, Any]:
    label, m, k, o, act, x_grad = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).requires_grad_(x_grad)
    w = (torch.randn(o, k, generator=gen) / k**0.5).requires_grad_()
    b = torch.zeros(o).requires_grad_()
    row: dict[str, Any] = {"shape": label, "M": m, "K": k, "O": o, "activation": act, "x_grad": x_grad}
    for mode, products in (("forward", 1), ("train", 3 if x_grad else 2)):
        fns = {
            "blas": step(blas_linear, x, w, b, act, mode == "train"),
            "onednn": step(fused_linear, x, w, b, act, mode == "train"),
        }
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {"blas": [], "onednn": []}
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name].append(timed(fn))
        flops = 2.0 * m * k * o * products
        row[mode] = {
            "ms": {name: 1e3 * statistics.median(ts) for name, ts in times.items()},
            "gflops": {name: flops / statistics.median(ts) / 1e9 for name, ts in times.items()},
            "ratio": statistics.median(a / c for a, c in zip(times["blas"], times["onednn"], strict=True)),
        }
    return row


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| shape | threads | forward: BLAS / oneDNN ms (GFLOP/s) | ratio | train: BLAS / oneDNN ms (GFLOP/s) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for threads, rows in results["threads"].items():
        for r in rows:
            cells = []
            for mode in ("forward", "train"):
                ms, gf = r[mode]["ms"], r[mode]["gflops"]
                cells.append(
                    f"{ms['blas']:.2f} / {ms['onednn']:.2f} ({gf['blas']:.0f} / {gf['onednn']:.0f})"
                    f" | {r[mode]['ratio']:.2f}×"
                )
            grad = " (x trainable)" if r["x_grad"] else ""
            lines.append(f"| {r['shape']}{grad} | {threads} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "linear.json"))
    args = parser.parse_args(argv)
    if not onednn_linear_available():
        print("this PyTorch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise); nothing to compare")
        return 0
    results: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results["threads"][str(threads)] = [measure(shape, args.rounds) for shape in SHAPES]
    write_results(results, markdown(results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
