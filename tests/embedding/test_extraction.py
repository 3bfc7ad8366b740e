"""Embedding extraction: phantom DICOM manifest -> frozen tiny ViT -> store; resume after a real SIGKILL, failures,
configuration mismatches, 2-process gloo run, slice-stack loading."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from monai_ng.cli import main as cli_main
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.phantom import make_phantom_volume, write_dicom_series
from monai_ng.data.scan_manifest import read_scan_manifest, scan_manifest_row, write_scan_manifest
from monai_ng.embedding.encoder import FrozenSliceEncoder
from monai_ng.embedding.extraction import (
    ConfigMismatchError,
    ExtractionConfig,
    ScanRecord,
    _ChunkEncoder,
    chunk_owner,
    extract_embeddings,
    records_from_manifest,
    work_dir_for,
)
from monai_ng.embedding.stack_loading import CTSliceStackLoader

N_SCANS = 6
BAD_SCAN = 3  # one of its files is overwritten with garbage
STALL_SCAN = 4  # first scan of chunk 2; the killed run stalls reading it (its first file replaced by a FIFO)
ENCODER = ["--encoder", "vit_tiny_patch16_224", "--weights", "random-init", "--image-size", "32"]
RUN = ["--batch-size", "4", "--workers", "1", "--scans-per-shard", "2", "--device", "cpu", "--no-progress"]
STORE_FILES = ("embeddings.npy", "manifest.csv", "slice_labels.npy", "store.json", "failures.csv")
PROCESS_TIMEOUT_S = 300.0


def _cli_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["--manifest", str(manifest), "--out", str(out), *ENCODER, *RUN, *extra]


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``monai-ng embed ARGV`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocess runs use OMP_NUM_THREADS=1: same kernels, same bits
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["embed", *argv])
    finally:
        torch.set_num_threads(threads)
    return rc, out.getvalue(), err.getvalue()


def _start_cli(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m monai_ng embed ARGV`` as a real subprocess in its own process group, output to ``log``."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "monai_ng", "embed", *argv],
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the DataLoader worker shares the group: one SIGKILL ends both
        )


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (started by :func:`_start_cli`) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _poll(condition: Callable[[], bool], timeout_s: float = PROCESS_TIMEOUT_S, every_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


def _open_fifo_writer(path: Path) -> int | None:
    """Open the write end of the FIFO ``path`` if some process has opened its read end (else None).

    Holding the write end open without writing keeps that reader blocked in ``read``.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def _assert_same_store(a: Path, b: Path) -> None:
    for name in STORE_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between {a} and {b}"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Six 32x32 phantom head CT scans (3-5 slices) as DICOM + a manifest; scan 3 has a corrupt file."""
    root = tmp_path_factory.mktemp("phantom")
    rows = []
    for i in range(N_SCANS):
        vol = make_phantom_volume("head", n_slices=3 + i % 3, size=32, lesion=bool(i % 2), seed=i)
        recs = write_dicom_series(vol, root / f"s{i}", patient_id=f"P{i}", seed=i)
        labels = vol.lesion_slices.astype(int).tolist()
        rows.append(scan_manifest_row(f"scan{i}", f"P{i}", vol.label, recs, labels, "ich"))
    bad_file = Path(rows[BAD_SCAN]["slice_files"][1])
    bad_file.write_bytes(b"this is not a DICOM file")
    manifest = write_scan_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return {"root": root, "manifest": manifest, "rows": rows, "bad_file": str(bad_file)}


@pytest.fixture(scope="module")
def reference(phantom):
    """An uninterrupted single-process run."""
    out = phantom["root"] / "ref_store"
    rc, stdout, stderr = _run_cli(_cli_args(phantom["manifest"], out))
    assert rc == 0, stderr
    return {"out": out, "stdout": stdout}


