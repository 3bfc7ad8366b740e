"""Recycled batch buffers (:mod:`monai_ng.data.host_buffers`): reuse only memory nothing can reach any more.

The property that matters is safety: an array (or tensor, or view) still alive is never handed out again, whatever
holds it. Reuse itself is checked by data pointers, and the collate and store read are checked to give the same
values with the pool on and off while earlier batches are kept.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from monai_ng.data import collate_bags, collate_packed_bags
from monai_ng.data.host_buffers import (
    HostBufferPool,
    batch_buffer_pool,
    batch_buffer_reuse_enabled,
    batch_empty,
    set_batch_buffer_reuse,
)


def _ptr(a: np.ndarray | torch.Tensor) -> int:
    return a.data_ptr() if isinstance(a, torch.Tensor) else a.__array_interface__["data"][0]


@pytest.fixture
def small_batch_pool():
    """The process-wide batch pool, pooling every request (even tiny test batches) and empty, restored after."""
    pool = batch_buffer_pool()
    assert pool is not None, "batch buffer reuse is on by default"
    saved = pool.min_bytes
    pool.min_bytes = 1
    pool.clear()
    yield pool
    pool.min_bytes = saved
    pool.clear()


def test_empty_gives_the_requested_array():
    pool = HostBufferPool(min_bytes=1)
    a = pool.empty((3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    a[:] = np.arange(15, dtype=np.float32).reshape(3, 5)
    assert a.sum() == 105
    b = pool.empty(7, "int8")
    assert b.shape == (7,) and b.dtype == np.int8
    assert pool.empty((0, 4), np.float16).shape == (0, 4)  # empty requests are plain arrays
    assert pool.allocated == 2 and pool.reused == 0


def test_a_dropped_array_gives_its_buffer_to_the_next_request():
    pool = HostBufferPool(min_bytes=1, headroom=0.25)
    a = pool.empty((100, 8), np.float32)  # 3200 bytes, buffer of 4000
    first = _ptr(a)
    del a
    assert pool.free_buffers == 1 and pool.free_bytes == 4000
    b = pool.empty((110, 8), np.float32)  # 3520 bytes: fits in the headroom
    assert _ptr(b) == first
    assert pool.reused == 1 and pool.allocated == 1 and pool.free_buffers == 0
    c = pool.empty((100, 8), np.float64)  # 6400 bytes: too large for the free list (empty anyway) -> new buffer
    assert _ptr(c) != first and pool.allocated == 2


@pytest.mark.parametrize("holder", ["tensor", "tensor_view", "array_view", "list"])
def test_memory_still_reachable_is_never_handed_out(holder):
    pool = HostBufferPool(min_bytes=1)
    a = pool.empty((64, 16), np.float32)
    a[:] = 7.0
    if holder == "tensor":
        kept = torch.from_numpy(a)
    elif holder == "tensor_view":
        kept = torch.from_numpy(a)[10:20, 3]
    elif holder == "array_view":
        kept = a[5:9].T
    else:
        kept = [a]
    got = kept[0] if holder == "list" else kept
    expected = (got.numpy() if isinstance(got, torch.Tensor) else got).copy()
    del a
    gc.collect()
    assert pool.free_buffers == 0
    b = pool.empty((64, 16), np.float32)
    b[:] = -1.0  # must not reach the kept memory
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert not np.shares_memory(b, np.asarray(got))
    del kept, got
    assert pool.free_buffers == 1  # the first buffer is back once its last holder is gone


def test_best_fit_and_the_cap_on_free_buffers():
    pool = HostBufferPool(max_free=2, min_bytes=1, headroom=0.0)
    arrays = [pool.empty(n, np.uint8) for n in (100, 400, 200, 300)]
    ptrs = {a.nbytes: _ptr(a) for a in arrays}
    del arrays
    assert pool.free_buffers == 2 and pool.free_bytes == 700  # the two largest are kept
    got = pool.empty(250, np.uint8)  # smallest free buffer of at least 250 bytes: the 300 one
    assert _ptr(got) == ptrs[300]
    got2 = pool.empty(350, np.uint8)
    assert _ptr(got2) == ptrs[400]
    assert pool.empty(50, np.uint8).nbytes == 50 and pool.allocated == 5


def test_clear_drops_free_buffers_and_those_still_in_use():
    pool = HostBufferPool(min_bytes=1)
    kept, dropped = pool.empty(64, np.uint8), pool.empty(32, np.uint8)
    del dropped
    assert pool.free_buffers == 1
    pool.clear()
    assert pool.free_buffers == 0 and pool.free_bytes == 0
    del kept  # handed out before clear(): freed, not kept
    assert pool.free_buffers == 0
    again = pool.empty(16, np.uint8)
    del again  # handed out after clear(): kept again
    assert pool.free_buffers == 1


def test_small_requests_and_a_disabled_pool_are_plain_arrays():
    pool = HostBufferPool(min_bytes=1024)
    a = pool.empty(1023, np.uint8)
    assert a.base is None  # a plain np.empty, owning its memory
    del a
    assert pool.free_buffers == 0 and pool.allocated == 0
    off = HostBufferPool(max_free=0, min_bytes=1)
    b = off.empty(4096, np.uint8)
    assert b.base is None
    del b
    assert off.free_buffers == 0


def test_threads_never_share_a_live_buffer():
    pool = HostBufferPool(max_free=3, min_bytes=1)
    errors: list[str] = []

    def work(tid: int) -> None:
        for k in range(200):
            a = pool.empty((256,), np.int64)
            a[:] = tid * 1000 + k
            # any other thread writing into this buffer while we hold it would show here
            if not (a == tid * 1000 + k).all():
                errors.append(f"thread {tid}, round {k}: buffer overwritten while in use")
            del a

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pool.reused > 0 and pool.free_buffers <= 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_free": -1}, "max_free"),
        ({"max_free": True}, "max_free"),
        ({"min_bytes": -5}, "min_bytes"),
        ({"headroom": -0.1}, "headroom"),
        ({"headroom": "0.5"}, "headroom"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HostBufferPool(**kwargs)


def test_negative_shape_is_rejected():
    with pytest.raises(ValueError, match="negative dimension"):
        HostBufferPool().empty((3, -1), np.float32)


def test_switching_batch_reuse_off_and_on(small_batch_pool):
    a = batch_empty((8, 8), np.float32)
    assert a.base is not None
    del a
    assert small_batch_pool.free_buffers == 1
    assert set_batch_buffer_reuse(False) is True
    try:
        assert not batch_buffer_reuse_enabled() and batch_buffer_pool() is None
        assert small_batch_pool.free_buffers == 0  # released when switched off
        assert batch_empty((8, 8), np.float32).base is None
    finally:
        assert set_batch_buffer_reuse(True) is False
    assert batch_buffer_reuse_enabled()


def _items(rng, lengths, dim=6, dtype=torch.float32):
    return [
        {
            "embeddings": torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32)).to(dtype),
            "label": k % 2,
            "slice_labels": torch.full((n,), -1, dtype=torch.int8),
            "scan_id": f"s{k}",
            "index": k,
        }
        for k, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("collate", [collate_packed_bags, collate_bags])
def test_collated_batches_kept_by_the_caller_stay_intact(small_batch_pool, collate):
    rng = np.random.default_rng(0)
    batches = [_items(rng, lengths) for lengths in ((3, 5, 2), (4, 4, 1), (2, 6, 3), (5, 1, 1))]
    expected = []
    set_batch_buffer_reuse(False)
    try:
        expected = [collate(b)["embeddings"].clone() for b in batches]
    finally:
        set_batch_buffer_reuse(True)
    kept = []
    for round_ in range(3):  # later rounds reuse the buffers of dropped batches
        out = [collate(b)["embeddings"] for b in batches]
        if round_ == 0:
            kept = out[:2]  # the caller keeps two batches for good
        for got, want in zip(out, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(kept, expected[:2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert small_batch_pool.reused > 0
    live = kept + out
    for i in range(len(live)):
        for j in range(i + 1, len(live)):
            assert not np.shares_memory(live[i].numpy(), live[j].numpy()) or live[i] is live[j]


def test_loader_workers_send_recycled_batches_intact(small_batch_pool):
    """Batches collated in ``DataLoader`` workers (forked, so pooling every request there too, and reusing buffers
    from one batch to the next) arrive with their values, even when all of them are kept."""
    from torch.utils.data import DataLoader

    items = _items(np.random.default_rng(2), (3, 1, 6, 2, 5, 4, 2, 7, 1, 3, 5, 2))
    want = [b["embeddings"].clone() for b in DataLoader(items, batch_size=3, collate_fn=collate_packed_bags)]
    loader = DataLoader(items, batch_size=3, collate_fn=collate_packed_bags, num_workers=2)
    for _ in range(2):
        got = [b["embeddings"] for b in loader]
        assert len(got) == len(want) == 4
        for g, e in zip(got, want, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert small_batch_pool.reused > 0  # the main process reused buffers for the reference batches
