"""Recycled host buffers for collated batches: a batch's large array reuses memory a dropped batch no longer needs.

Why (issue 12, measured in ``benchmarks/bench_collate.py``; numbers in ``docs/performance.md``): a batch of 64 bags is
one large array (``[T, D]``: 7.6 MB float32 for 64 bags of 20-60 slices, 40 MB for 100-300), written once by the
collate and dropped a step later. glibc hands such a block out as fresh pages, either from ``mmap`` or from a heap
top it may have trimmed back to the kernel when earlier batches were freed; how often depends on what else the
process allocates (fresh short-bag collates took 1.0-2.3 ms across runs, recycled ones 0.94-1.51 ms). Every
fresh 4 KiB page then costs a page fault with the kernel zeroing it before the first byte is written: on the 2-core
development VM, filling a fresh 7.6 MB array took 1.8-2.1 ms (NumPy's huge-page ``madvise``) to 5 ms (4 KiB pages),
and the same copy into memory already mapped 0.35-0.4 ms. Neither PyTorch (no caching allocator for pageable CPU
memory) nor NumPy keeps such blocks; :class:`HostBufferPool` does, for the few arrays a data path allocates per batch.

Safety rule: a buffer goes back to the pool only when nothing refers to the array handed out: every view of it, a
tensor from ``torch.from_numpy`` and its views, all hold a reference to one lease object, and the buffer is returned
from that object's finaliser. So a batch a caller keeps (in a list, in an engine's state) is never overwritten; only
memory that no Python object can reach any more is reused. A tensor moved to shared memory for a ``DataLoader`` worker
is copied out first, which drops its reference in the same way.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "HostBufferPool",
    "batch_buffer_pool",
    "batch_buffer_reuse_enabled",
    "batch_empty",
    "set_batch_buffer_reuse",
]


class _Lease:
    """Owner of one handed-out buffer: arrays made from it keep it alive; its finaliser gives the buffer back."""

    __slots__ = ("__array_interface__", "_buffer", "_pool", "_generation")

    def __init__(self, buffer: np.ndarray, pool: HostBufferPool) -> None:
        self._buffer = buffer
        self._pool = weakref.ref(pool)
        self._generation = pool._generation
        self.__array_interface__ = buffer.__array_interface__

    def __del__(self) -> None:
        pool = self._pool()
        if pool is not None:
            pool._give_back(self._buffer, self._generation)


class HostBufferPool:
    """A few large, reusable host buffers handed out as NumPy arrays (see the module docstring for why and when).

    :meth:`empty` returns an uninitialised array like ``np.empty(shape, dtype)``. Requests of at least ``min_bytes``
    are served from a free buffer of this pool when one is large enough (the smallest such one), else from a new
    buffer with ``headroom`` to spare so that the next, slightly larger batch fits too. When the array and every
    view or tensor made from it are gone, its buffer becomes free again; at most ``max_free`` free buffers are kept
    (the largest ones), so the pool holds at most ``max_free`` buffers beyond those in use.

    Args:
        max_free: free buffers kept for reuse (0 disables reuse: every request is a plain ``np.empty``).
        min_bytes: smaller requests are plain ``np.empty`` (glibc serves them from its heap without faulting).
        headroom: a new buffer has ``ceil(nbytes * (1 + headroom))`` bytes.

    Thread safety: :meth:`empty` may be called from several threads; a buffer is handed to one array at a time.
    """

    def __init__(self, max_free: int = 4, min_bytes: int = 1 << 20, headroom: float = 0.25) -> None:
        if isinstance(max_free, bool) or not isinstance(max_free, int) or max_free < 0:
            raise ValueError(f"HostBufferPool: max_free must be an int >= 0, got {max_free!r}")
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
            raise ValueError(f"HostBufferPool: min_bytes must be an int >= 0, got {min_bytes!r}")
        if not isinstance(headroom, (int, float)) or isinstance(headroom, bool) or not 0 <= headroom <= 4:
            raise ValueError(f"HostBufferPool: headroom must be a number in [0, 4], got {headroom!r}")
        self.max_free = max_free
        self.min_bytes = min_bytes
        self.headroom = float(headroom)
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by clear(): buffers handed out before it are not taken back
        self.reused = 0  #: requests served from a free buffer
        self.allocated = 0  #: pooled buffers allocated (requests of at least ``min_bytes`` that found none free)

    def empty(self, shape: Sequence[int] | int, dtype: Any) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, on a recycled buffer when large enough.

        Raises:
            ValueError: a negative dimension.
        """
        dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if any(s < 0 for s in dims):
            raise ValueError(f"HostBufferPool.empty: negative dimension in shape {dims}")
        dt = np.dtype(dtype)
        nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        if self.max_free == 0 or nbytes < max(self.min_bytes, 1):
            return np.empty(dims, dtype=dt)
        buffer = self._take(nbytes)
        if buffer is None:
            buffer = np.empty(int(np.ceil(nbytes * (1.0 + self.headroom))), dtype=np.uint8)
        # the array's base chain ends at the lease, not at the buffer: the buffer returns when the lease dies
        return np.asarray(_Lease(buffer, self))[:nbytes].view(dt).reshape(dims)

    def _take(self, nbytes: int) -> np.ndarray | None:
        """Remove and return the smallest free buffer of at least ``nbytes``, or None."""
        with self._lock:
            best = -1
            for i, buf in enumerate(self._free):
                if buf.nbytes >= nbytes and (best < 0 or buf.nbytes < self._free[best].nbytes):
                    best = i
            if best < 0:
                self.allocated += 1
                return None
            self.reused += 1
            return self._free.pop(best)

    def _give_back(self, buffer: np.ndarray, generation: int) -> None:
        """Called by a lease's finaliser: keep ``buffer`` if it is among the ``max_free`` largest free ones (and was
        handed out after the last :meth:`clear`)."""
        # A finaliser may run inside ``_take`` (the garbage collector can start anywhere): never wait on the lock
        # there; a buffer that cannot be kept now is simply freed.
        if generation != self._generation or self.max_free == 0 or not self._lock.acquire(blocking=False):
            return
        try:
            self._free.append(buffer)
            if len(self._free) > self.max_free:
                del self._free[min(range(len(self._free)), key=lambda i: self._free[i].nbytes)]  # by index, not ==
        finally:
            self._lock.release()

    @property
    def free_buffers(self) -> int:
        """Buffers held for reuse now."""
        return len(self._free)

    @property
    def free_bytes(self) -> int:
        """Bytes held for reuse now."""
        with self._lock:
            return sum(b.nbytes for b in self._free)

    def clear(self) -> None:
        """Drop every free buffer; the buffers of arrays still in use are freed, not kept, when those arrays die."""
        with self._lock:
            self._free.clear()
            self._generation += 1

    def __repr__(self) -> str:
        return (
            f"HostBufferPool(max_free={self.max_free}, min_bytes={self.min_bytes}, headroom={self.headroom}, "
            f"free_buffers={self.free_buffers}, reused={self.reused}, allocated={self.allocated})"
        )


_BATCH_POOL = HostBufferPool()
_state = {"enabled": True}


def batch_buffer_pool() -> HostBufferPool | None:
    """The pool the batch readers and collates of :mod:`monai_ng.data` allocate from, or None when switched off."""
    return _BATCH_POOL if _state["enabled"] else None


def set_batch_buffer_reuse(enabled: bool) -> bool:
    """Switch batch buffer reuse on (the default) or off for this process; returns the previous setting.

    Off, every batch array is a plain ``np.empty`` again and the free buffers are released.
    """
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    if not enabled:
        _BATCH_POOL.clear()
    return previous


def batch_buffer_reuse_enabled() -> bool:
    """Whether batch arrays come from :func:`batch_buffer_pool` (see :func:`set_batch_buffer_reuse`)."""
    return _state["enabled"]


def batch_empty(shape: Sequence[int] | int, dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` from the batch pool when reuse is on (what the data path calls per batch)."""
    pool = batch_buffer_pool()
    return np.empty(shape, dtype=dtype) if pool is None else pool.empty(shape, dtype)
