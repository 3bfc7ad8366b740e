"""On / off settings of the bundle configs, read the same whether they come from a config file or the command line.

``python -m monai.bundle run ... --write_dicom false`` hands the config the text ``"false"`` (the command line parser
turns only ``True`` / ``False`` into booleans), and any non-empty text counts as true in a config expression: the
setting would silently stay on. The configs therefore read every on / off key through :func:`config_flag`: MONAI's
:func:`~monai.utils.str2bool` with the key's name in its error, also taking NumPy booleans and the integers 0 / 1
(``--key 1`` arrives as an int).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.utils import str2bool

__all__ = ["config_flag"]


def config_flag(value: Any, name: str) -> bool:
    """``value`` of the bundle config key ``name`` as a ``bool``.

    Args:
        value: a ``bool`` (also NumPy's), the integers 0 / 1, or text that :func:`monai.utils.str2bool` reads
            (``true`` / ``false``, ``yes`` / ``no``, ``t`` / ``f``, ``y`` / ``n``, ``1`` / ``0``, any letter case;
            surrounding spaces ignored).
        name: the config key, named in the error.

    Raises:
        ValueError: any other value (``None``, other numbers or text, containers), with the key and the value.
    """
    if isinstance(value, (np.bool_, np.integer, int)) and not isinstance(value, bool) and int(value) in (0, 1):
        value = bool(value)
    try:
        return str2bool(value.strip() if isinstance(value, str) else value)
    except ValueError as exc:
        raise ValueError(
            f"bundle config key {name!r} must be true or false (on the command line: --{name} True or --{name} False), "
            f"got {value!r}"
        ) from exc
