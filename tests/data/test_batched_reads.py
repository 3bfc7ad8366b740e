"""Batched reads: ``EmbeddingStore.read_bags``, ``BagDataset.__getitems__`` and the packed collate taking their block.

A batch read must give exactly what reading the scans one by one gives (rows, slice labels, labels, ids, in the
order asked, repeats and negative indices included), catch the same bad input, and the packed collate must take the
block without copying only when that is safe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from monai_ng.data import BagDataset, BagKeys, EmbeddingStore, EmbeddingStoreWriter, StoreError, collate_packed_bags

LENGTHS = (3, 1, 6, 2, 5)


def _store(tmp_path, slice_labels: bool = True, dtype: str = "float16") -> EmbeddingStore:
    rng = np.random.default_rng(0)
    with EmbeddingStoreWriter(tmp_path / "s", dim=4, dtype=dtype) as w:
        for k, n in enumerate(LENGTHS):
            sl = rng.integers(-1, 2, size=n).astype(np.int8) if slice_labels else None
            w.add_scan(f"scan{k}", f"p{k}", k % 2, rng.standard_normal((n, 4)), sl)
    return EmbeddingStore(tmp_path / "s")


@pytest.mark.parametrize("slice_labels", [True, False])
def test_read_bags_equals_reading_one_by_one(tmp_path, slice_labels):
    store = _store(tmp_path, slice_labels)
    order = [4, 0, 2, 2, -1, 1]  # any order, a repeat, a negative index
    block = store.read_bags(order)
    resolved = [i % len(store) for i in order]
    assert block.indices.tolist() == resolved
    assert block.scan_ids == [f"scan{i}" for i in resolved]
    assert block.labels.tolist() == [i % 2 for i in resolved]
    assert block.lengths.tolist() == [LENGTHS[i] for i in resolved]
    bags = [store.bag(i) for i in order]
    np.testing.assert_array_equal(block.embeddings, np.concatenate([b.embeddings for b in bags]))
    assert block.embeddings.dtype == np.float16 and block.embeddings.flags.writeable
    assert not isinstance(block.embeddings, np.memmap)  # a copy, not a view of the map
    if slice_labels:
        np.testing.assert_array_equal(block.slice_labels, np.concatenate([b.slice_labels for b in bags]))
        assert block.slice_labels.dtype == np.int8
    else:
        assert block.slice_labels is None


def test_read_bags_bad_and_empty_indices(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(IndexError, match="scan index 5 out of range for 5 scans"):
        store.read_bags([0, 5])
    with pytest.raises(IndexError, match="scan index -6 out of range"):
        store.read_bags([-6])
    empty = store.read_bags([])
    assert empty.embeddings.shape == (0, 4) and empty.scan_ids == [] and empty.slice_labels.shape == (0,)


@pytest.mark.parametrize("slice_labels", [True, False])
def test_getitems_equals_getitem(tmp_path, slice_labels):
    store = _store(tmp_path, slice_labels)
    dataset = BagDataset(store, indices=[3, 1, 4, 0])
    wanted = [2, 0, 3, 3]
    batch = dataset.__getitems__(wanted)
    for got, ref in zip(batch, [dataset[i] for i in wanted], strict=True):
        assert set(got) == set(ref)
        for key in (BagKeys.EMBEDDINGS, BagKeys.SLICE_LABELS):
            assert got[key].dtype == ref[key].dtype and torch.equal(got[key], ref[key]), key
        for key in (BagKeys.LABEL, BagKeys.SCAN_ID, BagKeys.INDEX):
            assert got[key] == ref[key] and type(got[key]) is type(ref[key]), key
    with pytest.raises(IndexError):
        dataset.__getitems__([0, 4])  # the dataset has 4 items


def test_getitems_names_the_bag_with_nan(tmp_path):
    rows = np.random.default_rng(1).standard_normal((9, 4)).astype(np.float32)
    rows[5, 2] = np.nan  # in the second scan
    folder = tmp_path / "flat"
    folder.mkdir()
    np.save(folder / "embeddings.npy", rows)
    pd.DataFrame(
        [("a", "p", 0, 0, 4), ("b", "p", 1, 4, 3), ("c", "p", 0, 7, 2)],
        columns=["scan_id", "patient_id", "label", "offset", "n_slices"],
    ).to_csv(folder / "manifest.csv", index=False)
    dataset = BagDataset(folder)
    assert len(dataset.__getitems__([0, 2])) == 2  # bags without NaN read fine
    with pytest.raises(StoreError, match="scan 'b' has NaN/inf embeddings"):
        dataset.__getitems__([2, 0, 1])
    assert len(BagDataset(folder, check_finite=False).__getitems__([1])) == 1


class _OneByOne(Dataset):
    """The same items without ``__getitems__``: the DataLoader then reads them one by one."""

    def __init__(self, dataset: BagDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]


def test_loader_batches_are_those_of_single_reads(tmp_path):
    dataset = BagDataset(_store(tmp_path))
    fast = list(DataLoader(dataset, batch_size=3, collate_fn=collate_packed_bags))
    slow = list(DataLoader(_OneByOne(dataset), batch_size=3, collate_fn=collate_packed_bags))
    assert len(fast) == len(slow) == 2
    for a, b in zip(fast, slow, strict=True):
        assert set(a) == set(b)
        for key, value in a.items():
            assert value == b[key] if isinstance(value, list) else torch.equal(value, b[key]), key


def test_packed_collate_takes_the_block_only_when_safe(tmp_path):
    dataset = BagDataset(_store(tmp_path))
    items = dataset.__getitems__([4, 1, 2])
    batch = collate_packed_bags(items)
    emb = batch[BagKeys.EMBEDDINGS]
    assert emb.data_ptr() == items[0][BagKeys.EMBEDDINGS].data_ptr()  # the block itself: no copy
    assert torch.equal(emb, torch.cat([it[BagKeys.EMBEDDINGS] for it in items]))
    # another dtype asked for: converted, so copied
    as_float = collate_packed_bags(items, dtype=torch.float32)[BagKeys.EMBEDDINGS]
    assert as_float.dtype == torch.float32 and torch.equal(as_float, emb.float())
    # reordered items of the same block: copied, in the items' order
    swapped = [items[1], items[0], items[2]]
    got = collate_packed_bags(swapped)[BagKeys.EMBEDDINGS]
    assert got.data_ptr() != emb.data_ptr()
    assert torch.equal(got, torch.cat([it[BagKeys.EMBEDDINGS] for it in swapped]))
    # a subset of the block (the storage holds more than the batch): copied, so the batch never shares the rest
    sub = collate_packed_bags(items[:2])[BagKeys.EMBEDDINGS]
    assert sub.data_ptr() != emb.data_ptr()
    assert torch.equal(sub, torch.cat([it[BagKeys.EMBEDDINGS] for it in items[:2]]))
    # views into one larger in-memory tensor, in order (an in-memory dataset): copied as well
    big = torch.randn(14, 4)
    views = [{**it, BagKeys.EMBEDDINGS: big[a:b]} for it, (a, b) in zip(items, [(0, 5), (5, 6), (6, 12)], strict=True)]
    copied = collate_packed_bags(views)[BagKeys.EMBEDDINGS]
    assert copied.data_ptr() != big.data_ptr() and torch.equal(copied, big[:12])
