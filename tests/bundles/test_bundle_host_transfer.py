"""Every bundle's training (and evaluation) configs pin their batches and copy them without blocking on a GPU:
``pin_memory`` is true on a CUDA device with loader workers, ``non_blocking`` on a CUDA device, both false on the CPU,
and either can be overridden. Only these keys are parsed (with the device replaced), so no GPU and no store are needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundles.bundle_workspace import BUNDLE_DIRS as BUNDLES
from bundles.bundle_workspace import TRAINING_CONFIGS as CONFIGS
from monai.bundle import ConfigParser

LOADERS = ("train#dataloader", "train#eval_dataloader", "validate#dataloader")
ENGINES = ("train#trainer", "validate#evaluator")


def _parser(bundle: Path, configs: list[str], device: str, workers: int, as_text: bool = False) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in configs])
    # the config's own default is a torch.device; a command line override (--device cuda:1) is a plain string
    parser["device"] = device if as_text else f"$torch.device('{device}')"
    parser["num_workers"] = workers
    return parser


@pytest.mark.parametrize("as_text", [False, True], ids=["device", "text"])
@pytest.mark.parametrize("configs", CONFIGS, ids=["+".join(c) for c in CONFIGS])
@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
@pytest.mark.parametrize(
    ("device", "workers", "pinned", "non_blocking"),
    [("cuda:0", 4, True, True), ("cuda:0", 0, False, True), ("cpu", 4, False, False), ("cpu", 0, False, False)],
)
def test_loaders_pin_and_engines_copy_without_blocking_on_a_gpu(
    bundle, configs, device, workers, pinned, non_blocking, as_text
):
    parser = _parser(bundle, configs, device, workers, as_text)
    assert torch.device(parser.get_parsed_content("device")) == torch.device(device)
    for loader in LOADERS:
        assert parser[loader]["_target_"] == "DataLoader"
        assert parser.get_parsed_content(f"{loader}#pin_memory") is pinned, loader
    for engine in ENGINES:
        assert parser.get_parsed_content(f"{engine}#non_blocking") is non_blocking, engine


@pytest.mark.parametrize("off", [False, "false"], ids=["bool", "text"])  # text: what `--pin_memory false` gives
@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_either_setting_can_be_switched_off(bundle, off):
    parser = _parser(bundle, ["train.json"], "cuda:0", 4)
    parser["pin_memory"] = off
    parser["non_blocking"] = off
    assert not any(parser.get_parsed_content(f"{loader}#pin_memory") for loader in LOADERS)
    assert not any(parser.get_parsed_content(f"{engine}#non_blocking") for engine in ENGINES)
