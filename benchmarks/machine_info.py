"""Machine description shared by the benchmark scripts (they run as ``python3 benchmarks/bench_x.py``, so this
folder is on ``sys.path`` and they import it as ``machine_info``)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_model", "machine_info", "write_results"]


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU count and model, torch version and intra-op threads, Python version and the load average now."""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def write_results(results: dict[str, Any], table: str, out: str | Path) -> None:
    """Finish a benchmark run: record the end load average and the markdown table, print it, write ``out`` (JSON)."""
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["markdown"] = table
    print()
    print(table)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")
