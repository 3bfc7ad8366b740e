"""Keep freed host memory for reuse (glibc ``mallopt``) so large CPU tensors stop page-faulting every step.

Why (issue 12, measured; numbers in ``docs/performance.md``): glibc serves every allocation above its mmap threshold
(128 KiB at first, rising to at most 32 MiB) with a fresh ``mmap`` and returns it to the kernel on ``free``. A
training step on 64 bags of 100-300 slices allocates tens of ``[T, 768]`` float32 temporaries of about 40 MB each
(activations, gradients, copies); each one then costs about 10,000 page faults, with the kernel zeroing every page,
before the first byte is written. On the 2-core development machine that made the "memory-bound" ops of a TransMIL
training step (``cat``, ``copy_``, ``fill_``, ``index_select``) take about a sixth of it: a torch.profiler step of
TransMIL+NG on 64 bags of 100-300 slices took 3.00 s by default and 2.49 s with freed memory kept, and
``benchmarks/bench_official.py`` trains 21 vs 26 bags/s there (1 thread; without and with ``--retain-freed-memory``).

:func:`retain_freed_host_memory` sets, for the whole process, ``M_MMAP_MAX = 0`` (large blocks come from the heap,
whose freed chunks are reused) and a 2 GiB ``M_TRIM_THRESHOLD`` (freed memory at the top of the heap is kept rather
than returned). The same as starting Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. Reuse
starts once the heap has grown to a step's peak (the first steps still fault, tested), and a kernel that reclaims
idle memory may still fault an occasional block back in. The price:
the process keeps its peak heap instead of giving memory back between steps, which is what a training or evaluation
process reaches again at the next step anyway. It is opt-in (``monai-ng experiment --retain-freed-memory``), since a
library should not change a host process's allocator behind its back; it cannot be undone within the process.
An alternative that keeps returning memory: start the process with ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's transparent
huge pages for large CPU tensors, read once at its first allocation): 2.60-2.67 s for the step above instead of 3.0 s.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_host_memory", "TRIM_THRESHOLD_BYTES"]

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

#: the largest value ``mallopt`` takes (a C ``int``): 2 GiB - 1
TRIM_THRESHOLD_BYTES = 2**31 - 1


def retain_freed_host_memory() -> bool:
    """Make this process's glibc allocator keep and reuse freed memory (see the module docstring).

    Returns:
        True when both settings were applied; False where there is no glibc ``mallopt`` (macOS, Windows, musl), in
        which case nothing changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
