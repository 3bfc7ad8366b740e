"""Model-zoo export checks on every bundle: ``verify_net_in_out`` and a traced ``ckpt_export`` equal to eager."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from bundles.bundle_workspace import BUNDLES_DIR

from monai_ng.networks import build_mil_network

BUNDLE_NAMES = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "inference.json").is_file())


def _bundle_command(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args, "--dataset_dir", str(tmp_path)],
        cwd=tmp_path,  # an unrelated working directory: nothing may depend on it
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_verify_net_in_out_and_traced_export(bundle, tmp_path):
    root = BUNDLES_DIR / bundle
    configs = [
        "--meta_file",
        str(root / "configs/metadata.json"),
        "--config_file",
        str(root / "configs/inference.json"),
    ]
    res = _bundle_command(tmp_path, "verify_net_in_out", "network_def", *configs, "--bundle_root", str(root))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "verified with no error" in res.stderr + res.stdout

    torch.manual_seed(0)
    eager = build_mil_network("abmil", 768).eval()
    torch.save(eager.state_dict(), tmp_path / "model.pt")  # a bundle's models/model.pt: a plain state_dict
    res = _bundle_command(
        tmp_path, "ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"),
        "--ckpt_file", str(tmp_path / "model.pt"), *configs, "--bundle_root", str(root),
        "--use_trace", "True", "--input_shape", "[1, 32, 768]",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(tmp_path / "model.ts"))
    eager.with_tensor_output()
    for n in (32, 57, 3):  # any scan length, not only the one traced
        x = torch.randn(2, n, 768)
        with torch.no_grad():
            assert torch.allclose(traced(x), eager(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["abmil", "abmil_gated", "transmil", "smap", "centre_gaussian", "instance_ceiling"])
def test_every_network_traces_to_the_same_outputs(name):
    torch.manual_seed(1)
    net = build_mil_network(name, 24).eval().with_tensor_output()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.randn(1, 16, 24), check_trace=False)
    for n in (16, 41, 5):
        x = torch.randn(3, n, 24)
        with torch.no_grad():
            assert torch.allclose(traced(x), net(x), atol=1e-5, rtol=0)
