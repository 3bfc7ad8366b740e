"""On / off settings of the bundle configs, read the same whether they come from a config file or the command line.

``python -m monai.bundle run ... --write_dicom false`` hands the config the text ``"false"`` (the command line parser
turns only ``True`` / ``False`` into booleans), and any non-empty text counts as true in a config expression: the
setting would silently stay on. The configs therefore read every on / off key through :func:`config_flag`, which
takes a boolean or its usual spellings and rejects anything else with the key's name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["config_flag"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def config_flag(value: Any, name: str) -> bool:
    """``value`` of the bundle config key ``name`` as a ``bool``.

    Args:
        value: a ``bool`` (also NumPy's), the integers 0 / 1, or the text ``true`` / ``false``, ``yes`` / ``no``,
            ``on`` / ``off``, ``1`` / ``0`` in any letter case, surrounding spaces ignored.
        name: the config key, named in the error.

    Raises:
        ValueError: any other value (``None``, other numbers or text, containers), with the key and the value.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(
        f"bundle config key {name!r} must be true or false (on the command line: --{name} True or --{name} False), "
        f"got {value!r}"
    )