def test_store_contents_order_labels_and_random_init_marking(phantom, reference):
    store = EmbeddingStore(reference["out"])
    rows = [r for i, r in enumerate(phantom["rows"]) if i != BAD_SCAN]
    assert store.scan_ids == [r["scan_id"] for r in rows]  # manifest order, failed scan left out
    assert store.n_slices.tolist() == [r["n_slices"] for r in rows]
    assert store.embeddings.dtype == np.float16 and store.dim == 192
    for i, row in enumerate(rows):
        bag = store.bag(i)
        assert bag.label == row["label"] and bag.patient_id == row["patient_id"]
        assert bag.slice_labels.tolist() == row["slice_labels"]
    meta = store.metadata
    assert meta["encoder"]["pretrained"] is False and meta["encoder"]["weights"] == "random-init"
    assert meta["encoder"]["name"] == "vit_tiny_patch16_224" and len(meta["encoder"]["weights_sha256"]) == 64
    assert meta["preprocessing"]["preset"] == "brain" and meta["extraction"]["n_failed"] == 1
    assert "random-init encoder" in reference["stdout"]
    assert not work_dir_for(reference["out"]).exists()  # work folder removed after the merge


def test_embeddings_equal_direct_encoder_forward(phantom, reference):
    """Batches that cross scan boundaries are split back to the right scans and slices."""
    store = EmbeddingStore(reference["out"])
    encoder = FrozenSliceEncoder("vit_tiny_patch16_224", weights="random-init", model_kwargs={"img_size": 32})
    loader = CTSliceStackLoader("brain", channels=1, image_size=32)
    records = {r.scan_id: r for r in records_from_manifest(read_scan_manifest(phantom["manifest"]))}
    for i, scan_id in enumerate(store.scan_ids):
        expected = encoder(loader(records[scan_id])).numpy()
        got = np.asarray(store.bag(i).embeddings, dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)


def test_failed_scan_is_recorded_and_run_goes_on(phantom, reference):
    failures = pd.read_csv(reference["out"] / "failures.csv")
    assert failures.columns.tolist() == ["scan_id", "file", "reason"]
    assert failures["scan_id"].tolist() == [f"scan{BAD_SCAN}"]
    assert failures["file"].tolist() == [phantom["bad_file"]]
    assert len(failures["reason"].iloc[0]) > 0
    assert len(EmbeddingStore(reference["out"])) == N_SCANS - 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_resume_after_sigkill_gives_identical_store(phantom, reference):
    """SIGKILL a real ``monai-ng embed`` process mid-run, resume with the same command: the same store, bit for bit.

    The run is made to stall deterministically: the first file of scan 4 (chunk 2) is swapped for a FIFO, so the
    DataLoader worker blocks reading it once scans 0-3 are loaded. When the worker is inside that read and chunk 0's
    shard exists (chunk 1 is loaded but not closed), the process group is killed. The file is then put back.
    """
    out = phantom["root"] / "killed_store"
    work = work_dir_for(out)
    stalled = Path(phantom["rows"][STALL_SCAN]["slice_files"][0])
    saved = stalled.with_name(stalled.name + ".saved")
    log = phantom["root"] / "killed_run.log"
    stalled.rename(saved)
    os.mkfifo(stalled)
    writer: list[int] = []
    proc = None
    try:
        proc = _start_cli(_cli_args(phantom["manifest"], out), log)

        def stalled_after_chunk_0() -> bool:
            if proc.poll() is not None:
                return True
            if not writer and (fd := _open_fifo_writer(stalled)) is not None:
                writer.append(fd)  # the worker is reading scan 4 and stays blocked while we hold the write end
            return bool(writer) and (work / "shards" / "part-000000.npz").exists()

        assert _poll(stalled_after_chunk_0), f"run did not reach chunk 0 in time:\n{log.read_text()}"
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) instead of stalling:\n{log.read_text()}"
        _kill_group(proc)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        for fd in writer:
            os.close(fd)
        stalled.unlink()
        saved.rename(stalled)
    assert not out.exists()
    assert sorted(p.name for p in (work / "shards").iterdir()) == ["part-000000.npz"]
    rc, stdout, stderr = _run_cli(_cli_args(phantom["manifest"], out))
    assert rc == 0, stderr
    assert "1 chunk(s) resumed" in stdout
    _assert_same_store(out, reference["out"])


