"""Input checks shared by the attention losses: attention ``[B, N]`` or ``[B, N, H]`` and a bool ``[B, N]`` mask."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_attention", "check_count"]


def check_attention(attention: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Check attention and mask; return ``(attention [B, N, H], mask [B, N] bool)``.

    Args:
        attention: ``[B, N]`` (one head) or ``[B, N, H]`` attention over the slices of ``B`` bags padded to ``N``.
        mask: ``[B, N]`` bool, True = valid slice; ``None`` = every slice valid.

    Raises:
        TypeError: ``attention`` is not a tensor, or ``mask`` is not bool.
        ValueError: wrong rank, a mask shape that does not match, or a bag with no valid slice.
    """
    if not isinstance(attention, Tensor):
        raise TypeError(f"attention must be a torch.Tensor, got {type(attention).__name__}")
    if attention.dim() == 2:
        attention = attention.unsqueeze(-1)
    if attention.dim() != 3:
        raise ValueError(f"attention must be [B, N] or [B, N, H], got shape {tuple(attention.shape)}")
    b, n, _ = attention.shape
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=attention.device)
    if mask.shape != (b, n):
        raise ValueError(f"mask must be [B, N] = {(b, n)} to match attention, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid slice), got {mask.dtype}")
    empty = ~mask.any(dim=1)
    if empty.any():
        raise ValueError(f"bag {int(torch.nonzero(empty)[0])} of the batch has no valid slice")
    return attention, mask


def check_count(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``.

    Raises:
        TypeError: ``value`` is not an int (bools are refused).
        ValueError: ``value < minimum``; the message names the argument.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
