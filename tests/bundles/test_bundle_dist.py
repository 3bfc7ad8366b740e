"""The head bundle's multi_gpu_embed.json / multi_gpu_train.json under torchrun with 2 CPU processes (gloo), as the
model zoo's ``test_<bundle>_dist.py`` runs them: the same store and the same validation metrics as one process.

- embed: ``torchrun ... embed.json + multi_gpu_embed.json`` writes a store byte-identical to one process's.
- train: ``torchrun ... train.json + multi_gpu_train.json`` for one epoch, validating on 7 scans (so the validation
  ``DistributedSampler`` gives the ranks 4 and 3 scans). Both ranks must report the metrics of all 7 scans, and those
  must equal what one process computes for the same weights (``models/model.pt`` written by the 2-process run) through
  train.json + evaluate.json. Comparing training runs instead would compare different models: under DDP each rank
  averages the NG penalty over its own bags and sees a differently shuffled shard, by design.

Skipped (with the reason) only if torch.distributed cannot start 2 gloo processes here at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from bundles.bundle_workspace import FAST, Workspace, make_workspace

NAME = "head_ct_hemorrhage_localization"
TIMEOUT_S = 300
#: the validation scans of both runs: the split's 4 val scans and 3 test scans (7: the ranks get 4 and 3)
VAL_INDICES = "$@split['val'].tolist() + @split['test'].tolist()[:3]"
METRICS = ("scan_auroc", "scan_auprc", "loc_auroc", "loc_auprc")
COUNTS = ("loc_auroc_scored", "loc_auroc_skipped", "loc_auprc_scored", "loc_auprc_skipped")


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, gloo
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def _bundle_args(ws: Workspace, configs: list[str], **override: object) -> list[str]:
    files = [c if os.path.isabs(c) else ws.config(c) for c in configs]
    args = ["-m", "monai.bundle", "run", "--config_file", json.dumps(files).replace('"', "'")]
    args += ["--meta_file", ws.config("metadata.json"), "--logging_file", ws.config("logging.conf")]
    for key, value in {"bundle_root": str(ws.bundle), **FAST, **override}.items():
        args += [f"--{key}", str(value)]
    return args


def _tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    root = tmp_path_factory.mktemp("dist")
    probe = "import torch.distributed as d; d.init_process_group('gloo'); d.barrier(); d.destroy_process_group()"
    try:
        proc = _torchrun(["--no-python", sys.executable, "-c", probe], root)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun could not start 2 gloo processes here (timed out)")
    if proc.returncode != 0:
        pytest.skip(f"torchrun could not start 2 gloo processes here: {_tail(proc)[-800:]}")
    return make_workspace(NAME, root)


def test_multi_gpu_embed_store_is_byte_identical_to_one_process(ws: Workspace, tmp_path):
    store = tmp_path / "store"
    # the same overrides as Workspace.embed made the one-process store with
    override = {"manifest_file": ws.manifest, "dataset_dir": store, "num_workers": 0, "progress": False}
    override |= {"amp": "none", "scans_per_shard": 8}  # 24 scans -> 3 chunks: rank 0 encodes 2, rank 1 one
    proc = _torchrun(_bundle_args(ws, ["embed.json", "multi_gpu_embed.json"], **override), tmp_path)
    assert proc.returncode == 0, _tail(proc)
    assert (proc.stdout + proc.stderr).count("extracting with a RANDOM-INIT encoder") == 2  # both ranks encoded
    one = sorted(p.name for p in ws.store.iterdir())
    assert sorted(p.name for p in store.iterdir()) == one
    for name in one:
        assert (store / name).read_bytes() == (ws.store / name).read_bytes(), f"{name} differs from one process's"


def test_multi_gpu_train_gives_one_process_validation_metrics(ws: Workspace, tmp_path):
    # after training, each rank saves its validation evaluator's metrics (the last epoch's) for the comparison
    probe = tmp_path / "dump_val_metrics.json"
    probe.write_text(
        json.dumps(
            {
                "metrics_file": "$@output_dir + '/val_metrics_rank' + os.environ['RANK'] + '.pt'",
                "run": [
                    "$monai_ng.bundle.write_embedding_spec(@store, @ckpt_dir + '/embedding.json')",
                    "$@train#trainer.run()",
                    "$torch.save(dict(@validate#evaluator.state.metrics), @metrics_file)",
                ],
            }
        )
    )
    out = tmp_path / "dist_eval"
    override = {"dataset_dir": ws.store, "output_dir": out, "max_epochs": 1, "batch_size": 4}
    override["validate#dataset#indices"] = VAL_INDICES
    proc = _torchrun(_bundle_args(ws, ["train.json", "multi_gpu_train.json", str(probe)], **override), tmp_path)
    assert proc.returncode == 0, _tail(proc)
    ranks = [torch.load(out / f"val_metrics_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank holds the metrics of the whole validation set
    assert (ws.bundle / "models" / "model.pt").is_file()  # written by rank 0 only, a plain state_dict

    # one process, the same weights and validation scans: train.json + evaluate.json
    wf = ws.workflow(
        ["train.json", "evaluate.json"],
        "train",
        dataset_dir=str(ws.store),
        output_dir=str(tmp_path / "one_eval"),
        batch_size=4,
        **{"validate#dataset#indices": VAL_INDICES},
    )
    wf.initialize()
    assert len(wf.parser.get_parsed_content("validate#dataset")) == 7
    wf.run()
    one = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    wf.finalize()
    assert one["loc_auroc_scored"] >= 2  # enough positive scans for the gather to matter
    for name in METRICS:
        assert np.isfinite(one[name])
        assert ranks[0][name] == pytest.approx(one[name], abs=1e-9), name
    for name in COUNTS:
        assert ranks[0][name] == one[name], name
