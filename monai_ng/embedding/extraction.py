"""Scan manifest -> slice stacks -> frozen ViT -> embedding store, resumable and sharded across ranks.

Pipeline (issue 4, after the paper's encode step: Harvey, Loevlie & Hughes 2026 encode every axial slice with a frozen
ImageNet ViT-B/16 and keep the CLS token):

1. The manifest's scans are cut, in manifest order, into fixed **chunks** of ``scans_per_shard`` scans. Chunk ``c``
   belongs to rank ``c % world_size`` (deterministic, independent of how many ranks ran before).
2. A ``DataLoader`` with worker processes loads each pending scan into a ``[N, C, H, W]`` float stack (decoding in
   the workers overlaps the encoder's compute in the main process).
3. Inside a chunk the slices of consecutive scans are concatenated and encoded in batches of ``batch_size`` slices
   (autocast bf16/fp16 and channels_last on CUDA). Because a batch never crosses a chunk boundary, the batches -- and
   so the embeddings, bit for bit -- are the same whatever the number of ranks and wherever a run was interrupted.
4. A finished chunk is written to ``<out>.parts/shards/part-<chunk>.npz`` through a temporary file and ``os.replace``
   (atomic); the shard files are the done-list, so a run killed at any moment (even SIGKILL) resumes by skipping
   the chunks whose shard exists and recomputing at most one chunk per rank.
5. When every rank is done (barrier), rank 0 merges the shards in manifest order into the embedding store at
   ``out`` (:class:`monai_ng.data.embedding_store.EmbeddingStoreWriter`, atomic), writes ``failures.csv`` (scans
   that failed to load: scan id, file, reason) into it and removes the work folder.

The work folder holds ``config.json`` (encoder, preprocessing and extraction settings): resuming with another
configuration is refused with a message naming the differing keys, and the store's metadata lets training refuse a
mismatching store (:meth:`EmbeddingStore.require_metadata`).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from monai_ng.data.scan_manifest import ENCODING_COLUMNS, validate_scan_manifest
from monai_ng.embedding.encoder import FrozenSliceEncoder

__all__ = [
    "ConfigMismatchError",
    "ExtractionConfig",
    "ScanRecord",
    "ScanStackDataset",
    "ExtractionResult",
    "extract_embeddings",
    "chunk_owner",
    "records_from_manifest",
    "work_dir_for",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SHARDS_DIR = "shards"
FAILURES_FILE = "failures.csv"
FAILURE_COLUMNS = ("scan_id", "file", "reason")


class ConfigMismatchError(ValueError):
    """Resuming (or re-running into) an output whose recorded configuration differs from the current one."""


@dataclass(frozen=True)
class ScanRecord:
    """One manifest row: what to load and how to label it.

    Attributes:
        index: 0-based position in the manifest (fixes the order of the store).
        scan_id: unique scan identifier.
        patient_id: pseudonymous patient id.
        label: scan label, 0 or 1.
        slice_files: the scan's files in anatomical order (one file for a NIfTI volume).
        slice_labels: ``[S]`` 1/0/-1 per slice, or None.
    """

    index: int
    scan_id: str
    patient_id: str
    label: int
    slice_files: tuple[str, ...]
    slice_labels: tuple[int, ...] | None = None


@dataclass
class ExtractionConfig:
    """Run settings of :func:`extract_embeddings`.

    Attributes:
        batch_size: slices per encoder forward.
        workers: DataLoader worker processes decoding scans (0: decode in the main process).
        scans_per_shard: scans per chunk / shard file (the unit of resumption and of rank assignment).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:i"``; under torchrun each rank uses
            ``cuda:LOCAL_RANK``.
        dtype: store dtype, ``"float16"`` (default) or ``"float32"``.
        prefetch_factor: scans prefetched per worker.
        progress: show a tqdm bar (slices/s).
        keep_work_dir: keep ``<out>.parts`` after the merge.
        dist_timeout_s: timeout of the process-group barriers (ranks wait for the slowest one).
    """

    batch_size: int = 256
    workers: int = 4
    scans_per_shard: int = 32
    device: str = "auto"
    dtype: str = "float16"
    prefetch_factor: int = 2
    progress: bool = True
    keep_work_dir: bool = False
    dist_timeout_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.workers) < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if int(self.scans_per_shard) < 1:
            raise ValueError(f"scans_per_shard must be >= 1, got {self.scans_per_shard}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if int(self.prefetch_factor) < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")


@dataclass
class ExtractionResult:
    """What a call of :func:`extract_embeddings` did (on rank 0: the whole run; elsewhere: this rank)."""

    store_path: Path
    n_scans: int = 0
    n_slices: int = 0
    n_failed: int = 0
    n_chunks_done_now: int = 0
    n_chunks_skipped: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------- manifest
def records_from_manifest(manifest: pd.DataFrame) -> list[ScanRecord]:
    """Turn a scan manifest (one row per scan) into :class:`ScanRecord` s, in row order.

    The manifest is checked by :func:`monai_ng.data.scan_manifest.validate_scan_manifest` with the encoding columns
    required: ``scan_id``, ``patient_id``, ``label``, ``slice_files`` (a list, a JSON list string, or one path);
    optional ``slice_labels`` (list / JSON list of 1/0/-1, or empty).

    Raises:
        TypeError: ``manifest`` is not a DataFrame.
        ValueError: missing column, duplicate scan id, bad label or a scan with no files; the message names the scan.
    """
    frame = validate_scan_manifest(manifest, "manifest", required=ENCODING_COLUMNS)
    has_sl = "slice_labels" in frame.columns
    records: list[ScanRecord] = []
    for i, row in enumerate(frame.itertuples(index=False)):
        labels = row.slice_labels if has_sl else None
        records.append(
            ScanRecord(
                index=i,
                scan_id=str(row.scan_id),
                patient_id=str(row.patient_id),
                label=int(row.label),
                slice_files=tuple(str(f) for f in row.slice_files),
                slice_labels=None if labels is None else tuple(int(v) for v in labels),
            )
        )
    return records


def manifest_fingerprint(records: Sequence[ScanRecord]) -> str:
    """SHA-256 over the scan ids, labels and file lists (detects resuming with another manifest)."""
    digest = hashlib.sha256()
    for rec in records:
        digest.update(json.dumps([rec.scan_id, rec.patient_id, rec.label, list(rec.slice_files)]).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------------ dataset
def chunk_owner(chunk: int, world_size: int) -> int:
    """The rank that encodes chunk ``chunk`` (round robin)."""
    return chunk % world_size


def _failing_file(record: ScanRecord, exc: BaseException) -> str:
    """Best guess at the file that made a scan fail: the exception's filename, a scan file it names, else the first."""
    name = getattr(exc, "filename", None)
    if name:
        return str(name)
    text = str(exc)
    for path in record.slice_files:
        if path in text or Path(path).name in text:
            return path
    return record.slice_files[0] if len(record.slice_files) == 1 else str(Path(record.slice_files[0]).parent)


