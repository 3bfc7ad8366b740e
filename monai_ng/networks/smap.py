"""Smooth attention MIL pooling (SmAP): attention with the Sm operator over the slice chain graph.

Castro-Macias, Morales-Alvarez, Wu, Molina & Katsaggelos, "Sm: enhanced localization in Multiple Instance Learning
for medical imaging classification", NeurIPS 2024. As run in Harvey, Loevlie & Hughes, "Normal Guidance is what
Attention Needs" (2026): ``G <- alpha * A_hat G + (1 - alpha) U`` for ``T = 10`` steps, ``alpha`` learnable
(sigmoid, init 0.5), tanh attention with hidden width 128, spectral norm on the attention's linear layers.

The slices of a scan form a chain graph (edge between slices ``i`` and ``i + 1``). ``A_hat`` is its normalised
adjacency restricted to each bag's valid slices, either symmetric ``D^{-1/2} A D^{-1/2}`` (the Sm paper's, default)
or row-normalised ``D^{-1} A`` (the average of the neighbours, as the Normal Guidance public code runs it), applied as
a batched neighbour sum (never an ``N x N`` matrix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from monai_ng.networks.bag_inputs import masked_softmax
from monai_ng.networks.fused_linear import fused_linear
from monai_ng.networks.mil_network import MILNetwork, MILOutput, use_packed_path

__all__ = ["SmAPMIL", "chain_edge_weights", "chain_neighbour_weights", "chain_adjacency_apply", "chain_smooth"]

_SMOOTH_POSITIONS = ("early", "mid", "late")
_ADJACENCIES = ("symmetric", "row")


def _check_adjacency(adjacency: str, caller: str) -> None:
    if adjacency not in _ADJACENCIES:
        raise ValueError(f"{caller}: adjacency must be one of {_ADJACENCIES}, got {adjacency!r}.")


def _chain_degrees(mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(edges [B, N - 1], degree [B, N])``: 1 where both slices of edge ``(i, i + 1)`` are valid; valid neighbours."""
    edges = (mask[:, :-1] & mask[:, 1:]).to(dtype)
    return edges, F.pad(edges, (1, 0)) + F.pad(edges, (0, 1))


