"""TransMIL adapted to 1D slice sequences, with exact softmax attention and a per-head localization map.

Shao et al., "TransMIL: Transformer based Correlated Multiple Instance Learning for Whole Slide Image
Classification", NeurIPS 2021, in the form used by Harvey, Loevlie & Hughes, "Normal Guidance is what Attention
Needs" (2026): a learned class token, layers of pre-LayerNorm -> multi-head attention (exact, no Nystrom) ->
residual without feed-forward, and a 1D pyramid position encoding generator (PPEG) between the first two layers. By
default the tokens are the slice embeddings themselves (768-d, 8 heads of 96, no input projection, no final
LayerNorm), as in the public code; ``hidden=...`` gives the projected variant (``Linear + ReLU``, final LayerNorm).

Batched without work on padding: the tokens of all bags are packed back to back and attention runs per bag on its
exact length (``packed``, default); the earlier path over padded bags with a key-padding mask is kept. The
localization map is the last layer's class-token query row over the slice keys, per head, renormalised over the
valid slices (the class token's own share removed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_ng.networks.bag_inputs import PackedBags, masked_softmax
from monai_ng.networks.fused_linear import fused_linear
from monai_ng.networks.mil_network import MILNetwork, MILOutput, use_packed_path

__all__ = ["TransMIL", "SlicePPEG", "ClassTokenAttentionLayer"]


class ClassTokenAttentionLayer(nn.Module):
    """Pre-LayerNorm multi-head self-attention with a residual and no feed-forward block.

    ``tokens + Dropout(W_o MHA(LN(tokens)))`` with one fused ``Linear(C -> 3C)`` for queries, keys and values.

    Args:
        dim: token width ``C``; must be divisible by ``num_heads``.
        num_heads: number of attention heads ``H``.
        dropout: dropout on the attention output before the residual (not on the attention weights).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"ClassTokenAttentionLayer: dim={dim} must be divisible by num_heads={num_heads}.")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def linear(layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(x)`` through :func:`~monai_ng.networks.fused_linear.fused_linear` (oneDNN on float32 CPU tensors)."""
        return fused_linear(x, layer.weight, layer.bias)

    def forward(self, tokens: Tensor, key_mask: Tensor, packed: bool = False) -> Tensor:
        """Update every token.

        Args:
            tokens: ``[B, L, C]``.
            key_mask: ``[B, L]`` bool, True = may be attended to; each row needs at least one True.
            packed: run the per-token work (LayerNorm, the ``C -> 3C`` and ``C -> C`` projections) on the valid
                tokens only, gathered into one ``[T, C]`` matrix, and return masked rows unchanged. Valid rows are the
                same as without packing; it saves the padding's share of the two largest matmuls (a batch of 35-slice
                bags padded to 45 spends ~22% of them on padding).

        Returns:
            ``[B, L, C]``. Rows at masked positions are meaningless (computed, or with ``packed`` the input rows);
            no valid row depends on them.
        """
        b, length, c = tokens.shape
        if not packed:
            qkv = (
                self.linear(self.qkv, self.norm(tokens))
                .view(b, length, 3, self.num_heads, self.head_dim)
                .permute(2, 0, 3, 1, 4)
            )
            q, k, v = qkv.unbind(0)  # each [B, H, L, C/H]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
            out = out.transpose(1, 2).reshape(b, length, c)
            return tokens + self.dropout(self.linear(self.proj, out))
        rows = key_mask.reshape(-1).nonzero().squeeze(1)  # [T] flat indices of the valid tokens
        flat = tokens.reshape(b * length, c)
        qkv_valid = self.linear(self.qkv, self.norm(flat.index_select(0, rows)))  # [T, 3C]
        qkv = qkv_valid.new_zeros(b * length, 3 * c).index_copy_(0, rows, qkv_valid)
        qkv = qkv.view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, L, C/H]; padded keys are zeros and masked out
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        out = out.transpose(1, 2).reshape(b * length, c).index_select(0, rows)  # [T, C]
        return flat.index_add(0, rows, self.dropout(self.linear(self.proj, out)).to(flat.dtype)).view(
            b, length, c
        )  # autocast

    def class_token_forward(self, tokens: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Update only the class token (index 0) and return its attention row, explicitly.

        Only the class-token query is formed, and the key and value projections are folded into it instead of being
        applied to every token: with ``h = LN(tokens)``, per head ``s_l = q . (W_k h_l + b_k) = (W_k^T q) . h_l +
        q . b_k`` and, because the row ``a`` sums to 1, ``sum_l a_l (W_v h_l + b_v) = W_v (sum_l a_l h_l) + b_v``.
        This is the same exact softmax attention at ``O(H L C + C^2)`` per bag instead of ``O(L C^2)``.

        Args:
            tokens: ``[B, L, C]`` with the class token at index 0.
            key_mask: ``[B, L]`` bool, True = valid key (index 0 is the class token, always valid).

        Returns:
            ``(class_token [B, C], row [B, H, L], scores [B, H, L])``: the updated class token, the class-token
            attention row over all keys (class token included, exactly 0 on masked keys) and the pre-softmax scores
            ``q . k_l / sqrt(C / H)``.
        """
        b, length, c = tokens.shape
        heads, head_dim = self.num_heads, self.head_dim
        h = self.norm(tokens)  # [B, L, C]
        w_q, w_k, w_v = self.qkv.weight.split(c)  # each [C, C]
        b_q, b_k, b_v = self.qkv.bias.split(c)
        q = F.linear(h[:, 0], w_q, b_q).view(b, heads, head_dim)
        q_in = torch.einsum("bhd,hdc->bhc", q, w_k.view(heads, head_dim, c))  # query pulled back through W_k
        key_bias = (q * b_k.view(heads, head_dim)).sum(-1, keepdim=True)  # [B, H, 1], constant over keys
        scores = (torch.bmm(q_in, h.transpose(1, 2)) + key_bias) * head_dim**-0.5  # [B, H, L]
        row = masked_softmax(scores, key_mask[:, None, :], dim=-1)
        pooled = torch.bmm(row, h)  # [B, H, C]
        out = torch.einsum("bhc,hdc->bhd", pooled, w_v.view(heads, head_dim, c)) + b_v.view(heads, head_dim)
        return tokens[:, 0] + self.dropout(self.proj(out.reshape(b, c))), row, scores

    def forward_bags(self, tokens: Tensor, lengths: list[int]) -> Tensor:
        """Update every token of bags packed back to back, attending within each bag only (no padding anywhere).

        Args:
            tokens: ``[T', C]``, the tokens of bag 0, then of bag 1, ... (class token first in each bag).
            lengths: tokens per bag (``B`` ints summing to ``T'``).

        Returns:
            ``[T', C]``. Equals :meth:`forward` on the same bags padded (valid rows); exact attention is run per bag
            on its own length (one fused ``scaled_dot_product_attention`` call per bag, no mask, no padded keys).
        """
        total, c = tokens.shape
        qkv = self.linear(self.qkv, self.norm(tokens)).view(total, 3, self.num_heads, self.head_dim)  # [T', 3, H, C/H]
        outs = []
        for block in qkv.split(lengths):  # each bag's q, k, v: strided [H, n, C/H] views, no copy
            q, k, v = block.permute(1, 2, 0, 3).unbind(0)
            # the fused CPU kernel returns [H, n, C/H] laid out as [n, H, C/H], so this reshape copies nothing
            outs.append(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(-1, c))
        return tokens + self.dropout(self.linear(self.proj, torch.cat(outs)))  # [T', C]

    def class_token_forward_bags(
        self, tokens: Tensor, class_rows: Tensor, lengths: list[int]
    ) -> tuple[Tensor, list[Tensor]]:
        """:meth:`class_token_forward` on bags packed back to back (layout of :meth:`forward_bags`).

        Args:
            tokens: ``[T', C]`` packed tokens.
            class_rows: ``[B]`` int64 row of each bag's class token in ``tokens``.
            lengths: tokens per bag (``B`` ints summing to ``T'``).

        Returns:
            ``(class_token [B, C], scores)``: the updated class tokens and, per bag, the pre-softmax scores
            ``[H, n_b]`` of the class-token query over the bag's tokens (class token first).
        """
        c = tokens.shape[1]
        heads, head_dim = self.num_heads, self.head_dim
        h = self.norm(tokens)  # [T', C]
        w_q, w_k, w_v = self.qkv.weight.split(c)
        b_q, b_k, b_v = self.qkv.bias.split(c)
        q = F.linear(h.index_select(0, class_rows), w_q, b_q).view(-1, heads, head_dim)  # [B, H, C/H]
        scale = head_dim**-0.5
        q_in = torch.einsum("bhd,hdc->bhc", q, w_k.view(heads, head_dim, c)) * scale  # query pulled back through W_k
        key_bias = (q * b_k.view(heads, head_dim)).sum(-1, keepdim=True) * scale  # [B, H, 1]
        scores, pooled = [], []
        for q_b, bias_b, h_b in zip(q_in, key_bias, h.split(lengths), strict=True):
            s_b = torch.addmm(bias_b, q_b, h_b.T)  # [H, n_b]
            scores.append(s_b)
            pooled.append(s_b.softmax(dim=-1) @ h_b)  # [H, C]
        out = torch.einsum("bhc,hdc->bhd", torch.stack(pooled), w_v.view(heads, head_dim, c)) + b_v.view(
            heads, head_dim
        )
        class_token = tokens.index_select(0, class_rows) + self.dropout(self.proj(out.reshape(-1, c)))
        return class_token, scores


