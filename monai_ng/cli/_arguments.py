"""Argument types and option groups shared by the ``monai-ng`` command modules (private)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

__all__ = ["dataclass_defaults", "float_list", "int_list", "int_range", "show_default"]


def float_list(text: str) -> list[float]:
    """``"0.1,1"`` -> ``[0.1, 1.0]``; raises :class:`argparse.ArgumentTypeError` otherwise."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def int_list(text: str) -> list[int]:
    """``"1001,2001"`` -> ``[1001, 2001]``; raises :class:`argparse.ArgumentTypeError` otherwise."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def int_range(text: str) -> int | tuple[int, int]:
    """``"5"`` -> 5, ``"3:10"`` -> (3, 10); raises :class:`argparse.ArgumentTypeError` otherwise."""
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX integers, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected N or MIN:MAX integers, got {text!r}")


def dataclass_defaults(instance: Any) -> dict[str, Any]:
    """Field name -> value of a dataclass instance (the defaults a command line shows and falls back to)."""
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def show_default(value: Any) -> str:
    """A default as typed on the command line: sequences comma-separated, e.g. ``0.01,0.1``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)
    return str(value)
