"""Adapter: an attention MIL model of the ``torchmil`` library as a :class:`MILNetwork`, so NG can train it.

``torchmil`` (Castro-Macías et al., "torchmil: A PyTorch-based library for deep Multiple Instance Learning", 2025) is an
optional dependency: ``pip install "monai-ng[torchmil]"``. Its attention models pool a bag as ``z = sum_j s_j x_j``
with ``s = softmax(f)`` over the valid instances and return the pre-softmax scores ``f`` ``[B, N]`` with
``return_att=True``. The adapter passes our padded batch (``x`` ``[B, N, D]``, ``mask`` ``[B, N]``) to the model and
returns its scan logits with ``s`` as the attention (``[B, N, 1]``, a softmax over each bag's valid slices, exactly 0
on padding): the very weights the model pools with, so :class:`~monai_ng.losses.NormalGuidanceLoss` guides the
model's own pooling.

Supported models (:data:`TORCHMIL_MODELS`): ``ABMIL`` (Ilse et al., ICML 2018), ``TransformerABMIL`` (a transformer
encoder before ABMIL pooling), ``SmABMIL`` and ``SmTransformerABMIL`` (Castro-Macías et al., "Sm: enhanced
localization in Multiple Instance Learning for medical imaging classification", NeurIPS 2024). The ``Sm`` models take
an adjacency matrix: the adapter passes the slice chain graph (edges ``(j, j + 1)`` between valid slices), normalised
``D^{-1/2} A D^{-1/2}`` with a self-loop for a one-slice bag, as ``torchmil``'s CT-scan dataset builds it; their bags
need their valid slices first.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from monai_ng.networks.bag_inputs import bag_lengths, masked_softmax
from monai_ng.networks.mil_network import MILNetwork, MILOutput
from monai_ng.networks.smap import chain_edge_weights

__all__ = ["TORCHMIL_MODELS", "TorchMILAdapter", "chain_adjacency_matrix"]

TORCHMIL_MODELS = ("ABMIL", "TransformerABMIL", "SmABMIL", "SmTransformerABMIL")
"""``torchmil.models`` classes the adapter supports: attention pooling whose scores come back with ``return_att``."""

_WITH_ADJACENCY = ("SmABMIL", "SmTransformerABMIL")
_SET_BY_ADAPTER = ("in_shape", "feat_ext", "criterion")


def _torchmil_models() -> Any:
    try:
        return importlib.import_module("torchmil.models")
    except ImportError as exc:
        raise ImportError(
            "TorchMILAdapter needs the optional dependency torchmil: pip install 'monai-ng[torchmil]' "
            "(or pip install torchmil)."
        ) from exc


def chain_adjacency_matrix(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Dense normalised adjacency of the slice chain graph of each bag, ``[B, N, N]``.

    ``A_hat[j, j + 1] = A_hat[j + 1, j] = 1 / sqrt(deg_j deg_{j+1})`` between valid neighbours
    (:func:`~monai_ng.networks.smap.chain_edge_weights`), 1 on the diagonal of a one-slice bag, 0 elsewhere.

    Args:
        mask: ``[B, N]`` bool, True = valid slice.
        dtype: floating dtype of the result.
    """
    weights = chain_edge_weights(mask, dtype)  # [B, N - 1]
    adjacency = torch.diag_embed(weights, offset=1) + torch.diag_embed(weights, offset=-1)
    single = (bag_lengths(mask) == 1).to(dtype).unsqueeze(-1) * mask.to(dtype)  # [B, N]: the lone valid slice
    return adjacency + torch.diag_embed(single)


class TorchMILAdapter(MILNetwork):
    """A ``torchmil`` attention MIL model behind the :class:`MILNetwork` interface.

    Args:
        in_features: slice feature width ``D`` (the model is built with ``in_shape=(D,)``).
        model: a name of :data:`TORCHMIL_MODELS`.
        model_kwargs: keyword arguments of that ``torchmil.models`` class (e.g. ``{"att_dim": 128}`` for ``ABMIL``,
            ``{"transf_n_heads": 4}`` for ``TransformerABMIL``), JSON-serialisable so that checkpoints rebuild the
            network; ``in_shape``, ``feat_ext`` and ``criterion`` are the adapter's (the features are the stored
            embeddings, and the loss is :class:`~monai_ng.losses.MILObjective`).

    Attributes:
        model: the wrapped ``torchmil`` module (its parameters are the adapter's).

    Raises:
        ImportError: ``torchmil`` is not installed (the message names the ``torchmil`` extra).
        ValueError: an unsupported ``model``, or a key of ``model_kwargs`` the adapter sets.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool -> ``MILOutput(logits [B], attention [B, N, 1])``.
    """

    def __init__(
        self, in_features: int = 768, model: str = "ABMIL", model_kwargs: dict[str, Any] | None = None
    ) -> None:
        kwargs = dict(model_kwargs or {})
        super().__init__(in_features, model=model, model_kwargs=kwargs)
        if model not in TORCHMIL_MODELS:
            raise ValueError(f"TorchMILAdapter: model must be one of {TORCHMIL_MODELS}, got {model!r}.")
        fixed = sorted(set(kwargs) & set(_SET_BY_ADAPTER))
        if fixed:
            raise ValueError(f"TorchMILAdapter: model_kwargs may not set {fixed}; the adapter sets them.")
        self.model_name = model
        self.uses_adjacency = model in _WITH_ADJACENCY
        self.uses_slice_order = self.uses_adjacency  # the chain graph needs the valid slices first
        self.model = getattr(_torchmil_models(), model)(in_shape=(self.in_features,), **kwargs)

    @property
    def classifier(self) -> nn.Module:  # type: ignore[override]
        """The wrapped model's scan head ``Linear`` (``classifier`` or ``last_layer``, unwrapped from ``torchmil``'s
        ``LazyLinear``); its weight dtype is the compute dtype."""
        head = getattr(self.model, "classifier", None)
        head = self.model.last_layer if head is None else head
        return getattr(head, "module", head)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Score the bags with the wrapped model (arguments and shapes: :meth:`MILNetwork.forward`)."""
        x, mask = self.prepare(x, mask)
        if self.uses_adjacency:
            adjacency = chain_adjacency_matrix(mask, x.dtype)
            logits, scores = self.model(x, adjacency, mask, return_att=True)
        else:
            logits, scores = self.model(x, mask, return_att=True)
        attention = masked_softmax(scores, mask, dim=1)  # the model's pooling weights, exactly 0 on padding
        return MILOutput(logits=logits.reshape(-1), attention=attention.unsqueeze(-1))

    def flops_per_bag(self, n_slices: int) -> int:
        """Forward FLOPs for one bag of ``n_slices`` slices, counted (2 per multiply-add) by running the model once.

        A ``torchmil`` model's layers are not known here, so the matrix products are counted with
        :class:`torch.utils.flop_counter.FlopCounterMode` on a zero bag rather than derived.
        """
        self.check_int("n_slices", n_slices)
        weight = self.classifier.weight
        x = torch.zeros(1, int(n_slices), self.in_features, dtype=weight.dtype, device=weight.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.forward(x)
        return int(counter.get_total_flops())
