"""Shared input checks and masked operations for batched, padded MIL bags.

A batch holds ``B`` bags padded to ``N`` slices: features ``x`` ``[B, N, D]`` and a boolean ``mask`` ``[B, N]``
(True = valid slice). Every network calls :func:`prepare_bag` first so that all of them reject bad inputs with the
same precise messages and never let padded values reach their outputs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["prepare_bag", "masked_softmax", "masked_mean", "bag_lengths", "PackedBags", "pack_valid_slices"]


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
    """Check a padded batch of bags, cast it to ``dtype`` and zero its padded slices.

    Args:
        x: ``[B, N, D]`` floating-point slice features (float16 from a memory-mapped store is fine).
        mask: ``[B, N]`` bool, True = valid slice; ``None`` means every slice is valid.
        in_features: the feature width ``D`` the network was built for.
        dtype: dtype of the network's parameters; ``x`` is cast to it.
        model: name of the calling network, used in error messages.
        require_prefix: if True, each bag's valid slices must be one contiguous run starting at index 0 (padding only
            at the end), as needed by networks that use the slice order (convolutions, chain graphs, positions).
        zero_padding: if False, ``x`` is returned as given (not cast, padding untouched), for callers that only
            read the valid slices (:func:`pack_valid_slices`); the checks are the same.

    Returns:
        ``(x, mask)``: ``x`` ``[B, N, D]`` in ``dtype`` with padded slices set to exactly 0 (so that padding garbage,
        even non-finite, cannot leak), and ``mask`` ``[B, N]`` bool.

    Raises:
        TypeError: ``x`` or ``mask`` is not a tensor, ``x`` is not floating point, ``mask`` is not bool.
        ValueError: wrong rank, empty batch, feature width mismatch, mask shape mismatch, a bag with zero valid slices,
            or (``require_prefix``) a bag whose valid slices are not a prefix.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{model}: x must be a torch.Tensor of shape [B, N, D], got {type(x).__name__}.")
    if x.dim() != 3:
        raise ValueError(f"{model}: x must have rank 3 [B, N, D], got rank {x.dim()} with shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"{model}: x must be a floating-point tensor, got dtype {x.dtype}.")
    batch, length, width = x.shape
    if batch == 0 or length == 0:
        raise ValueError(f"{model}: empty batch, x has shape {tuple(x.shape)} (need B >= 1 and N >= 1).")
    if width != in_features:
        raise ValueError(f"{model}: feature width mismatch, expected D={in_features}, got D={width}.")
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool, device=x.device)
        return x.to(dtype), mask
    if not isinstance(mask, Tensor):
        raise TypeError(f"{model}: mask must be a bool torch.Tensor of shape [B, N], got {type(mask).__name__}.")
    if mask.dtype != torch.bool:
        raise TypeError(f"{model}: mask must have dtype torch.bool (True = valid slice), got {mask.dtype}.")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(
            f"{model}: mask shape mismatch, expected [B, N] = {[batch, length]} to match x {tuple(x.shape)}, "
            f"got {list(mask.shape)}."
        )
    empty = ~mask.any(dim=1)
    gaps = mask[:, 1:] & ~mask[:, :-1] if require_prefix else None
    bad = empty.any() if gaps is None else (empty.any() | gaps.any())
    if bool(bad):  # one host sync per forward; the detailed diagnosis only runs on the error path
        empty_idx = torch.nonzero(empty).flatten().tolist()
        if empty_idx:
            raise ValueError(f"{model}: bag(s) at batch index {empty_idx} have zero valid slices.")
        gap_idx = torch.nonzero(gaps.any(dim=1)).flatten().tolist()
        raise ValueError(
            f"{model}: the valid slices of bag(s) at batch index {gap_idx} are not a contiguous prefix; this network "
            "uses slice order, so padding must come only after a bag's last valid slice."
        )
    if not zero_padding:
        return x, mask
    x = torch.where(mask.unsqueeze(-1), x.to(dtype), 0.0)
    return x, mask


class PackedBags(NamedTuple):
    """The valid slices of a padded batch, packed in row-major order (bag by bag, slice order kept).

    Attributes:
        x: ``[T, D]`` valid slice features, ``T = mask.sum()``.
        index: ``[T]`` int64 flat position ``b * N + j`` of each packed row in the padded ``[B, N]`` grid.
        bag: ``[T]`` int64 bag index ``b`` of each packed row.
        shape: ``(B, N)`` of the padded grid.
        lengths: valid slices per bag (``B`` ints, summing to ``T``).
    """

    x: Tensor
    index: Tensor
    bag: Tensor
    shape: tuple[int, int]
    lengths: tuple[int, ...]

    def scatter(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Put per-row values ``[T]`` back on the padded grid ``[B, N]`` (``fill`` on padding); differentiable."""
        b, n = self.shape
        grid = values.new_full((b * n,), fill)
        return grid.index_copy(0, self.index, values).view(b, n)

    def gather(self, grid: Tensor) -> Tensor:
        """Per-row values ``[T]`` of a padded grid ``[B, N]``; differentiable."""
        return grid.reshape(-1).index_select(0, self.index)

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """Per-bag weighted sum of the rows, ``[B, D]`` with ``out[b] = sum_{t in bag b} weights[t] * x[t]``.

        One matrix-vector product per bag on its contiguous block of rows: one pass over ``x`` forward and one for
        the gradient of ``weights`` (no ``[T, D]`` temporaries); differentiable in ``weights`` (and in ``x``).
        """
        return _WeightedSegmentSum.apply(weights, self.x, self.lengths)


class _WeightedSegmentSum(torch.autograd.Function):
    """``out[b] = w_b^T X_b`` over consecutive row blocks ``X_b`` of ``rows`` (block sizes ``lengths``)."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, rows: Tensor, lengths: tuple[int, ...]) -> Tensor:
        ctx.save_for_backward(weights, rows)
        ctx.lengths = lengths
        return torch.stack([w @ r for w, r in zip(weights.split(lengths), rows.split(lengths), strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weights, rows = ctx.saved_tensors
        # Under autocast the forward product ran in the autocast dtype (e.g. bfloat16) while the saved inputs kept
        # theirs; backward runs outside autocast, so bring the incoming gradient to the inputs' dtype, and return each
        # input's gradient in that input's dtype (as autograd requires).
        grad = grad.to(torch.promote_types(weights.dtype, rows.dtype))
        grad_w = grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_w = torch.cat([r.to(grad.dtype) @ g for r, g in zip(rows.split(ctx.lengths), grad, strict=True)])
            grad_w = grad_w.to(weights.dtype)
        if ctx.needs_input_grad[1]:
            bag = torch.repeat_interleave(
                torch.arange(len(ctx.lengths), device=grad.device), torch.tensor(ctx.lengths, device=grad.device)
            )
            grad_rows = (weights.to(grad.dtype).unsqueeze(-1) * grad.index_select(0, bag)).to(rows.dtype)
        return grad_w, grad_rows, None


def pack_valid_slices(x: Tensor, mask: Tensor, dtype: torch.dtype) -> PackedBags:
    """Gather the valid slices of a checked batch (:func:`prepare_bag` with ``zero_padding=False``) once.

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
    index = torch.nonzero(mask.reshape(-1)).squeeze(1)
    rows = x.reshape(batch * length, width).index_select(0, index).to(dtype)
    bag = torch.div(index, length, rounding_mode="floor")
    lengths = tuple(mask.sum(dim=1).tolist())
    return PackedBags(rows, index, bag, (batch, length), lengths)


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
