"""Pass a wrapper's explicit keyword arguments on to the transform or reader it wraps, without listing them again.

The dictionary transforms (and ``LoadCTSeries`` over :class:`~monai_ng.io.ct_series_reader.CTSeriesReader`) spell out
every argument of what they wrap in their own signatures, as MONAI's do; :func:`wrapped_arguments` then hands those
arguments on by name, so the list of names is written once per signature rather than again at each call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["wrapped_arguments"]

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def wrapped_arguments(target: Callable[..., Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``target`` (a class or a function), each taken by name from ``scope``.

    Args:
        target: what the wrapper builds, e.g. ``CTSliceStack``.
        scope: the wrapper's ``locals()`` at the start of its ``__init__`` (its arguments).

    Returns:
        ``{name: scope[name]}`` for every named parameter of ``target``.

    Raises:
        TypeError: the wrapper lacks one of ``target``'s parameters (its signature must cover the target's).
    """
    names = [n for n, p in inspect.signature(target).parameters.items() if p.kind in _NAMED]
    missing = [n for n in names if n not in scope]
    if missing:
        raise TypeError(f"{getattr(target, '__name__', target)}: wrapper has no argument(s) {missing}")
    return {n: scope[n] for n in names}
