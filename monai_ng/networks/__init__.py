"""MIL networks over CT slice embeddings, all batched over padded bags with a ``[B, N]`` validity mask.

Every network is a :class:`MILNetwork` mapping ``x`` ``[B, N, D]`` and ``mask`` ``[B, N]`` to a :class:`MILOutput`
(scan logits ``[B]``, attention ``[B, N, H]``, optional instance logits ``[B, N]``); see ``docs/networks.md``.
Checkpoints (a plain ``state_dict`` plus the build arguments) are written and read by
:mod:`monai_ng.networks.checkpoint`.
"""

from __future__ import annotations

from monai_ng.networks.abmil import ABMIL
from monai_ng.networks.centre_gaussian import CentreGaussianMIL, centre_offsets
from monai_ng.networks.checkpoint import load_mil_checkpoint, save_mil_checkpoint
from monai_ng.networks.instance_ceiling import CEILING_KERNELS, InstanceCeiling
from monai_ng.networks.max_pool import MaxPoolMIL, max_pool_localization
from monai_ng.networks.max_score_pool import MaxScorePoolMIL
from monai_ng.networks.mean_pool import MeanPoolMIL
from monai_ng.networks.mil_network import MILNetwork, MILOutput, unpack_mil_output
from monai_ng.networks.registry import MIL_NETWORKS, build_mil_network, mil_network_name
from monai_ng.networks.smap import SmAPMIL, chain_adjacency_apply, chain_edge_weights, chain_smooth
from monai_ng.networks.torchmil_adapter import TORCHMIL_MODELS, TorchMILAdapter, chain_adjacency_matrix
from monai_ng.networks.transmil import ClassTokenAttentionLayer, SlicePPEG, TransMIL

__all__ = [
    "MILNetwork",
    "MILOutput",
    "unpack_mil_output",
    "ABMIL",
    "TransMIL",
    "SlicePPEG",
    "ClassTokenAttentionLayer",
    "SmAPMIL",
    "chain_edge_weights",
    "chain_adjacency_apply",
    "chain_smooth",
    "CentreGaussianMIL",
    "centre_offsets",
    "MeanPoolMIL",
    "MaxPoolMIL",
    "max_pool_localization",
    "MaxScorePoolMIL",
    "InstanceCeiling",
    "CEILING_KERNELS",
    "TorchMILAdapter",
    "TORCHMIL_MODELS",
    "chain_adjacency_matrix",
    "MIL_NETWORKS",
    "build_mil_network",
    "mil_network_name",
    "save_mil_checkpoint",
    "load_mil_checkpoint",
]
