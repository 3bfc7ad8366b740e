"""`monai-ng bundle package` writes the model zoo's release zip; unzipped in an empty folder, the bundle runs
inference from there with `python -m monai.bundle run`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

from bundles.bundle_workspace import FAST_INFERENCE_ARGS, Workspace

from monai_ng.cli import main as cli_main


def test_package_unzip_and_infer(workspace: Workspace, tmp_path):
    ws = workspace
    models = ws.bundle / "models"
    if not (models / "model.pt").is_file():
        wf = ws.workflow("train.json", "train", dataset_dir=str(ws.store), max_epochs=1, batch_size=8)
        wf.initialize()
        wf.run()
    # model.pt is published elsewhere and listed in large_files.yml, as in a model zoo release
    published = tmp_path / "published" / "model.pt"
    published.parent.mkdir()
    shutil.move(models / "model.pt", published)
    large = ws.bundle / "large_files.yml"
    original = large.read_text()
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    entry = {"path": "models/model.pt", "url": published.as_uri(), "hash_type": "sha256", "hash_val": digest}
    large.write_text(json.dumps({"large_files": [entry]}))
    try:
        assert cli_main(["bundle", "package", str(ws.bundle), "--out", str(tmp_path / "dist")]) == 0
    finally:
        large.write_text(original)
        shutil.copy(published, models / "model.pt")
    version = json.loads((ws.bundle / "configs" / "metadata.json").read_text())["version"]
    zip_path = tmp_path / "dist" / f"{ws.name}_v{version}.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert all(n.startswith(f"{ws.name}/") for n in names)
        assert f"{ws.name}/models/model.pt" in names and f"{ws.name}/large_files.yml" not in names
        assert f"{ws.name}/configs/inference.json" in names and f"{ws.name}/LICENSE" in names
        empty = tmp_path / "fresh"
        empty.mkdir()
        archive.extractall(empty)
    root = empty / ws.name
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/inference.json",
        "--bundle_root",
        ".",
        "--dataset_dir",
        str(ws.images),
        "--output_dir",
        str(out),
        *FAST_INFERENCE_ARGS,
    ]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "predictions.csv").is_file()