class ScanStackDataset(Dataset):
    """Loads one scan per item as a float32 ``[N, C, H, W]`` stack; load errors are returned, not raised.

    Args:
        records: the scans to load, in order.
        loader: ``loader(record) -> Tensor | ndarray [N, C, H, W]`` (float, intensities in [0, 1]).
        channels: expected C.
        image_size: expected (H, W).

    Items are dicts ``{"pos", "scan_id", "stack", "error", "file"}``: ``stack`` is None when loading failed, then
    ``error`` holds the reason and ``file`` the offending file.
    """

    def __init__(
        self,
        records: Sequence[ScanRecord],
        loader: Callable[[ScanRecord], Any],
        channels: int,
        image_size: tuple[int, int],
    ) -> None:
        self.records = list(records)
        self.loader = loader
        self.channels = int(channels)
        self.image_size = tuple(int(s) for s in image_size)

    def __len__(self) -> int:
        return len(self.records)

    def _check(self, record: ScanRecord, stack: Any) -> torch.Tensor:
        stack = torch.as_tensor(np.asarray(stack) if not isinstance(stack, torch.Tensor) else stack)
        stack = stack.as_subclass(torch.Tensor) if type(stack) is not torch.Tensor else stack
        if stack.ndim != 4:
            raise ValueError(f"loader returned shape {tuple(stack.shape)}, expected [N, C, H, W]")
        if stack.shape[0] < 1:
            raise ValueError("scan has no slices")
        if stack.shape[1] != self.channels or tuple(stack.shape[-2:]) != self.image_size:
            raise ValueError(
                f"loader returned slices of shape {tuple(stack.shape[1:])}, expected "
                f"({self.channels}, {self.image_size[0]}, {self.image_size[1]})"
            )
        stack = stack.to(torch.float32).contiguous()
        if not torch.isfinite(stack).all():
            raise ValueError("stack contains NaN or inf")
        if record.slice_labels is not None and len(record.slice_labels) != stack.shape[0]:
            raise ValueError(
                f"{len(record.slice_labels)} slice labels in the manifest but {stack.shape[0]} slices were loaded"
            )
        return stack

    def __getitem__(self, pos: int) -> dict[str, Any]:
        record = self.records[pos]
        try:
            stack = self._check(record, self.loader(record))
            return {"pos": pos, "scan_id": record.scan_id, "stack": stack, "error": None, "file": None}
        except Exception as exc:  # a bad scan is recorded and the run goes on
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            return {
                "pos": pos,
                "scan_id": record.scan_id,
                "stack": None,
                "error": reason,
                "file": _failing_file(record, exc),
            }


