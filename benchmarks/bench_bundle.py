"""Bundle training speed (issue 8 §6): a bundle's train.json through MONAI's ``ConfigWorkflow`` against the library's
own :func:`monai_ng.engines.train_mil` on the same head-CT-sized store, measured in the same process, interleaved.

Both sides train ABMIL + Normal Guidance (the bundle's defaults: forward KL, every head, lambda 1, SGD lr 0.01
momentum 0.9, grad-norm clip 1.0) for one epoch on the bundle's train split (``store_split``, seed 1001) with batch 64,
``DataLoader(shuffle=True, num_workers=0, collate_fn=collate_packed_bags)`` (the bundle's loaders collate so), then
validate on the val split (scan AUROC / AUPRC, localization AUROC / AUPRC), with the same torch intra-op threads. The bundle side is what a user runs
(``python -m monai.bundle run --config_file train.json``): its handlers (per-iteration ``StatsHandler`` and
``TensorBoardStatsHandler``, ``CheckpointSaver``, selection score) and its logging.conf included, writing under a
temporary ``--bundle_root``. The store is the synthetic fp16 head-CT-sized store of ``bench_mil.py`` (21,744 bags,
752,803 slices, 768-d, cached under ``--workdir``); it records no encoder, so the bundle's store-provenance check is
switched off (``embedding_spec=None``), a one-time check outside the timed epoch anyway.

Rounds run A B, B A, A B, ... (the order alternates so that load from other processes hits both alike); the ratio
reported is the median of the per-round ratios bundle / ``train_mil`` of the timed epoch (``trainer.run()`` with its
validation; the bundle's config parsing and object construction, ``ConfigWorkflow.initialize()``, are reported
separately). ``--max-batches N`` times N training batches of the epoch instead of all of them (the same N on both
sides; validation stays complete). ``--profile`` adds one cProfile'd bundle epoch and prints its top functions.

Usage::

    python3 benchmarks/bench_bundle.py --quick          # smoke run: 2,000-bag store, 1 round
    python3 benchmarks/bench_bundle.py                  # head-sized store, 3 rounds; JSON to benchmarks/results/
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_mil import BATCH, DIM, HEAD_BAGS, HEAD_SLICES, ensure_store  # noqa: E402
from machine_info import machine_info, write_results  # noqa: E402
from monai.bundle import ConfigWorkflow  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from monai_ng.bundle import store_split  # noqa: E402
from monai_ng.data import BagDataset, collate_packed_bags  # noqa: E402
from monai_ng.data.embedding_store import EmbeddingStore  # noqa: E402
from monai_ng.engines import TrainingConfig, train_mil  # noqa: E402
from monai_ng.losses import MILObjective  # noqa: E402
from monai_ng.networks import build_mil_network  # noqa: E402

SPLIT_SEED = 1001  # the bundle's default split_seed


def bundle_epoch(bundle: Path, store: Path, max_batches: int, work: Path) -> dict[str, float]:
    """One epoch of ``bundle``'s train.json through ConfigWorkflow: (initialize seconds, run seconds)."""
    configs = bundle / "configs"
    override: dict[str, Any] = {
        "bundle_root": str(work),
        "dataset_dir": str(store),
        "embedding_spec": None,  # synthetic store: no encoder recorded
        "network_name": "abmil",
        "max_epochs": 1,
        "batch_size": BATCH,
        "num_workers": 0,
    }
    if max_batches:
        override["train#trainer#epoch_length"] = max_batches
    t0 = time.perf_counter()
    wf = ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        **override,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")  # build every object now, outside the timed epoch
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    wf.run()
    run_s = time.perf_counter() - t0
    iterations = trainer.state.iteration
    wf.finalize()
    return {"init_s": init_s, "epoch_s": run_s, "iterations": iterations}


