"""Shared input checks and masked operations for batched MIL bags, padded or packed.

A batch holds ``B`` bags of up to ``N`` slices, with a boolean ``mask`` ``[B, N]`` (True = valid slice), in one of two
layouts: padded, features ``x`` ``[B, N, D]`` (whatever lies on padding is never used), or packed, features ``x``
``[T, D]`` holding only the ``T = mask.sum()`` valid slices, row ``t`` being the ``t``-th True entry of ``mask`` in
row-major order (as :func:`monai_ng.data.collate_packed_bags` writes them). Every network calls :func:`prepare_bag`
(padded features out) or :func:`prepare_packed_bags` (packed features out) first, so that all of them take either
layout, reject bad inputs with the same precise messages and never let padded values reach their outputs.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = [
    "prepare_bag",
    "prepare_packed_bags",
    "masked_softmax",
    "masked_mean",
    "bag_lengths",
    "PackedBags",
    "pack_valid_slices",
]


def prepare_bag(
    x: Tensor,
    mask: Tensor | None,
    in_features: int,
    dtype: torch.dtype,
    *,
    model: str,
    require_prefix: bool = False,
    zero_padding: bool = True,
) -> tuple[Tensor, Tensor]:
    """Check a batch of bags (padded or packed) and return it padded, cast to ``dtype``, with zeroed padded slices.

    Args:
        x: ``[B, N, D]`` (padded) or ``[T, D]`` (packed: the valid slices of ``mask`` in row-major order) floating-point
            slice features (float16 from a memory-mapped store is fine).
        mask: ``[B, N]`` bool, True = valid slice; ``None`` means every slice is valid (padded ``x`` only: packed ``x``
            needs its mask).
        in_features: the feature width ``D`` the network was built for.
        dtype: dtype of the network's parameters; ``x`` is cast to it.
        model: name of the calling network, used in error messages.
        require_prefix: if True, each bag's valid slices must be one contiguous run starting at index 0 (padding only
            at the end), as needed by networks that use the slice order (convolutions, chain graphs, positions).
        zero_padding: if False, a padded ``x`` is returned as given (not cast, padding untouched); the checks are the
            same. A packed ``x`` is always returned as the zero-padded grid (it has no padding to leave untouched).

    Returns:
        ``(x, mask)``: ``x`` ``[B, N, D]`` in ``dtype`` with padded slices set to exactly 0 (so that padding garbage,
        even non-finite, cannot leak), and ``mask`` ``[B, N]`` bool.

    Raises:
        TypeError: ``x`` or ``mask`` is not a tensor, ``x`` is not floating point, ``mask`` is not bool.
        ValueError: wrong rank, empty batch, feature width mismatch, mask shape mismatch, packed ``x`` without a mask
            or whose row count is not the mask's number of valid slices, a bag with zero valid slices, or
            (``require_prefix``) a bag whose valid slices are not a prefix.
    """
    checked = _check_bags(x, mask, in_features, model=model, require_prefix=require_prefix)
    if x.dim() == 2:  # packed: the rows go onto a zero grid, so padding is exactly 0 by construction
        batch, length = checked.shape
        grid = x.new_zeros((batch, length, x.shape[1]), dtype=dtype)
        return grid.masked_scatter(checked.unsqueeze(-1), x.to(dtype)), checked
    if mask is None:
        return x.to(dtype), checked
    if not zero_padding:
        return x, checked
    return torch.where(checked.unsqueeze(-1), x.to(dtype), 0.0), checked


def prepare_packed_bags(
    x: Tensor,
    mask: Tensor | None,
    in_features: int,
    dtype: torch.dtype,
    *,
    model: str,
    require_prefix: bool = False,
) -> PackedBags:
    """Check a batch of bags (padded or packed) as :func:`prepare_bag` does and return its valid slices packed.

    A padded ``x`` ``[B, N, D]`` goes through :func:`pack_valid_slices` (one gather of the valid rows); a packed ``x``
    ``[T, D]`` is used as it is (only cast to ``dtype``, no gather).

    Args:
        x: ``[B, N, D]`` (padded) or ``[T, D]`` (packed) floating-point slice features.
        mask: ``[B, N]`` bool, True = valid slice; ``None`` means every slice is valid (padded ``x`` only).
        in_features: the feature width ``D`` the network was built for.
        dtype: compute dtype of the packed rows.
        model: name of the calling network, used in error messages.
        require_prefix: as in :func:`prepare_bag`.

    Returns:
        :class:`PackedBags` with ``x`` ``[T, D]`` in ``dtype``.

    Raises:
        TypeError, ValueError: as :func:`prepare_bag`.
    """
    checked = _check_bags(x, mask, in_features, model=model, require_prefix=require_prefix)
    if x.dim() == 3:
        return pack_valid_slices(x, checked, dtype)
    return PackedBags(x.to(dtype), *_packed_layout(checked), checked)


def _check_bags(x: Tensor, mask: Tensor | None, in_features: int, *, model: str, require_prefix: bool) -> Tensor:
    """The input checks of :func:`prepare_bag` for either layout; returns the mask (all True when ``None`` is given)."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{model}: x must be a torch.Tensor of shape [B, N, D] (padded) or [T, D] (packed), got {type(x).__name__}."
        )
    if x.dim() not in (2, 3):
        raise ValueError(
            f"{model}: x must have rank 3 [B, N, D] (padded) or rank 2 [T, D] (packed, with mask [B, N]), got rank "
            f"{x.dim()} with shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise TypeError(f"{model}: x must be a floating-point tensor, got dtype {x.dtype}.")
    packed = x.dim() == 2
    if packed:
        if mask is None:
            raise ValueError(
                f"{model}: packed x [T, D] (rank 2, shape {tuple(x.shape)}) needs its mask [B, N]; got mask=None."
            )
        _check_mask_type(mask, model)
        if mask.dim() != 2:
            raise ValueError(
                f"{model}: mask must have rank 2 [B, N] with packed x [T, D], got shape {list(mask.shape)}."
            )
        batch, length = mask.shape
        width = x.shape[1]
        if batch == 0 or length == 0:
            raise ValueError(f"{model}: empty batch, mask has shape {list(mask.shape)} (need B >= 1 and N >= 1).")
    else:
        batch, length, width = x.shape
        if batch == 0 or length == 0:
            raise ValueError(f"{model}: empty batch, x has shape {tuple(x.shape)} (need B >= 1 and N >= 1).")
    if width != in_features:
        raise ValueError(f"{model}: feature width mismatch, expected D={in_features}, got D={width}.")
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=x.device)
    if not packed:
        _check_mask_type(mask, model)
        if tuple(mask.shape) != (batch, length):
            raise ValueError(
                f"{model}: mask shape mismatch, expected [B, N] = {[batch, length]} to match x {tuple(x.shape)}, "
                f"got {list(mask.shape)}."
            )
    empty = ~mask.any(dim=1)
    gaps = mask[:, 1:] & ~mask[:, :-1] if require_prefix else None
    bad = empty.any() if gaps is None else (empty.any() | gaps.any())
    if packed:
        bad = bad | (mask.sum() != x.shape[0])
    if bool(bad):  # one host sync per forward; the detailed diagnosis only runs on the error path
        valid = int(mask.sum())
        if packed and valid != x.shape[0]:
            raise ValueError(
                f"{model}: packed x has T={x.shape[0]} rows but mask {list(mask.shape)} has {valid} valid slices; "
                "row t of x must be the t-th True entry of mask (row-major)."
            )
        empty_idx = torch.nonzero(empty).flatten().tolist()
        if empty_idx:
            raise ValueError(f"{model}: bag(s) at batch index {empty_idx} have zero valid slices.")
        assert gaps is not None  # neither a row-count mismatch nor an empty bag: only a gap can be left
        gap_idx = torch.nonzero(gaps.any(dim=1)).flatten().tolist()
        raise ValueError(
            f"{model}: the valid slices of bag(s) at batch index {gap_idx} are not a contiguous prefix; this network "
            "uses slice order, so padding must come only after a bag's last valid slice."
        )
    return mask


