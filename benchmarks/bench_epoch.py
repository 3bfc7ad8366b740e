"""One head-CT-sized training epoch end to end, data loading included: this project against the paper's public code.

Issue 12, on the CPU and (``--device cuda``) on a GPU. Data: the synthetic fp16 store of ``bench_mil.py`` (21,744
bags, 752,803 slices, 768-d: the size of the head CT training set; written once under ``--workdir`` by
:func:`bench_mil.ensure_store`).

- **Ours**, as :func:`monai_ng.engines.train_mil` trains (without its validation handler):
  :class:`~monai_ng.data.BagDataset` over the memory-mapped store -> ``DataLoader(batch_size=64, shuffle=True,
  collate_fn=collate_packed_bags, num_workers=--workers, pin_memory=True on CUDA)`` -> MONAI ``SupervisedTrainer``
  (``prepare_bag_batch``, ``non_blocking=True`` on CUDA, ``amp`` with ``amp_kwargs={"dtype": torch.bfloat16}`` under
  ``--amp bf16``) with :class:`~monai_ng.engines.GradientNormClipper` (1.0) and SGD momentum 0.9; the network and
  :class:`~monai_ng.losses.MILObjective` (NG, forward KL, every head) as ``bench_official.py`` builds them.
- **Theirs**, as their ``src/frozen_mil.py`` trains: the whole training set as one float32 ``[T, D]`` tensor in memory
  (their ``train.pth`` holds it so; built here from the same store, not timed), their ``MILTensorDataset``,
  ``DataLoader(batch_size=64, shuffle=True, collate_fn=utils.collate_fn, drop_last=True)`` and their
  ``utils.train_one_epoch`` (the batch moved to the GPU inside it, when there is one), with their ``PoolClf`` and
  ``GuidedAttentionL1Loss`` wrapped by ``bench_official.KeywordFilteredCriterion`` (the documented local patch). Their
  code has no AMP switch: under ``--amp bf16`` their network's forward runs under ``torch.autocast`` and hands back
  float32 outputs (:class:`AutocastForward`; their loop's closing ``logits.numpy()`` cannot take bfloat16).
- Timed, per model, in one process: ``--rounds`` rounds of (theirs, ours) epochs, alternating which goes first; the
  GPU is synchronised at both ends of every timed epoch. Also, once per model: our epoch in fp32 (``--amp`` with
  ``--also-fp32``), our epoch with pageable batches and blocking copies (``--also-pageable``), and our data path
  alone (iterating the loader and copying each batch to the device), to show what loading costs. Peak GPU memory per
  side from ``torch.cuda.max_memory_allocated``. ``--write-docs`` rewrites the CPU or the CUDA section of
  ``docs/performance.md``.

Usage::

    python3 benchmarks/bench_epoch.py --official-src PATH --device cuda --amp bf16 --also-fp32 --also-pageable \
        --workers 4                                                                     # GPU
    python3 benchmarks/bench_epoch.py --official-src PATH --threads 1 --models ABMIL+NG SmAP+NG TransMIL+NG  # CPU
    python3 benchmarks/bench_epoch.py --official-src PATH --quick                           # CPU smoke run
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from bench_mil import HEAD_BAGS, HEAD_SLICES, ensure_store  # noqa: E402
from bench_official import (  # noqa: E402
    MODEL_SPECS,
    ModelSpec,
    OfficialSide,
    OurSide,
    docs_section,
    load_official,
    map_official_state,
    official_src_problem,
    rewrite_marked_section,
    timed,
)
from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.data.bag_dataset import BagDataset, BagKeys, collate_packed_bags  # noqa: E402
from monai_ng.data.embedding_store import EmbeddingStore  # noqa: E402
from monai_ng.engines import GradientNormClipper, prepare_bag_batch  # noqa: E402

BATCH = 64
QUICK_BAGS, QUICK_SLICES = 1_000, 34_620
#: the sections of docs/performance.md a ``--write-docs`` run rewrites, by device
DOCS_MARKERS = {
    "cuda": ("<!-- bench_epoch_cuda:begin -->", "<!-- bench_epoch_cuda:end -->"),
    "cpu": ("<!-- bench_epoch_cpu:begin -->", "<!-- bench_epoch_cpu:end -->"),
}


def timed_epoch(fn: Callable[[], Any], device: torch.device) -> tuple[float, float | None]:
    """``(seconds, peak GPU GiB or None)`` of one call of ``fn``, the GPU synchronised at both ends."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(fn, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def their_training_set(store: EmbeddingStore) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor]:
    """The store as their ``train.pth`` holds a split: ``X`` float32 ``[T, D]``, ``lengths``, ``y`` ``[n, 1]`` float."""
    index = store.index
    order = np.argsort(index["offset"].to_numpy(), kind="stable")
    lengths = index["n_slices"].to_numpy()[order]
    offsets = index["offset"].to_numpy()[order]
    if not np.array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)[:-1]])):
        raise ValueError(f"{store.path}: rows are not stored bag after bag; their layout needs that")
    x = torch.from_numpy(np.asarray(store.embeddings, dtype=np.float32))
    y = torch.from_numpy(index["label"].to_numpy()[order].astype(np.float32)).reshape(-1, 1)
    return x, tuple(int(n) for n in lengths), y