def library_epoch(store_path: Path, max_batches: int) -> dict[str, float]:
    """One epoch of :func:`train_mil` with the bundle's defaults: (set-up seconds, epoch seconds)."""
    t0 = time.perf_counter()
    store = EmbeddingStore(store_path)
    split = store_split(store, SPLIT_SEED)
    torch.manual_seed(0)
    network = build_mil_network("abmil", store.dim)
    objective = MILObjective(ng_weight=1.0, divergence="forward_kl", ng_heads="each", l1_weight=0.0)
    train_ds = BagDataset(store, indices=split["train"])
    if max_batches:
        sampler = RandomSampler(train_ds, num_samples=max_batches * BATCH)
        train_loader = DataLoader(train_ds, batch_size=BATCH, sampler=sampler, collate_fn=collate_packed_bags)
    else:
        train_loader = DataLoader(train_ds, batch_size=BATCH, shuffle=True, collate_fn=collate_packed_bags)
    val_loader = DataLoader(BagDataset(store, indices=split["val"]), batch_size=BATCH, collate_fn=collate_packed_bags)
    config = TrainingConfig(lr=0.01, momentum=0.9, max_epochs=1, clip_norm=1.0)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_mil(network, objective, train_loader, val_loader, config)
    return {"init_s": init_s, "epoch_s": time.perf_counter() - t0, "iterations": len(train_loader)}


def profile_bundle(bundle: Path, store: Path, max_batches: int, work: Path, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    bundle_epoch(bundle, store, max_batches, work)
    profiler.disable()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def markdown(results: dict[str, Any]) -> str:
    rows = results["rounds"]
    lines = [
        "| round | order | bundle init | bundle epoch | `train_mil` set-up | `train_mil` epoch | ratio | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(rows, 1):
        lines.append(
            f"| {k} | {r['order']} | {r['bundle']['init_s']:.1f} s | {r['bundle']['epoch_s']:.1f} s | "
            f"{r['library']['init_s']:.1f} s | {r['library']['epoch_s']:.1f} s | {r['ratio']:.3f} | "
            f"{r['loadavg'][0]:.1f} |"
        )
    lines.append("")
    lines.append(
        f"median ratio bundle / train_mil epoch: **{results['ratio_median']:.3f}** "
        f"(per round: {', '.join(f'{r:.3f}' for r in results['ratios'])}); "
        f"{results['iterations']} training batches of {BATCH} per epoch"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2,000-bag store, 1 round (smoke run)")
    parser.add_argument("--bundle", default="head_ct_hemorrhage_localization", help="folder under bundles/")
    parser.add_argument("--workdir", default="/tmp/monai_ng_bench", help="where the synthetic store is cached")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both sides)")
    parser.add_argument("--max-batches", type=int, default=0, help="time N training batches per epoch (0: all)")
    parser.add_argument("--profile", action="store_true", help="also profile one bundle epoch (cProfile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bundle.json"), help="JSON results")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    n_bags, n_slices = (2_000, 69_240) if args.quick else (HEAD_BAGS, HEAD_SLICES)
    rounds = args.rounds or (1 if args.quick else 3)
    store = Path(args.workdir) / f"head_store_{n_bags}"
    store.parent.mkdir(parents=True, exist_ok=True)
    ensure_store(store, n_bags, n_slices, args.seed)
    bundle = REPO / "bundles" / args.bundle
    results: dict[str, Any] = {
        "machine": machine_info(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "store": str(store),
        "bags": n_bags,
        "slices": n_slices,
        "dim": DIM,
        "threads": torch.get_num_threads(),
        "max_batches": args.max_batches,
        "rounds": [],
    }
    print(f"machine: {results['machine']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_bundle_") as tmp:
        for k in range(rounds):
            order = "bundle, train_mil" if k % 2 == 0 else "train_mil, bundle"
            row: dict[str, Any] = {"order": order}
            for side in order.split(", "):
                if side == "bundle":
                    row["bundle"] = bundle_epoch(bundle, store, args.max_batches, Path(tmp) / f"round{k}")
                else:
                    row["library"] = library_epoch(store, args.max_batches)
            row["ratio"] = row["bundle"]["epoch_s"] / row["library"]["epoch_s"]
            row["loadavg"] = os.getloadavg()
            results["rounds"].append(row)
            print(f"round {k + 1}: {json.dumps(row)}", flush=True)
        if args.profile:
            results["profile"] = profile_bundle(bundle, store, args.max_batches, Path(tmp) / "profile")
            print(results["profile"], flush=True)
    results["ratios"] = [r["ratio"] for r in results["rounds"]]
    results["ratio_median"] = statistics.median(results["ratios"])
    results["iterations"] = results["rounds"][0]["bundle"]["iterations"]
    write_results(results, markdown(results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
