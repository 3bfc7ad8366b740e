"""Build a MIL network by name, for configuration files and the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from monai_ng.networks.abmil import AttentionMIL
from monai_ng.networks.baselines import CentreGaussianMIL, MaxPoolMIL, MeanPoolMIL
from monai_ng.networks.instance_ceiling import InstanceCeiling
from monai_ng.networks.smooth_attention import SmoothAttentionMIL
from monai_ng.networks.transmil import SliceTransMIL

__all__ = ["MIL_NETWORKS", "build_mil_network"]


def _gated_abmil(in_features: int, **kwargs: Any) -> AttentionMIL:
    if "gated" in kwargs:
        raise ValueError("build_mil_network: 'abmil_gated' is always gated; do not pass gated=...; use 'abmil'.")
    return AttentionMIL(in_features, gated=True, **kwargs)


MIL_NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "abmil": AttentionMIL,
    "abmil_gated": _gated_abmil,
    "transmil": SliceTransMIL,
    "smap": SmoothAttentionMIL,
    "centre": CentreGaussianMIL,
    "mean": MeanPoolMIL,
    "max": MaxPoolMIL,
    "ceiling": InstanceCeiling,
}
"""Registered names and their constructors (each called as ``constructor(in_features, **kwargs)``)."""


def build_mil_network(name: str, in_features: int, **kwargs: Any) -> nn.Module:
    """Construct a MIL network by name.

    Args:
        name: one of ``abmil``, ``abmil_gated``, ``transmil``, ``smap``, ``centre``, ``mean``, ``max``, ``ceiling``.
        in_features: slice feature width ``D`` (768 for ViT-B/16 CLS embeddings).
        **kwargs: keyword arguments of the chosen class (e.g. ``hidden=128``, ``num_heads=8``, ``kernel_size=35``).

    Returns:
        The network; its ``forward(x [B, N, D], mask [B, N] | None)`` returns a
        :class:`~monai_ng.networks.mil_output.MILOutput`.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or invalid ``in_features``.
        TypeError: a keyword argument the chosen class does not accept.
    """
    if name not in MIL_NETWORKS:
        raise ValueError(f"build_mil_network: unknown network {name!r}; valid names: {', '.join(MIL_NETWORKS)}.")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"build_mil_network: in_features must be a positive int, got {in_features!r}.")
    return MIL_NETWORKS[name](in_features, **kwargs)