def _check_mask_type(mask: Any, model: str) -> None:
    """Raise unless ``mask`` is a bool tensor (its shape is checked by the caller, against the layout)."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{model}: mask must be a bool torch.Tensor of shape [B, N], got {type(mask).__name__}.")
    if mask.dtype != torch.bool:
        raise TypeError(f"{model}: mask must have dtype torch.bool (True = valid slice), got {mask.dtype}.")


class PackedBags(NamedTuple):
    """The valid slices of a batch, packed in row-major order of its mask (bag by bag, slice order kept).

    Attributes:
        x: ``[T, D]`` valid slice features, ``T = mask.sum()``.
        index: ``[T]`` int64 flat position ``b * N + j`` of each packed row in the padded ``[B, N]`` grid.
        bag: ``[T]`` int64 bag index ``b`` of each packed row.
        shape: ``(B, N)`` of the padded grid.
        lengths: valid slices per bag (``B`` ints, summing to ``T``).
        mask: ``[B, N]`` bool validity of the padded grid (all True when the caller gave none).
    """

    x: Tensor
    index: Tensor
    bag: Tensor
    shape: tuple[int, int]
    lengths: tuple[int, ...]
    mask: Tensor

    def scatter(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Put per-row values ``[T]`` back on the padded grid ``[B, N]`` (``fill`` on padding); differentiable."""
        b, n = self.shape
        grid = values.new_full((b * n,), fill)
        return grid.index_copy(0, self.index, values).view(b, n)

    def gather(self, grid: Tensor) -> Tensor:
        """Per-row values ``[T]`` of a padded grid ``[B, N]``; differentiable."""
        return grid.reshape(-1).index_select(0, self.index)

    def groups(self, max_rows: int, per_bag: int = 0) -> list[PackedBags]:
        """Split into runs of consecutive bags of at most ``max_rows`` rows each (a longer bag is a group alone).

        Each group is a :class:`PackedBags` of its own (rows, grid positions and bag indices renumbered from 0) on a
        grid of the same width ``N``, so per-group grids ``[B_g, N, ...]`` concatenate along dim 0 back to the batch's.
        The rows are views (``narrow``), not copies.

        Args:
            max_rows: the row budget of a group, >= 1.
            per_bag: rows each bag counts beyond its slices (1 for a class token a network adds per bag), >= 0.

        Raises:
            ValueError: ``max_rows`` < 1 or ``per_bag`` < 0.
        """
        if max_rows < 1:
            raise ValueError(f"PackedBags.groups: max_rows must be >= 1, got {max_rows}.")
        if per_bag < 0:
            raise ValueError(f"PackedBags.groups: per_bag must be >= 0, got {per_bag}.")
        batch, length = self.shape
        cuts, rows = [0], 0
        for b, n in enumerate(self.lengths):
            if rows and rows + n + per_bag > max_rows:
                cuts.append(b)
                rows = 0
            rows += n + per_bag
        cuts.append(batch)
        if len(cuts) == 2:
            return [self]
        out, first_row = [], 0
        for start, stop in itertools.pairwise(cuts):
            lengths = self.lengths[start:stop]
            n_rows = sum(lengths)
            index = self.index.narrow(0, first_row, n_rows) - start * length
            bag = self.bag.narrow(0, first_row, n_rows) - start
            x = self.x.narrow(0, first_row, n_rows)
            out.append(PackedBags(x, index, bag, (stop - start, length), lengths, self.mask[start:stop]))
            first_row += n_rows
        return out

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """Per-bag weighted sum of the rows, ``[B, D]`` with ``out[b] = sum_{t in bag b} weights[t] * x[t]``.

        One ``embedding_bag`` call (``mode="sum"`` with per-sample weights over the rows in order, bags cut at their
        offsets): one pass over ``x`` forward and one for the gradient of ``weights``, no ``[T, D]`` temporary and no
        loop over bags; differentiable in ``weights`` (and in ``x``). Computed in the promoted dtype of the two.
        Measured against one matrix-vector product per bag (64 bags, 768-d, 2-core CPU; forward / forward + backward in
        ``weights``): 0.13 / 0.37 ms against 0.42 / 0.95 ms for 20-60 slices, 3.4 / 5.1 ms against 2.9 / 7.0 ms for
        100-300 slices at 1 thread, and 2.0-5.8x faster in all four at 2 threads.
        """
        dtype = torch.promote_types(weights.dtype, self.x.dtype)
        if _get_current_dispatch_mode() is not None:
            # FLOP counting and fake tensors see the same sums as matrix-vector products (no FLOP formula exists for
            # embedding_bag), one per bag
            blocks = zip(weights.to(dtype).split(self.lengths), self.x.to(dtype).split(self.lengths), strict=True)
            return torch.stack([w @ r for w, r in blocks])
        device = self.x.device
        starts = torch.tensor((0, *itertools.accumulate(self.lengths[:-1])), dtype=torch.int64, device=device)
        rows = torch.arange(self.x.shape[0], device=device)
        return F.embedding_bag(rows, self.x.to(dtype), starts, mode="sum", per_sample_weights=weights.to(dtype))


