"""Exact Bayes posteriors of the ShiftedMean task (scan and slice level): the ceilings a model can reach."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp

from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.synthetic.generator import SyntheticBags
from monai_ng.data.synthetic.params import _int_range

__all__ = ["bayes_scan_posterior", "bayes_slice_posterior", "shifted_mean_posteriors"]


def shifted_mean_posteriors(
    embeddings: np.ndarray,
    offsets: np.ndarray,
    n_slices: np.ndarray,
    r: int | tuple[int, int],
    k: int,
    delta: float,
    prevalence: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Bayes posteriors of the ShiftedMean task, from raw arrays.

    For bag ``x`` of S instances, a run of length r starting at t (instances ``t .. t+r-1``, 0-based) has likelihood
    ratio against "no run" ``LR(r, t) = exp(sum_{j=t}^{t+r-1} sum_{f<k} (delta x_jf - delta^2 / 2))``. With r uniform
    on ``{r_min..r_max}`` and t uniform on ``{0..S-r}`` (the generator's prior) the Bayes factor is
    ``BF = sum_r 1/n_r * 1/(S-r+1) * sum_t LR(r, t)`` and ``P(y=1 | x) = pi BF / (pi BF + 1 - pi)``, computed in log
    space. The per-instance posterior is ``P(j in run | x) = P(y=1 | x) * sum_{(r,t) covering j} w(r, t)`` with
    ``w(r, t)`` the posterior over runs given ``y = 1`` (prior times ``LR``, normalised by ``BF``).

    Args:
        embeddings: ``[T, D]`` (only the first ``k`` columns are read; a memory map is fine).
        offsets: ``[B]`` first row of each bag.
        n_slices: ``[B]`` bag sizes; each must be ``>= r_max``.
        r: run length (int or inclusive ``(r_min, r_max)``).
        k: number of shifted features.
        delta: the shift.
        prevalence: prior ``P(y = 1)``, strictly between 0 and 1.

    Returns:
        ``(scan [B] float64, slice [T] float64)``; rows not owned by any bag get NaN in ``slice``.
    """
    r_lo, r_hi = _int_range("r", r)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    n_slices = np.asarray(n_slices, dtype=np.int64).reshape(-1)
    if offsets.shape != n_slices.shape:
        raise ValueError(f"offsets {offsets.shape} and n_slices {n_slices.shape} differ in shape")
    if embeddings.ndim != 2 or not 1 <= int(k) <= embeddings.shape[1]:
        raise ValueError(f"embeddings must be [T, D] with D >= k={k}, got shape {embeddings.shape}")
    if r_lo < 1 or (n_slices < r_hi).any():
        bad = int(np.flatnonzero(n_slices < r_hi)[0]) if (n_slices < r_hi).any() else -1
        raise ValueError(f"run lengths {r_lo}..{r_hi} must be >= 1 and fit every bag (bag {bad} has fewer slices)")
    if not 0.0 < float(prevalence) < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    if (offsets < 0).any() or (offsets + n_slices > embeddings.shape[0]).any():
        raise ValueError(f"bags reach outside the {embeddings.shape[0]} embedding rows")
    delta = float(delta)
    n_bags, s_max = offsets.shape[0], int(n_slices.max())
    # per-instance log-likelihood-ratio terms, on a padded [B, S_max] grid
    score_rows = delta * np.asarray(embeddings[:, : int(k)], dtype=np.float64).sum(axis=1) - int(k) * delta**2 / 2.0
    col = np.arange(s_max)
    valid = col[None, :] < n_slices[:, None]
    rows = np.where(valid, offsets[:, None] + col[None, :], 0)
    grid = np.where(valid, score_rows[rows], 0.0)
    csum = np.concatenate([np.zeros((n_bags, 1)), np.cumsum(grid, axis=1)], axis=1)  # [B, S_max + 1]
    n_r = r_hi - r_lo + 1
    log_terms = []  # per r: [B, S_max - r + 1] log(prior(r, t) * LR(r, t)), -inf for starts that do not fit
    for rr in range(r_lo, r_hi + 1):
        n_starts = s_max - rr + 1
        t = np.arange(n_starts)
        lr = csum[:, rr : rr + n_starts] - csum[:, :n_starts]
        log_prior = -math.log(n_r) - np.log((n_slices - rr + 1).astype(np.float64))
        log_terms.append(np.where(t[None, :] <= (n_slices - rr)[:, None], lr + log_prior[:, None], -np.inf))
    with np.errstate(divide="ignore"):  # a bag with no fitting start gives log(0) = -inf
        log_bf = logsumexp(np.stack([logsumexp(lt, axis=1) for lt in log_terms], axis=1), axis=1)  # [B]
    logit = math.log(prevalence) - math.log1p(-prevalence) + log_bf
    scan = expit(logit)
    cover = np.zeros((n_bags, s_max))
    for rr, lt in zip(range(r_lo, r_hi + 1), log_terms, strict=True):
        w = np.exp(lt - log_bf[:, None])  # posterior over starts given y = 1 (and this r)
        cw = np.concatenate([np.zeros((n_bags, 1)), np.cumsum(w, axis=1)], axis=1)
        hi = np.minimum(col, w.shape[1] - 1) + 1
        lo = np.maximum(col - rr + 1, 0)
        cover += np.where(lo[None, :] < hi[None, :], cw[:, hi] - cw[:, lo], 0.0)
    slice_post = np.full(embeddings.shape[0], np.nan)
    slice_post[rows[valid]] = (np.clip(cover, 0.0, 1.0) * scan[:, None])[valid]
    return scan, slice_post


