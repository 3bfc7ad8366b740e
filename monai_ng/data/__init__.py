"""Data: embedding store, bag dataset and collate, synthetic benchmarks, phantom CT, splits."""

from __future__ import annotations

from monai_ng.data.bag_dataset import BagDataset, BagKeys, collate_bags, collate_packed_bags
from monai_ng.data.embedding_store import (
    Bag,
    EmbeddingStore,
    EmbeddingStoreWriter,
    StoreError,
    import_flat_layout,
)

__all__ = [
    "Bag",
    "BagDataset",
    "BagKeys",
    "EmbeddingStore",
    "EmbeddingStoreWriter",
    "StoreError",
    "collate_bags",
    "collate_packed_bags",
    "import_flat_layout",
]
