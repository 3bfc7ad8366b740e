"""Shared fixtures: small synthetic embedding stores made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_ng.data import EmbeddingStoreWriter


def write_easy_store(path: Path, n_bags: int = 96, dim: int = 8, seed: int = 0, shift: float = 2.0) -> Path:
    """Bags of 6-20 slices; positive bags have a central block of 3 slices shifted by ``shift`` in 2 features."""
    rng = np.random.default_rng(seed)
    with EmbeddingStoreWriter(path, dim=dim, dtype="float32") as w:
        for i in range(n_bags):
            s = int(rng.integers(6, 21))
            y = (i // 2) % 2  # two scans per patient, same label
            emb = rng.normal(size=(s, dim))
            sl = np.zeros(s, dtype=np.int8)
            if y:
                start = s // 2 - 1 + int(rng.integers(-1, 2))
                sl[start : start + 3] = 1
                emb[sl == 1, :2] += shift
            w.add_scan(f"scan{i:03d}", f"patient{i // 2:03d}", y, emb, sl)
    return path


@pytest.fixture
def easy_store(tmp_path) -> Path:
    return write_easy_store(tmp_path / "store")
