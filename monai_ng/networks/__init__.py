"""MIL networks over CT slice embeddings, all batched over padded bags with a ``[B, N]`` validity mask.

Every network maps ``x`` ``[B, N, D]`` and ``mask`` ``[B, N]`` to a :class:`MILOutput` (scan logits ``[B]``,
attention ``[B, N, H]``, optional instance logits ``[B, N]``); see ``docs/networks.md``.
"""

from __future__ import annotations

from monai_ng.networks.abmil import AttentionMIL
from monai_ng.networks.baselines import CentreGaussianMIL, MaxPoolMIL, MeanPoolMIL, centre_offsets
from monai_ng.networks.factory import MIL_NETWORKS, build_mil_network
from monai_ng.networks.instance_ceiling import InstanceCeiling
from monai_ng.networks.mil_output import MILOutput
from monai_ng.networks.smooth_attention import (
    SmoothAttentionMIL,
    chain_adjacency_apply,
    chain_edge_weights,
    chain_smooth,
)
from monai_ng.networks.transmil import ClassTokenAttentionLayer, SlicePPEG, SliceTransMIL

# Placeholder: the frozen ViT encoder export (`monai_ng.networks.encoder`) is added by its owner, not here.

__all__ = [
    "MILOutput",
    "AttentionMIL",
    "SliceTransMIL",
    "SlicePPEG",
    "ClassTokenAttentionLayer",
    "SmoothAttentionMIL",
    "chain_edge_weights",
    "chain_adjacency_apply",
    "chain_smooth",
    "CentreGaussianMIL",
    "MeanPoolMIL",
    "MaxPoolMIL",
    "centre_offsets",
    "InstanceCeiling",
    "MIL_NETWORKS",
    "build_mil_network",
]