class SlicePPEG(nn.Module):
    """1D pyramid position encoding generator over slices: ``x + dwconv3(x) + dwconv5(x) + dwconv7(x)``.

    The 2D PPEG of Shao et al. (NeurIPS 2021) reduced to the slice axis: depthwise ``Conv1d`` with kernels 3, 5, 7 and
    "same" zero padding. Padded slices are zeroed before the convolution, so a bag padded at its end sees exactly the
    zeros the convolution's own padding would give it alone, and re-zeroed after. For speed the three kernels and the
    identity are folded into one 7-tap depthwise kernel at each call (the same linear map; gradients reach all three).

    Args:
        dim: token width ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.conv3 = nn.Conv1d(dim, dim, 3, groups=dim)
        self.conv5 = nn.Conv1d(dim, dim, 5, groups=dim)
        self.conv7 = nn.Conv1d(dim, dim, 7, groups=dim)

    def merged_kernel(self) -> tuple[Tensor, Tensor]:
        """The folded depthwise kernel ``[C, 1, 7]`` (identity included at the centre tap) and bias ``[C]``."""
        weight = self.conv7.weight + F.pad(self.conv5.weight, (1, 1)) + F.pad(self.conv3.weight, (2, 2))
        identity = torch.zeros(7, dtype=weight.dtype, device=weight.device)
        identity[3] = 1.0
        return weight + identity, self.conv3.bias + self.conv5.bias + self.conv7.bias

    def forward(self, slices: Tensor, mask: Tensor) -> Tensor:
        """Apply the PPEG to slice tokens ``[B, N, C]`` (no class token) with ``mask`` ``[B, N]``; returns ``[B, N, C]``.

        Padded positions of the result are exactly 0.
        """
        keep = mask.unsqueeze(-1)
        weight, bias = self.merged_kernel()
        # [B, N, C] seen as [B, C, 1, N] is a channels-last 2-D image, so oneDNN's depthwise kernel runs on it without
        # layout copies (forward + backward ~2.5x faster on CPU than conv1d on the transposed [B, C, N]); same values.
        image = slices.masked_fill(~keep, 0.0).transpose(1, 2).unsqueeze(2)
        y = F.conv2d(image, weight.unsqueeze(2), bias, padding=(0, 3), groups=self.dim)
        return y.squeeze(2).transpose(1, 2).masked_fill(~keep, 0.0)

    def forward_rows(self, rows: Tensor, bags: PackedBags) -> Tensor:
        """Apply the PPEG to packed slice tokens ``[T, C]`` (no class tokens) laid out as ``bags``; returns ``[T, C]``.

        The rows go onto the zero padded ``[B, N, C]`` grid (each bag then sees the zeros of its own "same" padding)
        for one depthwise convolution, and the valid rows are read back.
        """
        batch, length = bags.shape
        weight, bias = self.merged_kernel()
        grid = rows.new_zeros(batch * length, self.dim).index_copy_(0, bags.index, rows).view(batch, length, self.dim)
        y = F.conv2d(grid.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias, padding=(0, 3), groups=self.dim)
        return y.squeeze(2).transpose(1, 2).reshape(batch * length, self.dim).index_select(0, bags.index)


class TransMIL(MILNetwork):
    """TransMIL over CT slices with exact attention, batched with a key-padding mask.

    Pipeline (default, as the Normal Guidance public code runs it): the slice embeddings are the tokens (width
    ``C = D``, no input projection); prepend a learned class token; ``num_layers`` :class:`ClassTokenAttentionLayer`;
    a :class:`SlicePPEG` on the slice tokens after the first layer (only when another layer follows it); the scan
    logit is ``Linear(C -> 1)(class token)``. The class token is the multi-head pooled embedding (heads concatenated
    then projected by the attention output projection).

    With ``hidden=C`` (an int) a ``Linear(D -> C) + ReLU`` input projection (Shao et al.'s ``_fc1``) comes first, and
    by default a final ``LayerNorm`` on the class token before the classifier (Shao et al.'s ``norm``): the projected
    variant this project used before (``hidden=128``). ``final_norm`` sets the LayerNorm explicitly.

    Localization attention ``[B, N, H]``: in the last layer, the class-token query's softmax row over the slice keys,
    per head, with the class token's own share removed and the row renormalised over the valid slices, i.e.
    ``softmax_j(q_cls . k_j / sqrt(C/H))`` over valid slices ``j`` only. The last layer computes only the class-token
    query row (its slice-token outputs would never be used), with the key and value projections folded into that
    query; earlier layers use ``scaled_dot_product_attention``.

    Args:
        in_features: slice feature width ``D``.
        hidden: ``None`` (default, the paper's): tokens are the embeddings, ``C = D`` (768 with 8 heads of 96), no
            input projection. An int ``C``: a ``Linear(D -> C) + ReLU`` input projection to width ``C``.
        num_heads: attention heads ``H`` (8 in the paper); the token width ``C`` must be divisible by it.
        num_layers: attention layers (2 in the paper), at least 1.
        dropout: dropout after the input projection (if any) and on each layer's attention output.
        final_norm: ``LayerNorm`` on the class token before the classifier. ``None`` (default): only with an input
            projection (``hidden`` given), i.e. off for the paper's model and on for the projected variant.

    Attributes:
        packed: (default ``"auto"``: True on the CPU, False on other devices, see
            :func:`~monai_ng.networks.mil_network.use_packed_path`) True keeps the tokens of all bags packed back to
            back (``[T + B, C]``): per-token layers on the valid tokens, exact attention per bag on its own length
            (:meth:`ClassTokenAttentionLayer.forward_bags`, one fused call per bag, no key mask), the PPEG on the
            padded grid, the last layer per bag (:meth:`ClassTokenAttentionLayer.class_token_forward_bags`). False:
            attention over the padded length with a key-padding mask, one call per layer (faster on a GPU). Same outputs and dropout draws (to
            float rounding). An execution option, not an architecture argument (not in :attr:`build_arguments` or
            checkpoints); under ``torch.jit.trace`` the padded path is always used.
        group_bytes: (default 24 MiB) on the CPU packed path, run the bags in consecutive groups whose ``[rows, 3C]``
            activation fits in this many bytes (:meth:`bag_groups`; ``None``: the whole batch at once). Another
            execution option: outputs are the same to float rounding.

    Shapes:
        ``x`` ``[B, N, D]`` (or packed ``[T, D]``), ``mask`` ``[B, N]`` bool (valid slices first, padding at the end) ->
        ``MILOutput(logits [B], attention [B, N, H])``.
    """

    uses_slice_order = True
    packed: bool | str = "auto"  # see monai_ng.networks.mil_network.use_packed_path
    group_bytes: int | None = 24 * 2**20  # see bag_groups

    def __init__(
        self,
        in_features: int = 768,
        hidden: int | None = None,
        num_heads: int = 8,
        num_layers: int = 2,
        dropout: float = 0.0,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__(
            in_features,
            hidden=hidden,
            num_heads=num_heads,
            num_layers=num_layers,
            dropout=dropout,
            final_norm=final_norm,
        )
        if hidden is not None:
            self.check_int("hidden", hidden)
        self.check_int("num_heads", num_heads)
        self.check_int("num_layers", num_layers)
        self.check_dropout(dropout)
        if final_norm is not None and not isinstance(final_norm, bool):
            raise TypeError(f"TransMIL: final_norm must be a bool or None, got {final_norm!r}.")
        width = self.in_features if hidden is None else hidden
        if width % num_heads != 0:
            what = f"hidden={hidden}" if hidden is not None else f"the token width {width} (= in_features)"
            raise ValueError(f"TransMIL: {what} must be divisible by num_heads={num_heads}.")
        self.hidden = width
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.projected = hidden is not None
        self.final_norm = self.projected if final_norm is None else final_norm
        # creation order kept as before the paper-width default, so a seeded projected model has the same weights
        self.input_projection = nn.Linear(in_features, width) if self.projected else None
        self.input_dropout = nn.Dropout(dropout)
        self.class_token = nn.Parameter(torch.randn(1, 1, width))
        self.layers = nn.ModuleList(ClassTokenAttentionLayer(width, num_heads, dropout) for _ in range(num_layers))
        self.ppeg = SlicePPEG(width) if num_layers >= 2 else None
        self.norm = nn.LayerNorm(width) if self.final_norm else None
        self.classifier = nn.Linear(width, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Classify each bag; the attention ``[B, N, H]`` is the last layer's per-head class-token attention over its
        slices (see :meth:`MILNetwork.forward`)."""
        if use_packed_path(self.packed, x):
            return self.forward_packed(x, mask)
        x, mask = self.prepare(x, mask)
        batch, length, _ = x.shape
        if self.input_projection is None:
            slices = x  # [B, N, C = D], zeros on padding (prepare)
        else:
            rows = mask.reshape(-1).nonzero().squeeze(1)  # the valid slices only go through the input projection
            projected = self.input_dropout(torch.relu(self.input_projection(x.reshape(batch * length, -1)[rows])))
            slices = projected.new_zeros(batch * length, self.hidden).index_copy_(0, rows, projected)
            slices = slices.view(batch, length, self.hidden)  # [B, N, C], zeros on padding
        tokens = torch.cat([self.class_token.expand(batch, -1, -1), slices], dim=1)  # [B, 1 + N, C]
        key_mask = F.pad(mask, (1, 0), value=True)  # the class token is always a valid key
        for index, layer in enumerate(self.layers[:-1]):
            tokens = layer(tokens, key_mask, packed=True)
            if index == 0 and self.ppeg is not None:
                tokens = torch.cat([tokens[:, :1], self.ppeg(tokens[:, 1:], mask)], dim=1)
        class_token, _, scores = self.layers[-1].class_token_forward(tokens, key_mask)
        attention = masked_softmax(scores[:, :, 1:], mask[:, None, :], dim=-1)  # [B, H, N], renormalised over slices
        if self.norm is not None:
            class_token = self.norm(class_token)
        logits = self.classifier(class_token).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.transpose(1, 2))

    def forward_packed(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """:meth:`forward` with every token of every bag packed back to back (``[T + B, C]``): no work on padding.

        Per-token layers run on the valid tokens, attention runs per bag on its exact length, the PPEG on the padded
        grid (one depthwise convolution), the last layer per bag; only the output attention is put back on ``[B, N]``.
        On the CPU the bags go through in consecutive groups whose largest activation fits in :attr:`group_bytes`
        (see :meth:`bag_groups`); the bags are independent, so grouping changes the outputs by float rounding at most.
        """
        bags = self.prepare_packed(x, mask)  # [T, D]; x may be padded [B, N, D] or packed [T, D]
        groups = self.bag_groups(bags)
        if len(groups) == 1:
            return self._forward_group(bags)
        outputs = [self._forward_group(group) for group in groups]
        return MILOutput(
            logits=torch.cat([out.logits for out in outputs]),
            attention=torch.cat([out.attention for out in outputs]),
        )

    def bag_groups(self, bags: PackedBags) -> list[PackedBags]:
        """The groups of consecutive bags :meth:`forward_packed` runs one after the other.

        Why: glibc hands every host allocation above its mmap threshold (at most 32 MiB) out as fresh pages and gives
        them back on ``free``, so on 64 bags of 100-300 slices each ``[T + B, 3C]`` (about 120 MB) or ``[T + B, C]``
        temporary page-faults anew at every step; in groups of at most :attr:`group_bytes` per ``[rows, 3C]``
        activation (``rows``: a group's tokens, class tokens included) they are reused from the heap instead.
        Measured on the 2-core development machine (TransMIL+NG, 64 bags of 100-300 slices, one training step):
        3.05 s in one group against 2.62 s with the default budget at 1 thread, 1.71 s against 1.44 s at 2 threads;
        on 20-60-slice bags (one ~25 MB activation) grouping gave nothing (the default budget, 2,730 tokens of 768
        float32 values, leaves most such batches whole). See ``docs/performance.md``.

        One group (the whole batch) when :attr:`group_bytes` is ``None``, off the CPU (the allocator above is the
        host's), or while training with dropout active (so that the dropout draws stay those of the padded path).

        Raises:
            ValueError: :attr:`group_bytes` is neither ``None`` nor a positive integer.
        """
        budget = self.group_bytes
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"TransMIL: group_bytes must be None or a positive int, got {budget!r}.")
        dropout_active = self.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules())
        if budget is None or bags.x.device.type != "cpu" or dropout_active:
            return [bags]
        rows = budget // (3 * self.hidden * bags.x.element_size())  # tokens: the slices and each bag's class token
        return bags.groups(max(1, rows), per_bag=1)

    def _forward_group(self, bags: PackedBags) -> MILOutput:
        """The packed forward of one group of bags (:meth:`forward_packed`)."""
        batch, length = bags.shape
        slices = bags.x
        if self.input_projection is not None:
            slices = self.input_dropout(torch.relu(self.input_projection(slices)))  # [T, C]
        lengths = [n + 1 for n in bags.lengths]  # tokens per bag, class token first
        class_token = self.class_token.view(1, self.hidden)
        tokens = torch.cat([t for rows in slices.split(bags.lengths) for t in (class_token, rows)])  # [T + B, C]
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        class_rows = torch.tensor(starts, device=tokens.device)
        slice_rows = torch.arange(slices.shape[0], device=tokens.device) + bags.bag + 1  # row of each slice token
        for index, layer in enumerate(self.layers[:-1]):
            tokens = layer.forward_bags(tokens, lengths)
            if index == 0 and self.ppeg is not None:
                encoded = self.ppeg.forward_rows(tokens.index_select(0, slice_rows), bags).to(tokens.dtype)
                # in place: no [T + B, C] copy (nothing saved for backward holds the layer's output itself)
                tokens = tokens.index_copy_(0, slice_rows, encoded)
        class_token, scores = self.layers[-1].class_token_forward_bags(tokens, class_rows, lengths)
        slice_scores = torch.cat([s[:, 1:] for s in scores], dim=1).T  # [T, H], the class token's own score removed
        grid = slice_scores.new_full((batch * length, self.num_heads), float("-inf"))
        attention = grid.index_copy(0, bags.index, slice_scores).view(batch, length, -1).softmax(dim=1)  # [B, N, H]
        if self.norm is not None:
            class_token = self.norm(class_token)
        logits = self.classifier(class_token).squeeze(-1)
        return MILOutput(logits=logits, attention=attention)

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one unpadded bag of ``n_slices`` slices, counting 2 per multiply-add.

        Counts the matrix products and the PPEG's folded 7-tap depthwise convolution as implemented here: full
        attention in all but the last layer; in the last layer only the class-token query with keys and values
        folded into it (:meth:`ClassTokenAttentionLayer.class_token_forward`), ``8 C^2 + 4 H L C``. LayerNorm,
        softmax, ReLU, residual adds and biases are ignored (``O(L C)`` each).
        """
        n, d, c = int(n_slices), self.in_features, self.hidden
        tokens = n + 1
        flops = 2 * n * d * c if self.input_projection is not None else 0  # input projection
        full_layer = 2 * tokens * c * 3 * c + 2 * 2 * tokens * tokens * c + 2 * tokens * c * c
        flops += (self.num_layers - 1) * full_layer
        if self.ppeg is not None:
            flops += 2 * n * c * 7
        # last layer, class-token query only: q, W_k^T q, the score row, the weighted token sum, W_v, W_o
        flops += 2 * c * c + 2 * c * c + 2 * 2 * self.num_heads * tokens * c + 2 * c * c + 2 * c * c
        return flops + 2 * c  # classifier
