"""Import a script of ``benchmarks/`` as a module for its tests, leaving ``sys.path`` as it was."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``<name>_under_test`` (registered in ``sys.modules``: dataclasses look
    their module up by name); the repository and ``benchmarks/`` entries the script adds to ``sys.path`` are undone."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
