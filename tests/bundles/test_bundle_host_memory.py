"""Every bundle's training, multi-GPU training and evaluation configs take ``retain_freed_host_memory`` (default
false): their ``initialize`` calls :func:`monai_ng.engines.host_memory.retain_freed_host_memory` only when it is set
(spied, so the test process's allocator is left alone)."""

from __future__ import annotations

import pytest
from bundles.bundle_workspace import BUNDLE_DIRS as BUNDLES
from bundles.bundle_workspace import TRAINING_CONFIGS as CONFIGS
from monai.bundle import ConfigParser

import monai_ng.engines.host_memory as host_memory


@pytest.mark.parametrize("configs", CONFIGS, ids=["+".join(c) for c in CONFIGS])
@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
@pytest.mark.parametrize("enabled", [None, False, True])
def test_initialize_calls_the_allocator_setting_only_when_asked(monkeypatch, bundle, configs, enabled):
    calls: list[bool] = []
    monkeypatch.setattr(host_memory, "retain_freed_host_memory", lambda: calls.append(True) or True)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in configs])
    if enabled is not None:
        parser["retain_freed_host_memory"] = enabled
    steps = parser["initialize"]
    hits = [i for i, step in enumerate(steps) if "retain_freed_host_memory()" in str(step)]
    assert len(hits) == 1, steps
    parser.get_parsed_content(f"initialize#{hits[0]}")
    assert calls == ([True] if enabled else [])