def test_two_process_gloo_run_identical_to_one_process(phantom, reference):
    """Two ``monai-ng embed`` processes with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) on gloo."""
    out = phantom["root"] / "ddp_store"
    port = str(_free_port())
    procs = []
    try:
        for r in range(2):
            env = {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
            env["MASTER_PORT"] = port
            procs.append(_start_cli(_cli_args(phantom["manifest"], out), phantom["root"] / f"rank{r}.log", env))
        for proc in procs:
            proc.wait(timeout=PROCESS_TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)
    logs = [(phantom["root"] / f"rank{r}.log").read_text() for r in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    _assert_same_store(out, reference["out"])


class _Interrupt(BaseException):
    pass


def _interrupting_loader(after: int):
    base = CTSliceStackLoader("brain", channels=1, image_size=32)
    calls = [0]

    def load(record: ScanRecord) -> torch.Tensor:
        calls[0] += 1
        if calls[0] > after:
            raise _Interrupt()  # not an Exception: aborts the run like a crash
        return base(record)

    return load, base.describe()


def test_resuming_with_another_configuration_is_refused(phantom):
    out = phantom["root"] / "mismatch_store"
    manifest = read_scan_manifest(phantom["manifest"])
    cfg = ExtractionConfig(batch_size=4, workers=0, scans_per_shard=2, device="cpu", progress=False)
    enc = FrozenSliceEncoder("vit_tiny_patch16_224", weights="random-init", model_kwargs={"img_size": 32})
    load, prep = _interrupting_loader(after=3)
    with pytest.raises(_Interrupt):
        extract_embeddings(manifest, out, enc, load, prep, cfg)
    assert (work_dir_for(out) / "shards" / "part-000000.npz").exists() and not out.exists()
    other = FrozenSliceEncoder(
        "vit_tiny_patch16_224", weights="random-init", pooling="mean", model_kwargs={"img_size": 32}
    )
    with pytest.raises(ConfigMismatchError, match=r"encoder\.pooling \(recorded 'cls', now 'mean'\)"):
        extract_embeddings(manifest, out, other, load, prep, cfg)
    cfg8 = ExtractionConfig(batch_size=8, workers=0, scans_per_shard=2, device="cpu", progress=False)
    with pytest.raises(ConfigMismatchError, match=r"extraction\.batch_size"):
        extract_embeddings(manifest, out, enc, load, prep, cfg8)
    with pytest.raises(ConfigMismatchError, match=r"preprocessing\.preset"):
        extract_embeddings(manifest, out, enc, load, {**prep, "preset": "subdural"}, cfg)


def test_finished_store_mismatch_refused_and_match_is_a_no_op(phantom, reference):
    out = reference["out"]
    before = (out / "embeddings.npy").stat().st_mtime_ns
    rc, _, stderr = _run_cli(_cli_args(phantom["manifest"], out, "--pooling", "mean"))
    assert rc == 3 and "encoder.pooling" in stderr and "another configuration" in stderr
    rc, stdout, _ = _run_cli(_cli_args(phantom["manifest"], out))
    assert rc == 0 and "already complete" in stdout and "random-init encoder" in stdout
    assert (out / "embeddings.npy").stat().st_mtime_ns == before


def test_rerun_on_finished_store_cleans_a_half_removed_work_folder(phantom, reference, tmp_path):
    # issue 11: killed while removing OUT.parts after the store was finished -> every re-run failed on a missing
    # shard; a finished store makes the re-run a no-op that finishes the clean-up
    out = tmp_path / "store"
    shutil.copytree(reference["out"], out)
    work = work_dir_for(out)
    (work / "shards").mkdir(parents=True)
    (work / "shards" / "part-000001.npz").write_bytes(b"left over")  # part-000000.npz already removed
    rc, stdout, stderr = _run_cli(_cli_args(phantom["manifest"], out))
    assert rc == 0 and "already complete" in stdout, stderr
    assert not work.exists()
    _assert_same_store(out, reference["out"])


def test_training_side_require_metadata(reference):
    store = EmbeddingStore(reference["out"])
    store.require_metadata({"encoder": {"name": "vit_tiny_patch16_224", "pooling": "cls"}})
    with pytest.raises(ValueError, match=r"encoder\.name"):
        store.require_metadata({"encoder": {"name": "vit_base_patch16_224"}})
    with pytest.raises(ValueError, match=r"preprocessing\.preset"):
        store.require_metadata({"preprocessing": {"preset": "head"}})


class _FakeEncoder:
    """Embedding = the slice's constant value; records the batch sizes it saw."""

    embed_dim = 1

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return x.mean(dim=(2, 3))


def test_chunk_batches_cross_scan_boundaries_and_split_back():
    fake = _FakeEncoder()
    chunk = _ChunkEncoder(fake, batch_size=4, device=torch.device("cpu"))
    sizes, start, done = [3, 5, 2, 1], 0, 0
    for pos, n in enumerate(sizes):
        ids = torch.arange(start, start + n, dtype=torch.float32)
        done += chunk.add(pos, ids.view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous())
        start += n
    positions, per_scan, rest = chunk.finish()
    assert fake.batches == [4, 4, 3] and done + rest == 11
    assert positions == [0, 1, 2, 3]
    assert [e[:, 0].tolist() for e in per_scan] == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9], [10]]


