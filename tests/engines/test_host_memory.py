"""``retain_freed_host_memory``: large freed blocks are reused without page faults (glibc), in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Eight "steps", each allocating three 40 MiB float32 tensors (as a training step's temporaries) and freeing them;
# prints the minor page faults of each step. (Torch CPU tensors, as in training: NumPy asks for transparent huge pages
# on large arrays, which hides most faults.)
PROBE = """
import json, resource, sys
import torch
from monai_ng.engines.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(10 * 2**20)
    y = x * 2
    z = y + x
    total = float(z[::4096].sum())
    del x, y, z
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults, "sum": total}))
"""
PAGES = 3 * 40 * 2**20 // 4096  # 30,720 pages of 4 KiB per step


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    default, retained = probe("default"), probe("retain")
    assert default["applied"] is None and retained["applied"] is True
    # by default every step's 40 MiB blocks are fresh mmaps: every page faults in again, step after step
    assert sorted(default["faults"])[4] >= 0.9 * PAGES, default
    # kept on the heap, once the heap has grown the freed blocks are reused: most steps fault in nothing. A block
    # now and then still faults in again (seen: at most 3 of 18 blocks over steps 3-8 in 8 runs on the development VM,
    # whose kernel also reclaims idle memory), so the check is on the total: under a third of the default's faults.
    assert sum(retained["faults"][2:]) < sum(default["faults"][2:]) / 3, (default, retained)
    assert default["sum"] == retained["sum"] == 3.0 * (10 * 2**20 // 4096)