def _identity_collate(item: Any) -> Any:
    return item


def _worker_init(_: int) -> None:
    # decoding is single threaded; leave the cores to the encoder
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------------ work folder
def work_dir_for(out: str | os.PathLike) -> Path:
    """The resumable work folder of a store path: ``<out>.parts`` beside it."""
    out = Path(out)
    return out.parent / f"{out.name}.parts"


def _diff_config(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        diffs: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                diffs.append(f"{name} (recorded {old.get(key, '<absent>')!r}, now {new.get(key, '<absent>')!r})")
            else:
                diffs.extend(_diff_config(old[key], new[key], name + "."))
        return diffs
    return [] if old == new else [f"{prefix.rstrip('.')} (recorded {old!r}, now {new!r})"]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _shard_path(work: Path, chunk: int) -> Path:
    return work / SHARDS_DIR / f"part-{chunk:06d}.npz"


def _write_shard(
    work: Path, chunk: int, positions: list[int], embeddings: list[np.ndarray], failures: list[dict]
) -> None:
    dim = embeddings[0].shape[1] if embeddings else 0
    buf = io.BytesIO()
    np.savez(
        buf,
        chunk=np.int64(chunk),
        positions=np.asarray(positions, dtype=np.int64),
        n_slices=np.asarray([e.shape[0] for e in embeddings], dtype=np.int64),
        embeddings=np.concatenate(embeddings) if embeddings else np.zeros((0, dim), dtype=np.float16),
        failures=np.asarray(json.dumps(failures)),
    )
    _atomic_write_bytes(_shard_path(work, chunk), buf.getvalue())


def _read_shard(work: Path, chunk: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Read a shard (only ``keys`` when given; ``chunk`` and ``failures`` always)."""
    path = _shard_path(work, chunk)
    with np.load(path, allow_pickle=False) as data:
        wanted = data.files if keys is None else sorted({"chunk", "failures", *keys})
        shard = {k: data[k] for k in wanted}
    if int(shard["chunk"]) != chunk:
        raise ValueError(f"{path}: holds chunk {int(shard['chunk'])}, expected {chunk}")
    shard["failures"] = json.loads(str(shard["failures"]))
    return shard


# ------------------------------------------------------------------------------------------------------ distributed
def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from an initialised process group or torchrun's environment."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _resolve_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _maybe_init_process_group(device: torch.device, timeout_s: float) -> bool:
    """Initialise torch.distributed from torchrun's environment when WORLD_SIZE > 1; True if this call did it."""
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def _barrier(device: torch.device) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


# -------------------------------------------------------------------------------------------------------- encoding
class _ChunkEncoder:
    """Accumulates the scans of one chunk and encodes their slices in fixed batches that may cross scan boundaries."""

    def __init__(self, encoder: FrozenSliceEncoder, batch_size: int, device: torch.device) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.device = device
        self.pending: list[torch.Tensor] = []
        self.n_pending = 0
        self.outputs: list[torch.Tensor] = []
        self.lengths: list[int] = []
        self.positions: list[int] = []

    def add(self, pos: int, stack: torch.Tensor) -> int:
        """Queue a scan's stack; encode every full batch now available; return the number of slices encoded."""
        if self.device.type == "cuda":
            stack = stack.to(self.device, non_blocking=True)  # pinned by the DataLoader; batches are cut on the GPU
        self.positions.append(pos)
        self.lengths.append(int(stack.shape[0]))
        self.pending.append(stack)
        self.n_pending += int(stack.shape[0])
        done = 0
        if self.n_pending >= self.batch_size:
            flat = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
            start = 0
            while flat.shape[0] - start >= self.batch_size:
                self.outputs.append(self._encode(flat[start : start + self.batch_size]))
                start += self.batch_size
                done += self.batch_size
            rest = flat[start:]
            self.pending = [rest] if rest.shape[0] else []
            self.n_pending = int(rest.shape[0])
        return done

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.encoder(batch)  # stays on the device until the chunk ends

    def finish(self) -> tuple[list[int], list[np.ndarray], int]:
        """Encode the remaining slices; return positions, per-scan float32 embeddings and the slices encoded now."""
        done = 0
        if self.n_pending:
            flat = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.outputs.append(self._encode(flat))
            done = self.n_pending
        if self.outputs:
            allemb = torch.cat(self.outputs).float().cpu().numpy()
        else:
            allemb = np.zeros((0, self.encoder.embed_dim), dtype=np.float32)
        per_scan = list(np.split(allemb, np.cumsum(self.lengths)[:-1])) if self.lengths else []
        return self.positions, per_scan, done


# ---------------------------------------------------------------------------------------------------------- driver
def extract_embeddings(
    records: Sequence[ScanRecord] | pd.DataFrame,
    out: str | os.PathLike,
    encoder: FrozenSliceEncoder,
    loader: Callable[[ScanRecord], Any],
    preprocessing: Mapping[str, Any],
    config: ExtractionConfig | None = None,
) -> ExtractionResult:
    """Encode every scan of a manifest into an embedding store at ``out`` (resumable, multi-rank).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here (NCCL on CUDA, gloo on CPU) unless
    the caller did it; each rank encodes its chunks and rank 0 merges.

    Args:
        records: the manifest (DataFrame, see :func:`records_from_manifest`) or its records.
        out: the embedding store folder to create.
        encoder: the frozen encoder (moved to the run's device here).
        loader: ``loader(record) -> [N, C, H, W]`` float stack in [0, 1]; must be picklable when ``workers > 0``.
        preprocessing: description of what ``loader`` does (preset, channels, size, ...), stored in the metadata.
        config: run settings.

    Returns:
        An :class:`ExtractionResult`.

    Raises:
        ConfigMismatchError: ``out`` or its work folder was made with another encoder / preprocessing / settings.
        RuntimeError: some chunk is missing at merge time (a rank failed).
    """
    cfg = config or ExtractionConfig()
    if not isinstance(encoder, FrozenSliceEncoder):
        raise TypeError(f"encoder must be a FrozenSliceEncoder, got {type(encoder).__name__}")
    if isinstance(records, pd.DataFrame):
        records = records_from_manifest(records)
    records = list(records)
    if not records:
        raise ValueError("no scans to encode")
    if any(rec.index != i for i, rec in enumerate(records)):
        raise ValueError("records must be numbered 0..n-1 in manifest order (use records_from_manifest)")
    out = Path(out)
    work = work_dir_for(out)
    start_time = time.perf_counter()

    _, world_env, local_rank = _dist_info()
    device = _resolve_device(cfg.device, local_rank, world_env)
    own_group = _maybe_init_process_group(device, cfg.dist_timeout_s)
    rank, world, _ = _dist_info()
    try:
        return _run(records, out, work, encoder, loader, dict(preprocessing), cfg, device, rank, world, start_time)
    finally:
        if own_group:
            dist.destroy_process_group()


def _run_config(
    encoder: FrozenSliceEncoder, preprocessing: dict, cfg: ExtractionConfig, records: list, device: torch.device
) -> dict:
    return {
        "encoder": encoder.metadata,
        "preprocessing": preprocessing,
        "extraction": {
            "batch_size": int(cfg.batch_size),
            "scans_per_shard": int(cfg.scans_per_shard),
            "dtype": cfg.dtype,
            "amp": encoder.amp,
            "device_type": device.type,
            "manifest_sha256": manifest_fingerprint(records),
            "n_scans_in_manifest": len(records),
        },
    }


def _run(
    records: list[ScanRecord],
    out: Path,
    work: Path,
    encoder: FrozenSliceEncoder,
    loader: Callable[[ScanRecord], Any],
    preprocessing: dict,
    cfg: ExtractionConfig,
    device: torch.device,
    rank: int,
    world: int,
    start_time: float,
) -> ExtractionResult:
    run_cfg = json.loads(json.dumps(_run_config(encoder, preprocessing, cfg, records, device)))
    result = ExtractionResult(store_path=out)

    if out.exists():
        # a finished store: accept it if it was made the same way, refuse otherwise
        from monai_ng.data.embedding_store import EmbeddingStore

        store = EmbeddingStore(out)
        recorded = {k: store.metadata.get(k) for k in ("encoder", "preprocessing")}
        recorded["extraction"] = {k: (store.metadata.get("extraction") or {}).get(k) for k in run_cfg["extraction"]}
        diffs = _diff_config(recorded, run_cfg)
        if diffs:
            raise ConfigMismatchError(
                f"{out}: an embedding store made with another configuration already exists; differing: "
                + "; ".join(diffs)
                + ". Choose another --out or delete the old store."
            )
        _barrier(device)
        if rank == 0 and work.exists():
            if (out / FAILURES_FILE).exists():
                # the store and its failures.csv are complete: what is left is a work folder whose removal was
                # killed (its shards may be partly gone), so only finish removing it
                if not cfg.keep_work_dir:
                    shutil.rmtree(work, ignore_errors=True)
            else:
                _finalise_failures(out, work, records, cfg)
        result.already_complete = True
        result.n_scans, result.n_slices = len(store), store.n_slices_total
        return result

    if rank == 0:
        (work / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        if not (work / CONFIG_FILE).exists():
            _atomic_write_bytes(work / CONFIG_FILE, json.dumps(run_cfg, indent=2, sort_keys=True).encode())
        for stale in (work / SHARDS_DIR).glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)  # a temporary shard of a killed run
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # the store writer's temporary folder of a merge that was killed
    _barrier(device)
    recorded = json.loads((work / CONFIG_FILE).read_text())
    diffs = _diff_config(recorded, run_cfg)
    if diffs:
        raise ConfigMismatchError(
            f"{work}: refusing to resume an extraction made with another configuration; differing: "
            + "; ".join(diffs)
            + f". Re-run with the recorded settings, or delete {work} to start over."
        )

    if not encoder.pretrained:
        logger.warning("extracting with a RANDOM-INIT encoder: the store will say encoder.pretrained=false")
    n_chunks = math.ceil(len(records) / cfg.scans_per_shard)
    mine = [c for c in range(n_chunks) if chunk_owner(c, world) == rank]
    pending = [c for c in mine if not _shard_path(work, c).exists()]
    result.n_chunks_skipped = len(mine) - len(pending)
    if pending:
        _encode_chunks(records, pending, work, encoder, loader, preprocessing, cfg, device, rank, result)
    _barrier(device)
    if rank == 0:
        _merge(records, out, work, encoder, preprocessing, cfg, run_cfg, n_chunks, world, result)
    _barrier(device)
    result.seconds = time.perf_counter() - start_time
    return result


def _encode_chunks(
    records: list[ScanRecord],
    chunks: list[int],
    work: Path,
    encoder: FrozenSliceEncoder,
    loader: Callable[[ScanRecord], Any],
    preprocessing: dict,
    cfg: ExtractionConfig,
    device: torch.device,
    rank: int,
    result: ExtractionResult,
) -> None:
    from tqdm.auto import tqdm

    k = cfg.scans_per_shard
    todo = [records[i] for c in chunks for i in range(c * k, min((c + 1) * k, len(records)))]
    chunk_of = [r.index // k for r in todo]
    # slices per chunk as far as the manifest tells (a single-file volume counts as unknown)
    per_scan_files = [len(r.slice_files) for r in todo]
    total = sum(per_scan_files) if all(n > 1 for n in per_scan_files) else None

    encoder.to(device)
    if device.type == "cuda":
        encoder.to_channels_last()
    channels = encoder.in_chans
    dataset = ScanStackDataset(todo, loader, channels=channels, image_size=encoder.img_size)
    workers = int(cfg.workers)
    data = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
    out_dtype = np.dtype(cfg.dtype)
    bar = tqdm(
        total=total,
        unit="slice",
        unit_scale=True,
        desc=f"embed rank {rank}" if dist.is_initialized() else "embed",
        disable=not cfg.progress,
        position=rank,
        smoothing=0.05,
        mininterval=1.0,
    )
    current: int | None = None
    chunk_enc: _ChunkEncoder | None = None
    failures: list[dict[str, str]] = []

    def close_chunk() -> None:
        assert chunk_enc is not None and current is not None
        positions, per_scan, done = chunk_enc.finish()
        bar.update(done)
        scan_index = [todo[p].index for p in positions]
        _write_shard(work, current, scan_index, [e.astype(out_dtype) for e in per_scan], failures)
        result.n_chunks_done_now += 1
        result.n_scans += len(positions)
        result.n_slices += sum(e.shape[0] for e in per_scan)
        result.n_failed += len(failures)

    try:
        for item in data:
            pos = int(item["pos"])
            chunk = chunk_of[pos]
            if chunk != current:
                if chunk_enc is not None:
                    close_chunk()
                current, chunk_enc, failures = chunk, _ChunkEncoder(encoder, cfg.batch_size, device), []
            assert chunk_enc is not None
            if item["stack"] is None:
                failure = {"scan_id": item["scan_id"], "file": item["file"], "reason": item["error"]}
                logger.error("scan %r failed to load (%s): %s", item["scan_id"], item["file"], item["error"])
                failures.append(failure)
                result.failures.append(failure)
                if total is not None:
                    bar.update(per_scan_files[pos])
            else:
                bar.update(chunk_enc.add(pos, item["stack"]))
        if chunk_enc is not None:
            close_chunk()
    finally:
        bar.close()


def _merge(
    records: list[ScanRecord],
    out: Path,
    work: Path,
    encoder: FrozenSliceEncoder,
    preprocessing: dict,
    cfg: ExtractionConfig,
    run_cfg: dict,
    n_chunks: int,
    world: int,
    result: ExtractionResult,
) -> None:
    from monai_ng.data.embedding_store import EmbeddingStoreWriter

    missing = [c for c in range(n_chunks) if not _shard_path(work, c).exists()]
    if missing:
        raise RuntimeError(
            f"{work}: chunk(s) {missing[:10]} have no shard after all ranks finished; re-run the same command to resume"
        )
    failures: list[dict[str, str]] = []
    n_ok = n_rows = 0
    for c in range(n_chunks):
        shard = _read_shard(work, c, keys=("positions", "n_slices"))
        failures.extend(shard["failures"])
        n_ok += len(shard["positions"])
        n_rows += int(shard["n_slices"].sum())
    if n_ok == 0:
        raise RuntimeError(f"every scan failed to load; see the log. First failure: {failures[:1]}")
    metadata = {
        "encoder": run_cfg["encoder"],
        "preprocessing": run_cfg["preprocessing"],
        "extraction": {
            **run_cfg["extraction"],
            "n_failed": len(failures),
        },
    }
    if not encoder.pretrained:
        metadata["warning"] = "random-init encoder: embeddings carry no pretrained features"
    with EmbeddingStoreWriter(out, dim=encoder.embed_dim, dtype=cfg.dtype, metadata=metadata) as writer:
        for c in range(n_chunks):
            shard = _read_shard(work, c)
            offsets = np.concatenate([[0], np.cumsum(shard["n_slices"])])
            for j, index in enumerate(shard["positions"].tolist()):
                rec = records[index]
                emb = shard["embeddings"][offsets[j] : offsets[j + 1]]
                sl = None if rec.slice_labels is None else np.asarray(rec.slice_labels, dtype=np.int8)
                writer.add_scan(rec.scan_id, rec.patient_id, rec.label, emb, sl)
    result.failures = failures
    result.n_failed = len(failures)
    result.n_scans, result.n_slices = n_ok, n_rows
    _finalise_failures(out, work, records, cfg, failures)


def _finalise_failures(
    out: Path, work: Path, records: list[ScanRecord], cfg: ExtractionConfig, failures: list[dict] | None = None
) -> None:
    """Write ``failures.csv`` into the finished store, then remove the work folder (unless kept)."""
    if failures is None:
        n_chunks = math.ceil(len(records) / cfg.scans_per_shard)
        failures = [f for c in range(n_chunks) for f in _read_shard(work, c, keys=())["failures"]]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(FAILURE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for failure in failures:
        writer.writerow({k: failure.get(k, "") for k in FAILURE_COLUMNS})
    _atomic_write_bytes(out / FAILURES_FILE, text.getvalue().encode())
    if not cfg.keep_work_dir:
        shutil.rmtree(work, ignore_errors=True)
