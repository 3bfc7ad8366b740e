"""Shared set-up of the bundle tests: phantom CT in a challenge's layout -> ``monai-ng ingest`` -> embed.json.

Everything runs in a temporary copy of the bundle (so tests never write into ``bundles/``) with a tiny random-init
encoder (``vit_tiny_patch16_224`` on 32 x 32 slices), like the model zoo's CI runs its bundles on small random data.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from monai_ng.cli import main as cli_main
from monai_ng.data.phantom import write_rsna_abdominal, write_rsna_ich, write_rsna_pe

REPO = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO / "bundles"
BUNDLE_DIRS = sorted(p for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir())
# the config combinations that train or evaluate (each starts from train.json)
TRAINING_CONFIGS = [["train.json"], ["train.json", "evaluate.json"], ["train.json", "multi_gpu_train.json"]]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def _ich(root: Path, seed: int, kaggle_uids: bool = True) -> None:
    write_rsna_ich(root, n_scans=24, seed=seed, kaggle_uids=kaggle_uids)


def _pe(root: Path, seed: int, kaggle_uids: bool = True) -> None:
    write_rsna_pe(root, n_scans=24, seed=seed)


def _abdominal(root: Path, seed: int, kaggle_uids: bool = True) -> None:
    write_rsna_abdominal(root, n_patients=14, seed=seed)


#: bundle folder -> (phantom writer in the challenge's layout, ``monai-ng ingest --dataset`` name)
BUNDLES: dict[str, tuple[Callable[..., None], str]] = {
    "head_ct_hemorrhage_localization": (_ich, "ich"),
    "chest_ct_pe_localization": (_pe, "pe"),
    "abdomen_ct_trauma_localization": (_abdominal, "abdominal"),
}
AVAILABLE = [name for name in BUNDLES if (BUNDLES_DIR / name / "configs" / "metadata.json").is_file()]

#: overrides that make every config fast: tiny random-init ViT on 32 x 32 slices, no workers, no progress bars
FAST = {"encoder_name": "vit_tiny_patch16_224", "image_size": 32}

#: the same for ``python -m monai.bundle run`` of inference.json on the command line (no AMP, no PNG)
FAST_INFERENCE_ARGS = [t for k, v in {**FAST, "amp": "none", "write_png": False}.items() for t in (f"--{k}", str(v))]


@dataclass
class Workspace:
    """One bundle copied into a temporary folder, with phantom data, a manifest and an embedding store."""

    name: str
    root: Path
    bundle: Path
    images: Path
    manifest: Path
    store: Path

    def config(self, name: str) -> str:
        return str(self.bundle / "configs" / name)

    def workflow(self, configs: str | list[str], workflow_type: str | None, **override: Any) -> ConfigWorkflow:
        files = [self.config(c) for c in ([configs] if isinstance(configs, str) else configs)]
        return ConfigWorkflow(
            config_file=files if len(files) > 1 else files[0],
            meta_file=self.config("metadata.json"),
            logging_file=self.config("logging.conf"),
            workflow_type=workflow_type,
            **{"bundle_root": str(self.bundle), **FAST, **override},
        )

    def embed(self, manifest: Path | None = None, store: Path | None = None, **override: Any) -> ConfigWorkflow:
        wf = self.workflow(
            "embed.json",
            None,
            manifest_file=str(manifest or self.manifest),
            dataset_dir=str(store or self.store),
            num_workers=0,
            progress=False,
            amp="none",
            scans_per_shard=8,
            **override,
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        return wf


def make_workspace(name: str, root: Path, seed: int = 0) -> Workspace:
    """Copy the bundle, write the phantom download, ingest it and run embed.json."""
    writer, dataset = BUNDLES[name]
    bundle = root / name
    shutil.copytree(BUNDLES_DIR / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    images = root / "download"
    writer(images, seed)
    manifest = root / "scans.csv"
    rc = cli_main(["ingest", "--dataset", dataset, "--root", str(images), "--out", str(manifest), "--no-progress"])
    assert rc == 0, f"monai-ng ingest --dataset {dataset} failed"
    ws = Workspace(name, root, bundle, images, manifest, root / "store")
    ws.embed()
    return ws