def pack_valid_slices(x: Tensor, mask: Tensor, dtype: torch.dtype) -> PackedBags:
    """Gather the valid slices of a checked padded batch (:func:`prepare_bag` with ``zero_padding=False``) once.

    Padding is never read, so garbage (even non-finite) there cannot leak; only the ``T`` valid rows are cast to
    ``dtype``.

    Args:
        x: ``[B, N, D]`` slice features.
        mask: ``[B, N]`` bool, True = valid slice.
        dtype: compute dtype of the packed rows.

    Returns:
        :class:`PackedBags` with ``x`` ``[T, D]``.
    """
    batch, length, width = x.shape
    index, bag, shape, lengths = _packed_layout(mask)
    rows = x.reshape(batch * length, width).index_select(0, index).to(dtype)
    return PackedBags(rows, index, bag, shape, lengths, mask)


def _packed_layout(mask: Tensor) -> tuple[Tensor, Tensor, tuple[int, int], tuple[int, ...]]:
    """``(index, bag, shape, lengths)`` of :class:`PackedBags` for ``mask`` ``[B, N]``."""
    batch, length = mask.shape
    index = torch.nonzero(mask.reshape(-1)).squeeze(1)
    bag = torch.div(index, length, rounding_mode="floor")
    return index, bag, (batch, length), tuple(mask.sum(dim=1).tolist())


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Softmax over the valid entries only; masked entries are exactly 0.

    Args:
        scores: real scores, e.g. ``[B, N]`` or ``[B, N, H]``.
        mask: bool, broadcastable to ``scores``; True = valid. Each softmax slice needs at least one valid entry.
        dim: the dimension to normalise over.

    Returns:
        Tensor shaped like ``scores`` (float): non-negative, sums to 1 over the valid entries along ``dim``.
    """
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=dim)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``[B, N, D]`` over the valid slices of ``mask`` ``[B, N]``; returns ``[B, D]``."""
    weights = mask.to(x.dtype)
    return torch.einsum("bn,bnd->bd", weights, x) / weights.sum(dim=1, keepdim=True)


def bag_lengths(mask: Tensor) -> Tensor:
    """Number of valid slices per bag, ``[B]`` int64, from ``mask`` ``[B, N]``."""
    return mask.sum(dim=1)