class AutocastForward(nn.Module):
    """Their network's forward under autocast, its outputs handed back in float32.

    Their ``train_one_epoch`` ends with ``sigmoid(logits).numpy()``, which a bfloat16 tensor cannot do, so autocasting
    their whole loop fails; this wrapper autocasts the network only (the loss then runs in float32, as most of an
    autocast loss does anyway). Parameters are the wrapped network's.
    """

    def __init__(self, network: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.network, self.device_type, self.dtype = network, device_type, dtype

    def forward(self, x: torch.Tensor, lengths: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            logits, attention = self.network(x, lengths)
        return logits.float(), None if attention is None else attention.float()


class TheirEpoch:
    """Their ``frozen_mil.py`` training path for one model: in-memory dataset, loader, ``utils.train_one_epoch``."""

    def __init__(self, code: Any, side: OfficialSide, data: tuple[torch.Tensor, tuple[int, ...], torch.Tensor]):
        self.code, self.side = code, side
        dataset = code.datasets.MILTensorDataset(*data)
        self.loader = DataLoader(
            dataset, batch_size=BATCH, shuffle=True, collate_fn=code.utils.collate_fn, drop_last=True
        )

        side = self.side
        self.network = side.network
        if side.amp is not None:
            self.network = AutocastForward(side.network, side.device.type, side.amp)

    def __call__(self) -> None:
        self.code.utils.train_one_epoch(self.network, self.side.criterion, self.side.optimizer, self.loader)


class OurEpoch:
    """Our training path for one model: ``BagDataset`` + ``collate_packed_bags`` loader + MONAI ``SupervisedTrainer``.

    ``pinned`` (on CUDA): the loader pins its batches and the trainer copies them with ``non_blocking=True``, as the
    library does on a GPU; False keeps pageable batches and blocking copies (``--also-pageable``). Off CUDA: neither.
    """

    def __init__(self, side: OurSide, store: EmbeddingStore, workers: int, pinned: bool = True) -> None:
        from monai.engines import SupervisedTrainer  # noqa: PLC0415 - keeps --help fast

        self.side = side
        self.pinned = pinned and side.device.type == "cuda"
        self.dataset = BagDataset(store)
        self.loader = DataLoader(
            self.dataset,
            batch_size=BATCH,
            shuffle=True,
            collate_fn=collate_packed_bags,
            num_workers=workers,
            pin_memory=self.pinned,
            persistent_workers=workers > 0,
        )
        self.trainer_type = SupervisedTrainer

    def trainer(self) -> Any:
        side = self.side
        trainer = self.trainer_type(
            device=side.device,
            max_epochs=1,
            train_data_loader=self.loader,
            network=side.network,
            optimizer=side.optimizer,
            loss_function=side.criterion,
            prepare_batch=prepare_bag_batch,
            non_blocking=self.pinned,
            amp=side.amp is not None,
            amp_kwargs={"dtype": side.amp} if side.amp is not None else None,
            decollate=False,
        )
        GradientNormClipper(1.0).attach(trainer)
        return trainer

    def __call__(self) -> None:
        self.trainer().run()

    def data_only(self) -> int:
        """Iterate the loader once, copying each batch to the device; returns the slices seen."""
        n = 0
        for batch in self.loader:
            prepare_bag_batch(batch, self.side.device, non_blocking=self.pinned)
            n += int(batch[BagKeys.N_SLICES].sum())
        return n


def bench_model(
    code: Any,
    spec: ModelSpec,
    store: EmbeddingStore,
    data: tuple[torch.Tensor, tuple[int, ...], torch.Tensor],
    args: argparse.Namespace,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """Timings of one model: interleaved epochs of both sides, then ours in fp32 (with ``--amp``), ours with pageable
    batches (``--also-pageable``) and our data path alone."""
    torch.manual_seed(args.seed)
    theirs = OfficialSide(code, spec, device, amp, args.lr)
    ours = OurSide(spec, device, amp, args.lr)
    ours.network.load_state_dict(map_official_state(spec.kind, theirs.network.state_dict(), ours.network.state_dict()))
    their_epoch, our_epoch = TheirEpoch(code, theirs, data), OurEpoch(ours, store, args.workers)
    bags = len(our_epoch.dataset)
    their_bags = len(their_epoch.loader) * BATCH  # drop_last
    row: dict[str, Any] = {"model": spec.label, "bags": bags, "their_bags": their_bags, "theirs_s": [], "ours_s": []}
    for r in range(args.rounds):
        order = [("theirs", their_epoch), ("ours", our_epoch)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, peak = timed_epoch(fn, device)
            row[f"{name}_s"].append(seconds)
            row[f"{name}_peak_gib"] = peak
            print(f"  {spec.label} round {r} {name}: {seconds:.2f} s", flush=True)
    row["theirs_bags_per_s"] = their_bags / statistics.median(row["theirs_s"])
    row["ours_bags_per_s"] = bags / statistics.median(row["ours_s"])
    row["ratio"] = row["ours_bags_per_s"] / row["theirs_bags_per_s"]
    if amp is not None and args.also_fp32:
        fp32 = OurSide(spec, device, None, args.lr)
        fp32.network.load_state_dict(ours.network.state_dict())
        seconds, peak = timed_epoch(OurEpoch(fp32, store, args.workers), device)
        row["ours_fp32_s"], row["ours_fp32_peak_gib"] = seconds, peak
        row["ours_fp32_bags_per_s"] = bags / seconds
        print(f"  {spec.label} ours fp32: {seconds:.2f} s", flush=True)
    if args.also_pageable:
        pageable = OurSide(spec, device, amp, args.lr)
        pageable.network.load_state_dict(ours.network.state_dict())
        seconds, _ = timed_epoch(OurEpoch(pageable, store, args.workers, pinned=False), device)
        row["ours_pageable_s"], row["ours_pageable_bags_per_s"] = seconds, bags / seconds
        print(f"  {spec.label} ours, pageable batches: {seconds:.2f} s", flush=True)
    slices: list[int] = []
    seconds, _ = timed_epoch(lambda: slices.append(our_epoch.data_only()), device)
    row["data_only_s"], row["data_only_slices"] = seconds, slices[0]
    row["data_share"] = seconds / statistics.median(row["ours_s"])
    print(f"  {spec.label} our data path alone: {seconds:.2f} s", flush=True)
    return row


def markdown(results: dict[str, Any]) -> str:
    """The epoch table: seconds and bags/s per side, the ratio, our fp32 epoch, the data path's share, peak memory."""
    amp = results.get("amp")
    pageable = any("ours_pageable_s" in t for t in results["timings"])
    lines = [
        f"One epoch over {'the head-CT-sized' if results['bags'] == HEAD_BAGS else 'a'} synthetic store "
        f"({results['bags']:,} bags, {results['slices']:,} slices, fp16, "
        f"768-d; batch {BATCH}), median of {results['rounds']} round(s) per side"
        f"{', autocast ' + amp + ' on both sides' if amp else ''}; theirs drops the last partial batch:",
        "",
        "| model | epoch s: theirs / ours | bags/s: theirs / ours | ours / theirs | "
        + ("our epoch in fp32, s | " if amp else "")
        + ("our epoch, pageable batches and blocking copies, s | " if pageable else "")
        + "our data path alone, s (share of our epoch) | peak GPU GiB: theirs / ours |",
        "|---|---|---|---|" + ("---|" if amp else "") + ("---|" if pageable else "") + "---|---|",
    ]
    for t in results["timings"]:
        peak = "–"
        if t.get("theirs_peak_gib") is not None:
            peak = f"{t['theirs_peak_gib']:.2f} / {t['ours_peak_gib']:.2f}"
        fp32 = f"{t['ours_fp32_s']:.2f} | " if amp and "ours_fp32_s" in t else ("– | " if amp else "")
        if pageable:
            fp32 += f"{t['ours_pageable_s']:.2f} | " if "ours_pageable_s" in t else "– | "
        lines.append(
            f"| {t['model']} | {statistics.median(t['theirs_s']):.2f} / {statistics.median(t['ours_s']):.2f} | "
            f"{t['theirs_bags_per_s']:.0f} / {t['ours_bags_per_s']:.0f} | {t['ratio']:.2f} | {fp32}"
            f"{t['data_only_s']:.2f} ({100 * t['data_share']:.0f} %) | {peak} |"
        )
    for e in results.get("errors", []):
        lines += ["", f"{e['model']} failed: {e['error'].splitlines()[0] if e['error'] else ''}"]
    if results.get("interrupted"):
        lines += ["", f"Interrupted (SIGINT) after {len(results['timings'])} model(s): the table holds those only."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--official-src", default=None, help="local checkout of the paper's public code (has src/)")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_BAGS:,}-bag store (smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=("bf16",), default=None, help="autocast both sides (CUDA only)")
    parser.add_argument("--also-fp32", action="store_true", help="with --amp: also one epoch of ours in fp32")
    parser.add_argument(
        "--also-pageable",
        action="store_true",
        help="with --device cuda: also one epoch of ours with pageable batches and blocking copies",
    )
    parser.add_argument("--models", nargs="+", default=["ABMIL+NG", "TransMIL+NG"])
    parser.add_argument("--rounds", type=int, default=1, help="epochs per side per model (alternating first)")
    parser.add_argument("--workers", type=int, default=0, help="our loader's worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workdir", default="/tmp/monai_ng_bench", help="where the synthetic store is cached")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "epoch.json"), help="JSON results")
    parser.add_argument("--write-docs", action="store_true", help="rewrite this device's section of --docs")
    parser.add_argument("--docs", default=str(REPO / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    known = {s.label for s in MODEL_SPECS}
    if set(args.models) - known:
        parser.error(f"unknown --models {sorted(set(args.models) - known)}; choose from {sorted(known)}")
    if args.amp and args.device != "cuda":
        parser.error("--amp needs --device cuda (MONAI's trainer autocasts on CUDA only)")
    if args.also_pageable and args.device != "cuda":
        parser.error("--also-pageable needs --device cuda (batches are pinned on CUDA only)")
    if args.rounds < 1 or args.workers < 0:
        parser.error("--rounds must be >= 1 and --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = official_src_problem(args.official_src)
    if problem is not None:
        print(f"bench_epoch: skipped: {problem}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_epoch: --device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    code = load_official(args.official_src)
    n_bags, n_slices = (QUICK_BAGS, QUICK_SLICES) if args.quick else (HEAD_BAGS, HEAD_SLICES)
    path = Path(args.workdir) / f"head_store_{n_bags}"
    path.parent.mkdir(parents=True, exist_ok=True)
    store = ensure_store(path, n_bags, n_slices, args.seed)
    t0 = time.perf_counter()
    data = their_training_set(store)
    print(f"their in-memory float32 set: {tuple(data[0].shape)} in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "command": shlex.join(["python3", "benchmarks/bench_epoch.py", *(sys.argv[1:] if argv is None else argv)]),
        "official_commit": code.commit,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp": args.amp,
        "data": f"the synthetic store below, read by {args.workers} loader worker(s) on our side; "
        f"{torch.get_num_threads()} intra-op thread(s)",
        "rounds": args.rounds,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "bags": len(store),
        "slices": int(store.index["n_slices"].sum()),
        "timings": [],
    }
    try:  # `timeout -s INT` (or Ctrl-C) ends the run early and still writes the models measured so far
        for spec in (s for s in MODEL_SPECS if s.label in args.models):
            try:
                results["timings"].append(bench_model(code, spec, store, data, args, device, amp))
            except Exception as exc:  # noqa: BLE001 - record it, go on with the next model
                error = f"{type(exc).__name__}: {exc}"
                results.setdefault("errors", []).append({"model": spec.label, "error": error})
                print(f"  {spec.label} failed: {error}", flush=True)
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("interrupted: writing the models measured so far", flush=True)
    table = markdown(results)
    write_results(results, table, args.out)
    if args.write_docs:
        docs = Path(args.docs)
        docs.write_text(
            rewrite_marked_section(docs.read_text(), docs_section(results, table), *DOCS_MARKERS[args.device])
        )
        print(f"rewrote the bench_epoch section of {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
