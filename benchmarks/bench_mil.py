"""MIL speed / memory benchmark: training and evaluation bags/s for every network, with and without Normal Guidance.

Measured in one process, in this order (all on the CPU; the model table runs with ``--threads`` intra-op threads,
default 1, because on a busy 2-core machine every OpenMP fork/join waits milliseconds for the second core; item 5
measures that choice):

1. fp32 matmul roofline: best-of ``torch.mm`` on 2048² fp32 matrices, in GFLOP/s, at 1 and 2 threads (again at the
   end; the machine is shared, all are reported). FLOP fractions use the best at the models' thread count.
2. Every network of :data:`monai_ng.networks.MIL_NETWORKS` on the same synthetic batch (768-d, 64 bags of U{25..45}
   slices, collated with :func:`monai_ng.data.collate_bags`): a training step (forward + :class:`MILObjective` +
   backward + grad-norm clip 1.0 + SGD momentum step) with and without NG, interleaved A B A B so that load from other
   processes hits both alike (the NG cost is the median of the per-round ratios); and eval (``inference_mode``).
3. Achieved FLOP rate where the network counts its FLOPs (``flops_per_bag``: ABMIL, TransMIL): useful FLOPs over the
   bags' valid slices only (padding is not counted), training counted as 3x forward (the usual convention: backward =
   2x forward; it slightly over-counts the first layer, whose input gradient is not needed), divided by the roofline,
   and (robust to load changes) the median over rounds of model rate / rate of a 2048² ``torch.mm`` timed in the same
   round.
4. Per-bag Python loop (each bag alone, B = 1, gradients accumulated over the 64 bags, one clip + step) against the
   batched step, same weights and bags, for ABMIL+NG and TransMIL+NG; and the same for eval.
5. ABMIL+NG and TransMIL+NG train steps with 1 and with 2 intra-op threads, interleaved.
6. One training epoch of ABMIL+NG over a head-CT-sized fp16 store (21,744 bags, 752,803 slices, written once under
   ``--workdir``) through the real path: ``BagDataset`` + ``DataLoader(collate_fn=collate_packed_bags, batch_size=64,
   shuffle=True)`` + MONAI ``SupervisedTrainer`` (as :func:`monai_ng.engines.train_mil` builds it, without the
   validation handler). Run in a fresh child process so that its peak RSS is its own; the data path alone (iterating
   the loader) is timed in the same child, and the data path as it was before its optimisation (``torch.isfinite``
   per bag, per-bag torch slice assignment in the collate) against the current one on the same bags. Default
   configurations: 1 compute thread + 1 loader worker (both cores busy), and 2 threads + no worker (torch's default).

Usage::

    python3 benchmarks/bench_mil.py --quick          # smoke run (~1-2 min)
    python3 benchmarks/bench_mil.py                  # full run; JSON to benchmarks/results/mil.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shlex
import statistics
import subprocess
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

from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.data.bag_dataset import BagDataset, BagKeys, bag_item, collate_bags, collate_packed_bags  # noqa: E402
from monai_ng.data.embedding_store import EmbeddingStore, EmbeddingStoreWriter  # noqa: E402
from monai_ng.engines import GradientNormClipper, prepare_bag_batch  # noqa: E402
from monai_ng.losses.mil_objective import MILObjective  # noqa: E402
from monai_ng.networks import build_mil_network  # noqa: E402

DIM = 768
BATCH = 64
HEAD_BAGS = 21_744
HEAD_SLICES = 752_803

# (name, constructor kwargs, NG applies, objective kwargs without NG)
MODELS: list[tuple[str, dict[str, Any], bool, dict[str, Any]]] = [
    ("abmil", {}, True, {}),
    ("abmil_gated", {}, True, {}),
    ("transmil", {"num_heads": 8, "num_layers": 2}, True, {}),  # the paper's: 768-d tokens, no projection
    ("smap", {}, True, {}),
    ("centre_gaussian", {}, False, {}),
    ("mean_pool", {}, False, {}),
    ("max_pool", {}, False, {}),
    ("instance_ceiling", {"kernel_size": 12}, False, {"instance_weight": 1.0}),
]


# ---------------------------------------------------------------------------------------------------------- machine
def matmul_roofline(n: int = 2048, reps: int = 10) -> dict[str, float]:
    """Best-of and median fp32 ``torch.mm`` rate on ``n x n`` matrices, GFLOP/s (2 n^3 FLOPs per product)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    return {"n": n, "best_gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9}


# ---------------------------------------------------------------------------------------------------------- batches
def synthetic_batch(seed: int, batch: int = BATCH, low: int = 25, high: int = 45) -> dict[str, Any]:
    """A collated batch of ``batch`` random bags of U{low..high} slices (fp16 embeddings, as a store holds them)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(batch):
        n = int(rng.integers(low, high + 1))
        emb = torch.from_numpy(rng.standard_normal((n, DIM), dtype=np.float32).astype(np.float16))
        sl = torch.from_numpy((rng.random(n) < 0.2).astype(np.int8))
        items.append(
            {
                BagKeys.EMBEDDINGS: emb,
                BagKeys.LABEL: int(i % 2),
                BagKeys.SLICE_LABELS: sl,
                BagKeys.SCAN_ID: f"b{i}",
                BagKeys.INDEX: i,
            }
        )
    return collate_bags(items, dtype=torch.float32)  # the model table times the networks on float32 input


def split_batch(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The bags of a collated batch, each alone as a batch of one (unpadded)."""
    out = []
    for b, n in enumerate(data[BagKeys.N_SLICES].tolist()):
        out.append(
            {
                BagKeys.EMBEDDINGS: data[BagKeys.EMBEDDINGS][b : b + 1, :n].clone(),
                BagKeys.MASK: data[BagKeys.MASK][b : b + 1, :n].clone(),
                BagKeys.LABEL: data[BagKeys.LABEL][b : b + 1].clone(),
                BagKeys.SLICE_LABELS: data[BagKeys.SLICE_LABELS][b : b + 1, :n].clone(),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------------- steps
class Stepper:
    """One network, optimiser and objective; ``train_step`` / ``eval_pass`` on a fixed batch, batched or per bag."""

    def __init__(self, name: str, kwargs: dict[str, Any], ng: bool, obj_kwargs: dict[str, Any], seed: int) -> None:
        torch.manual_seed(seed)
        self.network = build_mil_network(name, DIM, **kwargs)
        self.objective = MILObjective(ng_weight=1.0 if ng else 0.0, **obj_kwargs)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=1e-3, momentum=0.9)

    def _loss(self, data: dict[str, Any]) -> torch.Tensor:
        x, target, _, kw = prepare_bag_batch(data)
        return self.objective(self.network(x, **kw), target)

    def train_step(self, data: dict[str, Any]) -> None:
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._loss(data).backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()

    def train_step_per_bag(self, bags: list[dict[str, Any]]) -> None:
        """The same update as :meth:`train_step` with each bag forwarded alone (losses are means over bags)."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        for bag in bags:
            (self._loss(bag) / len(bags)).backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()

    def eval_pass(self, data: dict[str, Any]) -> None:
        self.network.eval()
        with torch.inference_mode():
            self.network(data[BagKeys.EMBEDDINGS], mask=data[BagKeys.MASK])

    def eval_per_bag(self, bags: list[dict[str, Any]]) -> None:
        self.network.eval()
        with torch.inference_mode():
            for bag in bags:
                self.network(bag[BagKeys.EMBEDDINGS], mask=bag[BagKeys.MASK])


def timed(fn: Callable[[], None], steps: int) -> float:
    """Seconds per call of ``fn``, averaged over ``steps`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Per-round seconds per call of each function, run A B A B ... (each warmed up first)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn, steps))
    return times


def flops_forward(network: torch.nn.Module, lengths: list[int]) -> float | None:
    """Useful forward FLOPs of a batch (valid slices only), or None when the network does not count them."""
    counter = getattr(network, "flops_per_bag", None)
    return None if counter is None else float(sum(counter(n) for n in lengths))


class MatmulProbe:
    """One fp32 ``torch.mm`` of ``n x n`` matrices, timed beside each model round for a same-moment roofline."""

    def __init__(self, n: int = 2048) -> None:
        gen = torch.Generator().manual_seed(1)
        self.n = n
        self.a, self.b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        self.out = torch.empty(n, n)

    def __call__(self) -> None:
        torch.mm(self.a, self.b, out=self.out)

    def gflops(self, seconds: float) -> float:
        return 2.0 * self.n**3 / seconds / 1e9


def bench_models(data: dict[str, Any], rounds: int, steps: int, roofline: float, seed: int) -> list[dict[str, Any]]:
    """Train (with/without NG) and eval time per model, interleaved per round with a matmul probe.

    FLOP fractions are given two ways: against ``roofline`` (the session's best matmul rate) and, more robust on a
    shared machine, the median over rounds of (model rate / matmul rate measured in the same round).
    """
    lengths = data[BagKeys.N_SLICES].tolist()
    probe = MatmulProbe()
    results = []
    for name, kwargs, ng_ok, obj_kwargs in MODELS:
        plain = Stepper(name, kwargs, False, obj_kwargs, seed)
        row: dict[str, Any] = {"model": name, "ng_applies": ng_ok}
        fwd = flops_forward(plain.network, lengths)
        fns = {"train": lambda s=plain: s.train_step(data)}
        if ng_ok:
            guided = Stepper(name, kwargs, True, obj_kwargs, seed)
            fns["train_ng"] = lambda s=guided: s.train_step(data)
        fns["eval"] = lambda s=plain: s.eval_pass(data)
        if fwd is not None:
            fns["mm"] = probe
        times = interleaved(fns, rounds, steps)
        batch = len(lengths)
        for key in ("train", "train_ng", "eval"):
            if key not in times:
                continue
            row[f"{key}_s"] = statistics.median(times[key])
            row[f"{key}_s_best"] = min(times[key])
            row[f"{key}_bags_per_s"] = batch / row[f"{key}_s"]
        if ng_ok:
            ratios = [a / b for a, b in zip(times["train_ng"], times["train"], strict=True)]
            row["ng_step_ratio_median"] = statistics.median(ratios)
            row["ng_step_ratios"] = ratios
        if fwd is not None:
            row["forward_gflop_per_batch"] = fwd / 1e9
            row["matmul_gflops_rounds"] = [probe.gflops(t) for t in times["mm"]]
            for key, mult in (("train", 3), ("train_ng", 3), ("eval", 1)):
                if key not in times:
                    continue
                row[f"{key}_gflops"] = mult * fwd / row[f"{key}_s"] / 1e9
                row[f"{key}_roofline_fraction"] = row[f"{key}_gflops"] / roofline
                row[f"{key}_same_round_fraction"] = statistics.median(
                    [mult * fwd / t / 1e9 / probe.gflops(m) for t, m in zip(times[key], times["mm"], strict=True)]
                )
        results.append(row)
        print(f"  {name}: {_short(row)}", flush=True)
        del plain, fns
        gc.collect()
    return results


def bench_per_bag(data: dict[str, Any], rounds: int, steps: int, seed: int) -> list[dict[str, Any]]:
    bags = split_batch(data)
    results = []
    for name, kwargs in (("abmil", {}), ("transmil", {"num_heads": 8, "num_layers": 2})):
        stepper = Stepper(name, kwargs, True, {}, seed)
        fns = {
            "batched_train": lambda s=stepper: s.train_step(data),
            "loop_train": lambda s=stepper: s.train_step_per_bag(bags),
            "batched_eval": lambda s=stepper: s.eval_pass(data),
            "loop_eval": lambda s=stepper: s.eval_per_bag(bags),
        }
        times = interleaved(fns, rounds, steps)
        row: dict[str, Any] = {"model": f"{name}+ng"}
        for k, v in times.items():
            row[f"{k}_s"] = statistics.median(v)
        row["train_speedup_median"] = statistics.median(
            [a / b for a, b in zip(times["loop_train"], times["batched_train"], strict=True)]
        )
        row["eval_speedup_median"] = statistics.median(
            [a / b for a, b in zip(times["loop_eval"], times["batched_eval"], strict=True)]
        )
        results.append(row)
        print(f"  {name}+ng per-bag loop: {_short(row)}", flush=True)
    return results


def _short(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float))


# ---------------------------------------------------------------------------------------------------------- epoch
def head_lengths(n_bags: int, n_slices: int, seed: int) -> np.ndarray:
    """``n_bags`` bag lengths summing exactly to ``n_slices`` (mean n_slices / n_bags, spread like head CT)."""
    rng = np.random.default_rng(seed)
    mean = n_slices / n_bags
    lengths = np.clip(np.rint(rng.normal(mean, 0.2 * mean, n_bags)), 8, None).astype(np.int64)
    diff = n_slices - int(lengths.sum())
    while diff != 0:
        step = 1 if diff > 0 else -1
        pick = rng.choice(n_bags, size=min(abs(diff), n_bags), replace=False)
        if step < 0:
            pick = pick[lengths[pick] > 8]
        lengths[pick] += step
        diff -= step * len(pick)
    return lengths


def ensure_store(path: Path, n_bags: int, n_slices: int, seed: int) -> EmbeddingStore:
    """Open the cached synthetic fp16 store at ``path``, writing it first when absent or of another size."""
    if (path / "store.json").is_file():
        meta = json.loads((path / "store.json").read_text())
        if meta.get("n_scans") == n_bags and meta.get("n_slices") == n_slices:
            return EmbeddingStore(path)
    lengths = head_lengths(n_bags, n_slices, seed)
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    chunk = 256
    with EmbeddingStoreWriter(path, dim=DIM, dtype="float16", overwrite=True, metadata={"synthetic": True}) as w:
        for start in range(0, n_bags, chunk):
            lens = lengths[start : start + chunk]
            emb = rng.standard_normal((int(lens.sum()), DIM), dtype=np.float32).astype(np.float16)
            labels = rng.random(len(lens)) < 0.15
            offsets = np.concatenate([[0], np.cumsum(lens)])
            for k, n in enumerate(lens):
                sl = (rng.random(int(n)) < 0.1).astype(np.int8) if labels[k] else np.zeros(int(n), np.int8)
                w.add_scan(
                    f"s{start + k:06d}",
                    f"p{(start + k) // 2:06d}",
                    int(labels[k]),
                    emb[offsets[k] : offsets[k + 1]],
                    sl,
                )
    print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return EmbeddingStore(path)


def legacy_getitem(dataset: BagDataset, i: int) -> dict[str, Any]:
    """``BagDataset.__getitem__`` as it was before the data-path optimisation (torch.isfinite on the bag)."""
    index = int(dataset.indices[i])
    bag = dataset.store.bag(index)
    emb = torch.from_numpy(np.array(bag.embeddings))
    if not torch.isfinite(emb).all():
        raise ValueError(f"scan {bag.scan_id!r} has NaN/inf embeddings")
    sl = torch.from_numpy(np.asarray(bag.slice_labels, dtype=np.int8).copy())
    return bag_item(bag, index, emb, sl)


def legacy_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate_bags`` as it was before the data-path optimisation (per-bag torch slice assignment)."""
    lengths = [int(it[BagKeys.EMBEDDINGS].shape[0]) for it in items]
    b, n, d = len(items), max(lengths), int(items[0][BagKeys.EMBEDDINGS].shape[1])
    emb = torch.zeros(b, n, d)
    mask = torch.zeros(b, n, dtype=torch.bool)
    sl = torch.full((b, n), -1, dtype=torch.int8)
    for k, (it, s) in enumerate(zip(items, lengths, strict=True)):
        emb[k, :s] = it[BagKeys.EMBEDDINGS]
        mask[k, :s] = True
        sl[k, :s] = it[BagKeys.SLICE_LABELS]
    return {BagKeys.EMBEDDINGS: emb, BagKeys.MASK: mask, BagKeys.SLICE_LABELS: sl}


def data_path_comparison(dataset: BagDataset, batches: int, rounds: int = 3) -> dict[str, float]:
    """ms per 64-bag batch (load + collate), interleaved, median of rounds: the legacy data path, the current one
    item by item (``__getitem__``), and the current one as a ``DataLoader`` runs it (``__getitems__``, one read)."""
    order = np.random.default_rng(0).permutation(len(dataset))[: batches * BATCH]

    def run(getitem: Callable[[int], dict[str, Any]], collate: Callable[[list], dict[str, Any]]) -> None:
        for k in range(batches):
            collate([getitem(int(i)) for i in order[k * BATCH : (k + 1) * BATCH]])

    def run_batched() -> None:  # each batch dropped before the next, as a training loop does
        for k in range(batches):
            collate_packed_bags(dataset.__getitems__(order[k * BATCH : (k + 1) * BATCH].tolist()))

    fns = {
        "legacy": lambda: run(lambda i: legacy_getitem(dataset, i), legacy_collate),
        "current": lambda: run(dataset.__getitem__, collate_packed_bags),
        "batched": run_batched,
    }
    times = interleaved(fns, rounds, 1, warmup=0)
    return {f"{k}_ms_per_batch": 1e3 * statistics.median(v) / batches for k, v in times.items()}


def epoch_child(store_path: str, workers: int, seed: int) -> dict[str, Any]:
    """One ABMIL+NG training epoch through the MONAI trainer, then the data path alone; runs in a fresh process."""
    from monai.engines import SupervisedTrainer
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    store = EmbeddingStore(store_path)
    dataset = BagDataset(store)

    def loader() -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=BATCH,
            shuffle=True,
            collate_fn=collate_packed_bags,
            num_workers=workers,
            persistent_workers=False,
        )

    network = build_mil_network("abmil", DIM)
    objective = MILObjective(ng_weight=1.0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader(),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9),
        loss_function=objective,
        prepare_batch=prepare_bag_batch,
        decollate=False,
    )
    GradientNormClipper(1.0).attach(trainer)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    trainer.run()
    epoch_s = time.perf_counter() - t0
    rss_epoch = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    n = 0
    for batch in loader():
        n += int(batch[BagKeys.N_SLICES].sum())
    data_s = time.perf_counter() - t0
    compare = data_path_comparison(dataset, batches=30) if os.environ.get("BENCH_MIL_DATA_COMPARE") else {}
    return {
        **compare,
        "bags": len(dataset),
        "slices": n,
        "iterations": trainer.state.iteration,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "epoch_s": epoch_s,
        "data_only_s": data_s,
        "compute_share_est_s": epoch_s - data_s,
        "peak_rss_mb_before_epoch": rss_before / 1024,
        "peak_rss_mb_after_epoch": rss_epoch / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "store_mb": os.path.getsize(Path(store_path) / "embeddings.npy") / 2**20,
    }


def bench_epoch(args: argparse.Namespace) -> dict[str, Any]:
    n_bags, n_slices = (2_000, 69_240) if args.quick else (HEAD_BAGS, HEAD_SLICES)
    path = Path(args.workdir) / f"head_store_{n_bags}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_store(path, n_bags, n_slices, args.seed)
    results = []
    for threads, workers in args.epoch_configs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--epoch-child", str(path)]
        cmd += ["--workers", str(workers), "--threads", str(threads)]
        env = {**os.environ, "BENCH_MIL_DATA_COMPARE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"epoch child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["store"] = str(path)
        print(f"  {_short(result)}", flush=True)
        results.append(result)
    return results


def bench_threads(data: dict[str, Any], rounds: int, steps: int, seed: int) -> list[dict[str, Any]]:
    """ABMIL+NG and TransMIL+NG train steps with 1 and 2 intra-op threads, interleaved."""
    results = []
    for name, kwargs in (("abmil", {}), ("transmil", {"num_heads": 8, "num_layers": 2})):
        stepper = Stepper(name, kwargs, True, {}, seed)

        def step(threads: int, s: Stepper = stepper) -> None:
            torch.set_num_threads(threads)
            s.train_step(data)

        times = interleaved({"t1": lambda: step(1), "t2": lambda: step(2)}, rounds, steps)
        row = {
            "model": f"{name}+ng",
            "train_s_1_thread": statistics.median(times["t1"]),
            "train_s_2_threads": statistics.median(times["t2"]),
            "ratio_2_over_1_median": statistics.median([b / a for a, b in zip(times["t1"], times["t2"], strict=True)]),
        }
        results.append(row)
        print(f"  {name}+ng threads: {_short(row)}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    roof = results["roofline_gflops"]
    rl = results["rooflines"]
    lines = [
        "fp32 matmul roofline (`torch.mm` 2048², best of 10), GFLOP/s: "
        + ", ".join(f"{k.replace('_', ' ')} {v['best_gflops']:.1f}" for k, v in rl.items())
        + f". Model fractions use {roof:.1f} (the best at the models' {results['threads']} thread(s)).",
        "",
        f"Per-model step, batch {BATCH}, {results['threads']} thread(s), median of {results['rounds']} interleaved "
        f"rounds × {results['steps_per_round']} steps:",
        "",
        "| model | train bags/s | train+NG bags/s | NG/no-NG step (median ratio) | eval bags/s | "
        "train GFLOP/s (roofline; same-round) | train+NG GFLOP/s (roofline; same-round) | "
        "eval GFLOP/s (roofline; same-round) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["models"]:

        def frac(key: str, r: dict[str, Any] = r) -> str:
            if key + "_gflops" not in r:
                return "–"
            return (
                f"{r[key + '_gflops']:.1f} ({100 * r[key + '_roofline_fraction']:.0f}%; "
                f"{100 * r[key + '_same_round_fraction']:.0f}%)"
            )

        ng = f"{r['train_ng_bags_per_s']:.0f}" if r["ng_applies"] else "–"
        ratio = f"{r['ng_step_ratio_median']:.3f}" if r["ng_applies"] else "–"
        lines.append(
            f"| {r['model']} | {r['train_bags_per_s']:.0f} | {ng} | {ratio} | {r['eval_bags_per_s']:.0f} | "
            f"{frac('train')} | {frac('train_ng')} | {frac('eval')} |"
        )
    lines += [
        "",
        "| model | batched train step | per-bag loop train | speed-up | batched eval | per-bag loop eval | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["per_bag"]:
        lines.append(
            f"| {r['model']} | {1e3 * r['batched_train_s']:.0f} ms | {1e3 * r['loop_train_s']:.0f} ms | "
            f"{r['train_speedup_median']:.1f}× | {1e3 * r['batched_eval_s']:.0f} ms | {1e3 * r['loop_eval_s']:.0f} ms | "
            f"{r['eval_speedup_median']:.1f}× |"
        )
    if results.get("threads_comparison"):
        lines += [
            "",
            "| train step | 1 thread | 2 threads | 2-thread / 1-thread (median) |",
            "|---|---|---|---|",
        ]
        for r in results["threads_comparison"]:
            lines.append(
                f"| {r['model']} | {1e3 * r['train_s_1_thread']:.0f} ms | {1e3 * r['train_s_2_threads']:.0f} ms | "
                f"{r['ratio_2_over_1_median']:.2f} |"
            )
    if results.get("epoch"):
        lines += ["", epoch_markdown(results["epoch"])]
    return "\n".join(lines)


def epoch_markdown(epochs: list[dict[str, Any]]) -> str:
    """The head-CT-sized epoch tables (item 6): one row per configuration, then the data path before / after."""
    lines = [
        "| head-CT-sized epoch (ABMIL+NG) | bags | slices | epoch | data path alone | peak RSS (children) |",
        "|---|---|---|---|---|---|",
    ]
    for ep in epochs:
        lines.append(
            f"| {ep['threads']} thread(s), {ep['workers']} loader worker(s) | {ep['bags']:,} | {ep['slices']:,} | "
            f"{ep['epoch_s']:.1f} s | {ep['data_only_s']:.1f} s | {ep['peak_rss_mb']:.0f} MB "
            f"({ep['peak_rss_children_mb']:.0f} MB) |"
        )
    lines += [
        "",
        "| data path per 64-bag batch (load + collate, in one process) | before | item by item | batched read |",
        "|---|---|---|---|",
    ]
    for ep in epochs:
        if "legacy_ms_per_batch" in ep:
            lines.append(
                f"| {ep['threads']} thread(s) | {ep['legacy_ms_per_batch']:.1f} ms | "
                f"{ep['current_ms_per_batch']:.1f} ms | {ep.get('batched_ms_per_batch', float('nan')):.1f} ms |"
            )
    return "\n".join(lines)


def parse_configs(text: str) -> list[tuple[int, int]]:
    """``"1x1,2x0"`` -> ``[(1, 1), (2, 0)]`` (threads x loader workers)."""
    out = []
    for part in text.split(","):
        threads, _, workers = part.partition("x")
        out.append((int(threads), int(workers or 0)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and a 2,000-bag store (smoke run)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mil.json"), help="JSON results file")
    parser.add_argument("--workdir", default="/tmp/monai_ng_bench", help="where the synthetic store is cached")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7; 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="steps timed per round (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the model table")
    parser.add_argument(
        "--epoch-configs",
        type=parse_configs,
        default=parse_configs("1x1,2x0"),
        help="epoch runs as THREADSxWORKERS, comma separated (default 1x1,2x0)",
    )
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-epoch", action="store_true", help="skip the head-CT-sized epoch")
    parser.add_argument("--epoch-only", action="store_true", help="run the head-CT-sized epoch (item 6) alone")
    parser.add_argument("--skip-threads", action="store_true", help="skip the 1- vs 2-thread comparison")
    parser.add_argument("--models", default="", help="comma-separated subset of models (default all)")
    parser.add_argument("--epoch-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epoch_child:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(epoch_child(args.epoch_child, args.workers, args.seed)))
        return 0
    if args.epoch_only:
        results = {"machine": machine_info(), "command": shlex.join([sys.executable, *sys.argv])}
        results["epoch"] = bench_epoch(args)
        write_results(results, epoch_markdown(results["epoch"]), args.out)
        return 0
    rounds = args.rounds or (2 if args.quick else 7)
    steps = args.steps or (1 if args.quick else 3)
    if args.models:
        wanted = set(args.models.split(","))
        MODELS[:] = [m for m in MODELS if m[0] in wanted]

    results: dict[str, Any] = {"machine": machine_info(), "command": shlex.join([sys.executable, *sys.argv])}
    results["rounds"], results["steps_per_round"], results["threads"] = rounds, steps, args.threads
    print(f"machine: {results['machine']}", flush=True)
    rooflines: dict[str, dict[str, float]] = {}
    for threads in sorted({1, 2, args.threads}):
        torch.set_num_threads(threads)
        rooflines[f"start_{threads}_thread"] = matmul_roofline()
    torch.set_num_threads(args.threads)
    print(f"rooflines: {rooflines}", flush=True)
    data = synthetic_batch(args.seed)
    results["batch"] = {
        "bags": BATCH,
        "dim": DIM,
        "padded_length": int(data[BagKeys.EMBEDDINGS].shape[1]),
        "mean_length": float(data[BagKeys.N_SLICES].float().mean()),
    }
    print("models:", flush=True)
    results["models"] = bench_models(
        data, rounds, steps, rooflines[f"start_{args.threads}_thread"]["best_gflops"], args.seed
    )
    print("per-bag loop vs batched:", flush=True)
    results["per_bag"] = bench_per_bag(data, max(2, rounds // 2), 1, args.seed)
    if not args.skip_threads:
        print("1 vs 2 threads:", flush=True)
        results["threads_comparison"] = bench_threads(data, max(2, rounds // 2), steps, args.seed)
    torch.set_num_threads(args.threads)
    if not args.skip_epoch:
        print("head-CT-sized epoch:", flush=True)
        results["epoch"] = bench_epoch(args)
    for threads in sorted({1, 2, args.threads}):
        torch.set_num_threads(threads)
        rooflines[f"end_{threads}_thread"] = matmul_roofline()
    torch.set_num_threads(args.threads)
    print(f"rooflines: {rooflines}", flush=True)
    results["rooflines"] = rooflines
    # fractions against the best roofline measured at the models' thread count (the conservative choice)
    roof = max(v["best_gflops"] for k, v in rooflines.items() if k.endswith(f"_{args.threads}_thread"))
    results["roofline_gflops"] = roof
    for r in results["models"]:
        for key in ("train", "train_ng", "eval"):
            if f"{key}_gflops" in r:
                r[f"{key}_roofline_fraction"] = r[f"{key}_gflops"] / roof
    write_results(results, markdown(results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