def test_chunk_owner_round_robin_and_manifest_checks(phantom):
    assert [chunk_owner(c, 3) for c in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    df = read_scan_manifest(phantom["manifest"])
    with pytest.raises(ValueError, match="appears more than once"):
        records_from_manifest(pd.concat([df, df.iloc[:1]], ignore_index=True))
    bad = df.copy()
    bad.loc[0, "label"] = 2
    with pytest.raises(ValueError, match="scan 'scan0': label 2"):
        records_from_manifest(bad)
    with pytest.raises(ValueError, match="lacks column"):
        records_from_manifest(df.drop(columns=["slice_files"]))


def test_stack_loader_windows_orientation_and_square_padding():
    # [1, X=4, Y=2, Z=1]: rows (Y) are shorter than columns (X); HU chosen so the brain window (40/80) is exact
    hu = torch.tensor([[0.0, 20.0], [40.0, 60.0], [80.0, 100.0], [-20.0, 40.0]]).view(1, 4, 2, 1)
    loader = CTSliceStackLoader("brain", channels=1, image_size=4)
    stack = loader.stack_from_hu(hu)
    windowed = torch.tensor([[0.0, 0.5, 1.0, 0.0], [0.25, 0.75, 1.0, 0.5]])  # image rows = Y, columns = X
    expected = torch.zeros(4, 4)  # padded with the slice minimum (0.0) above and below
    expected[1:3] = windowed
    assert stack.shape == (1, 1, 4, 4)
    torch.testing.assert_close(stack[0, 0], expected)
    three = CTSliceStackLoader("head", channels=3, image_size=4).stack_from_hu(hu)
    subdural = ((hu[0, :, :, 0].T - 80.0 + 100.0) / 200.0).clamp(0, 1)  # channel 1: subdural 80/200
    torch.testing.assert_close(three[0, 1, 1:3], subdural)
    z = CTSliceStackLoader("zscore:40,20", channels=1, image_size=4).stack_from_hu(hu)
    torch.testing.assert_close(z[0, 0, 1:3], (hu[0, :, :, 0].T - 40.0) / 20.0)
    assert z[0, 0, 0].tolist() == [-3.0] * 4  # the z-scored slice minimum
    with pytest.raises(ValueError, match="3 window"):
        CTSliceStackLoader("head", channels=1)
    with pytest.raises(ValueError, match="zscore:MEAN,STD"):
        CTSliceStackLoader("zscore:abc", channels=1)


def test_store_json_records_weights_hash(reference):
    meta = json.loads((reference["out"] / "store.json").read_text())
    enc = FrozenSliceEncoder("vit_tiny_patch16_224", weights="random-init", model_kwargs={"img_size": 32})
    assert meta["encoder"]["weights_sha256"] == enc.weights_sha256


def test_stack_loader_reads_nifti_and_dicom_the_same(tmp_path):
    from monai_ng.data.phantom import write_nifti

    vol = make_phantom_volume("head", n_slices=4, size=32, lesion=True, seed=11)
    recs = write_dicom_series(vol, tmp_path / "dcm", patient_id="P", seed=11)
    nii = write_nifti(vol, tmp_path / "vol.nii.gz")
    loader = CTSliceStackLoader("brain", channels=1, image_size=32)
    from_dicom = loader(ScanRecord(0, "a", "P", 1, tuple(str(r.path) for r in recs)))
    from_nifti = loader(ScanRecord(0, "a", "P", 1, (str(nii),)))
    expected = ((torch.as_tensor(vol.hu, dtype=torch.float32) - 0.0) / 80.0).clamp(0, 1)  # brain 40/80: [0, 80]
    torch.testing.assert_close(from_dicom[:, 0], expected)
    torch.testing.assert_close(from_nifti[:, 0], expected)
