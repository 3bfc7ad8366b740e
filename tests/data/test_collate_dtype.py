"""A float16 batch kept as float16 by :func:`collate_bags` (its default) gives every network bit-identical outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ng.data.bag_dataset import BagKeys, collate_bags
from monai_ng.networks import MIL_NETWORKS, build_mil_network

D = 24


def _items() -> list[dict]:
    rng = np.random.default_rng(3)
    return [
        {
            BagKeys.EMBEDDINGS: torch.from_numpy(rng.standard_normal((n, D)).astype(np.float16)),
            BagKeys.LABEL: n % 2,
            BagKeys.SLICE_LABELS: torch.zeros(n, dtype=torch.int8),
            BagKeys.SCAN_ID: f"s{n}",
            BagKeys.INDEX: n,
        }
        for n in (4, 11, 7, 1)
    ]


def test_default_keeps_a_shared_dtype_and_falls_back_to_float32() -> None:
    items = _items()
    assert collate_bags(items)[BagKeys.EMBEDDINGS].dtype == torch.float16
    mixed = [{**items[0], BagKeys.EMBEDDINGS: items[0][BagKeys.EMBEDDINGS].double()}, *items[1:]]
    assert collate_bags(mixed)[BagKeys.EMBEDDINGS].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(MIL_NETWORKS))
def test_float16_batch_gives_bit_identical_outputs(name: str) -> None:
    kwargs = {"transmil": {"num_heads": 4}, "torchmil": {"model": "ABMIL"}}.get(name, {})
    if name == "torchmil":
        pytest.importorskip("torchmil")
    torch.manual_seed(0)
    net = build_mil_network(name, D, **kwargs).eval()
    half, full = collate_bags(_items()), collate_bags(_items(), dtype=torch.float32)
    assert half[BagKeys.EMBEDDINGS].dtype == torch.float16 and full[BagKeys.EMBEDDINGS].dtype == torch.float32
    with torch.inference_mode():
        a = net(half[BagKeys.EMBEDDINGS], half[BagKeys.MASK])
        b = net(full[BagKeys.EMBEDDINGS], full[BagKeys.MASK])
    assert a.logits.dtype == torch.float32
    assert torch.equal(a.logits, b.logits) and torch.equal(a.attention, b.attention)


def test_padding_is_exactly_zero_even_in_reused_memory() -> None:
    # the padded buffer is allocated uninitialised; freed batches full of non-zero values make its memory dirty
    rng = np.random.default_rng(5)
    for trial in range(20):
        lengths = rng.integers(1, 9, size=6).tolist()
        items = [
            {
                BagKeys.EMBEDDINGS: torch.full((n, D), 7.5, dtype=torch.float32),
                BagKeys.LABEL: 1,
                BagKeys.SLICE_LABELS: torch.ones(n, dtype=torch.int8),
                BagKeys.SCAN_ID: f"s{k}",
                BagKeys.INDEX: k,
            }
            for k, n in enumerate(lengths)
        ]
        dirty = collate_bags(items)[BagKeys.EMBEDDINGS]  # noqa: F841  (freed at the next iteration)
        batch = collate_bags(items)
        emb, mask = batch[BagKeys.EMBEDDINGS], batch[BagKeys.MASK]
        assert (emb[~mask] == 0).all() and (emb[mask] == 7.5).all(), trial