def _bayes_inputs(
    bags: SyntheticBags | EmbeddingStore, overrides: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    if isinstance(bags, SyntheticBags):
        if bags.kind != "shifted_mean":
            raise ValueError(f"the exact Bayes posterior exists for ShiftedMean bags only, got kind {bags.kind!r}")
        params = bags.params.to_dict()
        emb, offsets, counts = bags.embeddings, bags.offsets, bags.n_slices
    elif isinstance(bags, EmbeddingStore):
        meta = bags.metadata.get("synthetic")
        if not isinstance(meta, Mapping) or meta.get("kind") != "shifted_mean":
            kind = meta.get("kind") if isinstance(meta, Mapping) else None
            raise ValueError(
                f"{bags.path}: store metadata does not describe a ShiftedMean data set (synthetic.kind={kind!r}); "
                "the exact Bayes posterior needs one"
            )
        params = dict(meta)
        emb, offsets = bags.embeddings, bags.index["offset"].to_numpy()
        counts = bags.index["n_slices"].to_numpy()
    else:
        raise TypeError(f"bags must be SyntheticBags or EmbeddingStore, got {type(bags).__name__}")
    unknown = sorted(set(overrides) - {"r", "k", "delta", "prevalence"})
    if unknown:
        raise ValueError(f"unknown Bayes parameter(s) {unknown}; use r, k, delta, prevalence")
    chosen = {name: params[name] for name in ("r", "k", "delta", "prevalence")}
    chosen.update({name: v for name, v in overrides.items() if v is not None})
    if isinstance(chosen["r"], list):
        chosen["r"] = tuple(chosen["r"])
    return emb, offsets, counts, chosen


def bayes_scan_posterior(bags: SyntheticBags | EmbeddingStore, **overrides: Any) -> np.ndarray:
    """Exact ``P(y = 1 | x)`` per bag for ShiftedMean data: the Bayes ceiling of scan-level prediction.

    Args:
        bags: in-memory ShiftedMean bags or a store written by :func:`write_synthetic_store` (parameters are read
            from it; a float16 store gives the posterior of the rounded embeddings).
        **overrides: ``r``, ``k``, ``delta`` or ``prevalence`` to use instead of the generating values.

    Returns:
        ``[B]`` float64 posteriors in bag (manifest) order. See :func:`shifted_mean_posteriors` for the formula.
    """
    emb, offsets, counts, p = _bayes_inputs(bags, overrides)
    return shifted_mean_posteriors(emb, offsets, counts, **p)[0]


def bayes_slice_posterior(bags: SyntheticBags | EmbeddingStore, **overrides: Any) -> np.ndarray:
    """Exact ``P(instance j lies in the shifted run | x)`` for ShiftedMean data: the localization ceiling.

    Args:
        bags: as for :func:`bayes_scan_posterior`.
        **overrides: as for :func:`bayes_scan_posterior`.

    Returns:
        ``[T]`` float64, aligned with the embedding rows (NaN for rows owned by no bag).
    """
    emb, offsets, counts, p = _bayes_inputs(bags, overrides)
    return shifted_mean_posteriors(emb, offsets, counts, **p)[1]