def chain_edge_weights(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Symmetric-normalised weights of the chain-graph edges ``(i, i + 1)`` of each bag.

    Args:
        mask: ``[B, N]`` bool, True = valid slice. An edge exists when both of its slices are valid.
        dtype: floating dtype of the result.

    Returns:
        ``[B, N - 1]``: ``1 / sqrt(deg_i * deg_{i+1})`` on existing edges, 0 elsewhere, with ``deg`` the number of
        valid neighbours (1 at a bag's ends, 0 for a bag of a single slice).
    """
    edges, degree = _chain_degrees(mask, dtype)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1.0).rsqrt(), 0.0)
    return edges * inv_sqrt[:, :-1] * inv_sqrt[:, 1:]


def chain_neighbour_weights(
    mask: Tensor, dtype: torch.dtype = torch.float32, adjacency: str = "symmetric", transpose: bool = False
) -> tuple[Tensor, Tensor]:
    """Weights with which each slice receives its two chain neighbours under ``A_hat`` (or ``A_hat^T``).

    ``(A_hat g)_{i+1}`` holds ``from_previous[i] * g_i`` and ``(A_hat g)_i`` holds ``from_next[i] * g_{i+1}``.
    Symmetric (``D^{-1/2} A D^{-1/2}``): both are :func:`chain_edge_weights`. Row (``D^{-1} A``): slice ``i``
    averages its valid neighbours, ``from_previous[i] = 1 / deg_{i+1}``, ``from_next[i] = 1 / deg_i``, so a bag's end
    slice copies its only neighbour (weight 1). ``transpose=True`` gives ``A_hat^T`` (the two swap; the symmetric
    operator is its own transpose).

    Args:
        mask: ``[B, N]`` bool, True = valid slice.
        dtype: floating dtype of the result.
        adjacency: ``"symmetric"`` or ``"row"``.
        transpose: weights of the transposed operator.

    Returns:
        ``(from_previous, from_next)``, each ``[B, N - 1]``, 0 on missing edges.
    """
    _check_adjacency(adjacency, "chain_neighbour_weights")
    if adjacency == "symmetric":
        weights = chain_edge_weights(mask, dtype)
        return weights, weights
    edges, degree = _chain_degrees(mask, dtype)
    inverse = torch.where(degree > 0, degree.clamp_min(1.0).reciprocal(), 0.0)
    from_previous, from_next = edges * inverse[:, 1:], edges * inverse[:, :-1]
    return (from_next, from_previous) if transpose else (from_previous, from_next)


def chain_adjacency_apply(g: Tensor, edge_weights: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """``A_hat @ g`` for every bag of a batch without forming ``A_hat``.

    ``(A_hat g)_i = p_{i-1} g_{i-1} + n_i g_{i+1}`` with ``(p, n)`` from :func:`chain_neighbour_weights` (a single
    tensor ``w`` from :func:`chain_edge_weights` means ``p = n = w``, the symmetric operator). A slice with no valid
    neighbour (padding, or the only slice of a bag) gets an all-zero row: ``(A_hat g)_i = 0``.

    Args:
        g: ``[B, N, F]`` node features.
        edge_weights: ``[B, N - 1]``, or the pair ``(from_previous, from_next)``, each ``[B, N - 1]``.

    Returns:
        ``[B, N, F]``.
    """
    from_prev_w, from_next_w = edge_weights if isinstance(edge_weights, tuple) else (edge_weights, edge_weights)
    from_previous = F.pad(from_prev_w.unsqueeze(-1) * g[:, :-1], (0, 0, 1, 0))  # slice i receives p_{i-1} g_{i-1}
    from_next = F.pad(from_next_w.unsqueeze(-1) * g[:, 1:], (0, 0, 0, 1))  # slice i receives n_i g_{i+1}
    return from_previous + from_next


def chain_smooth(
    u: Tensor,
    mask: Tensor,
    alpha: Tensor | float,
    num_steps: int,
    adjacency: str = "symmetric",
    transpose: bool = False,
) -> Tensor:
    """The approximate Sm operator on the slice chain: ``G_0 = U``, ``G_t = alpha A_hat G_{t-1} + (1 - alpha) U``.

    Each step is three fused passes (copy of ``(1 - alpha) U`` plus two in-place neighbour ``addcmul``), batched over
    bags; nothing ``N x N`` is formed. ``G_T = S U`` with ``S = (1 - alpha) sum_{t<T} (alpha A_hat)^t + (alpha
    A_hat)^T`` a polynomial in ``A_hat``; ``transpose=True`` applies ``S^T`` (the same polynomial in ``A_hat^T``),
    which differs from ``S`` only for the row-normalised adjacency.

    Args:
        u: ``[B, N, F]`` per-slice features (padded slices should be 0; they stay ``(1 - alpha) U`` there).
        mask: ``[B, N]`` bool, True = valid slice.
        alpha: smoothing strength in ``(0, 1)``, scalar tensor or float.
        num_steps: number of iterations ``T`` (0 returns ``U``).
        adjacency: ``"symmetric"`` (``D^{-1/2} A D^{-1/2}``) or ``"row"`` (``D^{-1} A``).
        transpose: apply the transposed operator ``S^T``.

    Returns:
        ``G_T`` ``[B, N, F]``. For a bag of one slice ``A_hat`` is 0, so ``G_T = (1 - alpha) U`` for ``T >= 1``.
    """
    _check_adjacency(adjacency, "chain_smooth")
    if num_steps == 0:
        return u
    from_previous, from_next = chain_neighbour_weights(mask, u.dtype, adjacency, transpose)
    from_previous = (alpha * from_previous).unsqueeze(-1)  # [B, N - 1, 1]
    from_next = from_previous if adjacency == "symmetric" else (alpha * from_next).unsqueeze(-1)
    anchor = (1.0 - alpha) * u
    g = u
    for _ in range(num_steps):
        nxt = anchor.clone()
        nxt[:, 1:].addcmul_(from_previous, g[:, :-1])  # slice i receives alpha p_{i-1} g_{i-1}
        nxt[:, :-1].addcmul_(from_next, g[:, 1:])  # slice i receives alpha n_i g_{i+1}
        g = nxt
    return g


class SmAPMIL(MILNetwork):
    """Attention MIL with the Sm smoothing operator over the slice chain (SmAP).

    Scores ``s = w^T tanh(V x + b) + c`` as in ABMIL, with the Sm operator applied at ``smooth_at``:

    - ``"early"`` (default, as in the Sm authors' and the Normal Guidance code): smooth the slice features,
      ``s = w^T tanh(V Sm(X) + b)``; spectral norm on ``V`` and ``w``. Sm acts along slices and ``V`` along
      features, so this is computed as ``Sm(X V^T)`` on ``hidden`` channels rather than ``D`` (same values).
    - ``"mid"``: smooth the hidden pre-activation, ``s = w^T tanh(Sm(V X))``; spectral norm on ``w``.
    - ``"late"``: smooth the scores, ``s = Sm(w^T tanh(V X))``; no spectral norm (as in the Sm authors' code).

    Attention ``a = softmax(s)`` over the valid slices; the scan logit is ``Linear(D -> 1)`` (not spectral-normed) of
    the attention-pooled features. By default these are the *unsmoothed* features ``sum_j a_j x_j`` (Sm shapes the
    attention only). The Normal Guidance public code pools the *smoothed* features ``sum_j a_j Sm(X)_j`` instead:
    ``pool_smoothed=True`` (``smooth_at="early"`` only). Writing ``Sm(X) = S X`` with ``S`` the ``N x N`` smoothing
    matrix of a bag, this is ``a^T S X = (S^T a)^T X = sum_j Sm^T(a)_j x_j``, computed by smoothing the attention (one
    channel) with the transposed operator instead of the ``D`` features (``S^T = S`` for the symmetric adjacency).

    Note: with ``spectral_norm=True`` each training-mode forward runs one power iteration that updates the norm
    estimate, so two training-mode calls on the same input differ slightly; eval mode is deterministic.

    Args:
        in_features: slice feature width ``D``.
        hidden: attention hidden width (128).
        num_steps: Sm iterations ``T`` (10).
        alpha_init: initial ``alpha = sigmoid(alpha_logit)``, in ``(0, 1)``.
        spectral_norm: apply spectral normalisation to the attention layers listed above.
        smooth_at: ``"early"``, ``"mid"`` or ``"late"``.
        pool_smoothed: pool the smoothed features ``Sm(X)`` for the scan logit, as the Normal Guidance public code does
            (only with ``smooth_at="early"``); default False pools ``X``.
        adjacency: normalisation of the chain adjacency: ``"symmetric"`` (default, ``D^{-1/2} A D^{-1/2}``, the Sm
            paper's) or ``"row"`` (``D^{-1} A``, the mean of the valid neighbours, as the Normal Guidance public code's
            approximate Sm; a bag's end slice then takes its neighbour with weight 1 instead of ``1 / sqrt(2)``).

    Attributes:
        packed: (default ``"auto"``: True on the CPU, False on other devices, see
            :func:`~monai_ng.networks.mil_network.use_packed_path`) True: run the ``D -> hidden`` projection on the
            packed valid slices ``[T, D]`` only and pool per bag (:class:`~monai_ng.networks.bag_inputs.PackedBags`);
            the Sm iterations run on the padded ``[B, N, hidden]`` grid. False runs everything on the padded ``[B, N,
            D]`` batch (the earlier path, kept for comparison and tests). Same outputs to float rounding. An execution
            option, not an architecture argument (not in :attr:`build_arguments` or checkpoints). Under
            ``torch.jit.trace`` the padded path is always used.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool (valid slices first) -> ``MILOutput(logits [B], attention
        [B, N, 1])``.
    """

    uses_slice_order = True
    packed: bool | str = "auto"  # see monai_ng.networks.mil_network.use_packed_path

    def __init__(
        self,
        in_features: int = 768,
        hidden: int = 128,
        num_steps: int = 10,
        alpha_init: float = 0.5,
        spectral_norm: bool = True,
        smooth_at: str = "early",
        pool_smoothed: bool = False,
        adjacency: str = "symmetric",
    ) -> None:
        super().__init__(
            in_features,
            hidden=hidden,
            num_steps=num_steps,
            alpha_init=alpha_init,
            spectral_norm=spectral_norm,
            smooth_at=smooth_at,
            pool_smoothed=pool_smoothed,
            adjacency=adjacency,
        )
        self.check_int("hidden", hidden)
        self.check_int("num_steps", num_steps, minimum=0)
        if not 0.0 < alpha_init < 1.0:
            raise ValueError(f"SmAPMIL: alpha_init must be in (0, 1), got {alpha_init}.")
        if smooth_at not in _SMOOTH_POSITIONS:
            raise ValueError(f"SmAPMIL: smooth_at must be one of {_SMOOTH_POSITIONS}, got {smooth_at!r}.")
        _check_adjacency(adjacency, "SmAPMIL")
        if pool_smoothed and smooth_at != "early":
            raise ValueError(
                f"SmAPMIL: pool_smoothed=True needs smooth_at='early' (smoothed features), got {smooth_at!r}."
            )
        self.pool_smoothed = bool(pool_smoothed)
        self.hidden = hidden
        self.num_steps = num_steps
        self.smooth_at = smooth_at
        self.adjacency = adjacency
        self.alpha_logit = nn.Parameter(torch.tensor(math.log(alpha_init / (1.0 - alpha_init))))
        self.attention_v: nn.Module = nn.Linear(in_features, hidden)
        self.attention_w: nn.Module = nn.Linear(hidden, 1)
        if spectral_norm and smooth_at == "early":
            self.attention_v = _spectral_norm(self.attention_v)
        if spectral_norm and smooth_at in ("early", "mid"):
            self.attention_w = _spectral_norm(self.attention_w)
        self.classifier = nn.Linear(in_features, 1)

    @property
    def alpha(self) -> Tensor:
        """The smoothing strength ``sigmoid(alpha_logit)`` (scalar tensor)."""
        return torch.sigmoid(self.alpha_logit)

    def smooth(self, u: Tensor, mask: Tensor, alpha: Tensor, transpose: bool = False) -> Tensor:
        """This network's Sm operator (or its transpose) on ``u`` ``[B, N, F]`` (zero on padding); ``[B, N, F]``."""
        return chain_smooth(u, mask, alpha, self.num_steps, self.adjacency, transpose)

    def attention_scores(self, x: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised, smoothed attention scores ``[B, N]`` for cast, zero-padded ``x`` ``[B, N, D]``."""
        alpha = self.alpha
        if self.smooth_at == "early":  # Sm(X) V^T = Sm(X V^T): smooth `hidden` channels instead of D
            h = self.smooth(fused_linear(x, self.attention_v.weight), mask, alpha)
            h = h + self.attention_v.bias
        else:
            h = fused_linear(x, self.attention_v.weight, self.attention_v.bias)
        if self.smooth_at == "mid":
            h = self.smooth(h.masked_fill(~mask.unsqueeze(-1), 0.0), mask, alpha)
        s = self.attention_w(torch.tanh(h))
        if self.smooth_at == "late":
            s = self.smooth(s.masked_fill(~mask.unsqueeze(-1), 0.0), mask, alpha)
        return s.squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Pool the slices of each bag with smoothed attention (arguments and shapes: :meth:`MILNetwork.forward`)."""
        if not use_packed_path(self.packed, x):
            # The padded path is shape-generic when traced (TorchScript export); the packed one loops over bags.
            x, mask = self.prepare(x, mask)
            attention = masked_softmax(self.attention_scores(x, mask), mask, dim=1)  # [B, N]
            if not self.pool_smoothed:
                return self.attention_pool(attention, x)
            # sum_j a_j Sm(X)_j = sum_j Sm^T(a)_j x_j; Sm^T(a) is 0 on padding
            weights = self.smooth(attention.unsqueeze(-1), mask, self.alpha, transpose=True).squeeze(-1)
            logits = self.classifier(torch.einsum("bn,bnd->bd", weights, x)).squeeze(-1)
            return MILOutput(logits=logits, attention=attention.unsqueeze(-1))
        bags = self.prepare_packed(x, mask)  # [T, D]; x may be padded [B, N, D] or packed [T, D]
        mask = bags.mask
        batch, length = bags.shape
        alpha = self.alpha
        if self.smooth_at == "early":
            projected = fused_linear(bags.x, self.attention_v.weight)  # [T, hidden], the one D-wide matmul
        elif self.smooth_at == "mid":
            projected = fused_linear(bags.x, self.attention_v.weight, self.attention_v.bias)
        if self.smooth_at == "late":
            # the tanh fused into the product
            scores = self.attention_w(fused_linear(bags.x, self.attention_v.weight, self.attention_v.bias, "tanh"))
            grid = scores.new_zeros(batch * length, 1).index_copy_(0, bags.index, scores).view(batch, length, 1)
            scores = self.smooth(grid, mask, alpha).squeeze(-1)  # [B, N]
        else:
            # the Sm iterations run on the padded [B, N, hidden] grid (zeros on padding): cheap, O(T N hidden)
            grid = projected.new_zeros(batch * length, self.hidden).index_copy_(0, bags.index, projected)
            h = self.smooth(grid.view(batch, length, self.hidden), mask, alpha)
            if self.smooth_at == "early":
                h = h + self.attention_v.bias
            scores = self.attention_w(torch.tanh(h)).squeeze(-1)  # [B, N]
        attention = masked_softmax(scores, mask, dim=1)  # [B, N], exactly 0 on padding
        weights = attention
        if self.pool_smoothed:
            weights = self.smooth(attention.unsqueeze(-1), mask, alpha, transpose=True).squeeze(-1)
        logits = self.classifier(bags.weighted_sum(bags.gather(weights))).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices, counting 2 per multiply-add.

        Counts the matrix products (attention projections, pooling, classifier). The Sm iterations
        (``O(T * N * hidden)`` neighbour sums at ``"early"``/``"mid"``, ``O(T * N)`` at ``"late"``), tanh, softmax and
        the spectral-norm power iteration are element-wise or ``O(D * hidden)`` and are ignored.
        """
        n, d, h = int(n_slices), self.in_features, self.hidden
        return 2 * n * d * h + 2 * n * h + 2 * n * d + 2 * d
