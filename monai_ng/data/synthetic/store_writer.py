"""Write a synthetic data set as an embedding store, chunk by chunk."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from monai_ng.data.embedding_store import EmbeddingStore, EmbeddingStoreWriter
from monai_ng.data.synthetic.generator import _metadata, _plan

__all__ = ["write_synthetic_store"]


def write_synthetic_store(
    kind: str,
    path: str | os.PathLike,
    n_bags: int,
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    **params: Any,
) -> EmbeddingStore:
    """Write a synthetic data set as an embedding store, chunk by chunk (memory stays bounded).

    The store holds exactly the data :func:`generate_synthetic` returns for the same arguments (cast to ``dtype``);
    its ``store.json`` records ``{"synthetic": {"kind", "seed", "n_bags", params...}}``.

    Args:
        kind: ``"shifted_mean"``, ``"ct_like"`` or ``"multi_lesion"``.
        path: destination folder (must not exist unless ``overwrite``).
        n_bags: number of scans.
        seed: sample seed.
        dtype: ``"float32"`` or ``"float16"``.
        overwrite: replace an existing store.
        **params: generator parameters (see :func:`make_params`).

    Returns:
        The opened :class:`EmbeddingStore`.
    """
    if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    plan = _plan(kind, n_bags, seed, params)
    st = plan.structure
    scan_ids, patient_ids = plan.ids()
    meta = _metadata(kind, int(seed), int(n_bags), plan.params)
    with EmbeddingStoreWriter(path, dim=int(plan.params.dim), dtype=dtype, metadata=meta, overwrite=overwrite) as w:
        for b0, b1, x in plan.chunks():
            r0 = int(st.offsets[b0])
            for b in range(b0, b1):
                o, n = int(st.offsets[b]) - r0, int(st.n_slices[b])
                s0 = int(st.offsets[b])
                w.add_scan(
                    str(scan_ids[b]), str(patient_ids[b]), int(st.labels[b]), x[o : o + n], st.slice_labels[s0 : s0 + n]
                )
        return w.close()
