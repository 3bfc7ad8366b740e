"""Build a MIL network by name, for configuration files, checkpoints and the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai_ng.networks.abmil import ABMIL
from monai_ng.networks.centre_gaussian import CentreGaussianMIL
from monai_ng.networks.instance_ceiling import InstanceCeiling
from monai_ng.networks.max_pool import MaxPoolMIL
from monai_ng.networks.max_score_pool import MaxScorePoolMIL
from monai_ng.networks.mean_pool import MeanPoolMIL
from monai_ng.networks.mil_network import MILNetwork
from monai_ng.networks.smap import SmAPMIL
from monai_ng.networks.torchmil_adapter import TorchMILAdapter
from monai_ng.networks.transmil import TransMIL

__all__ = ["MIL_NETWORKS", "build_mil_network", "mil_network_name"]


def _gated_abmil(in_features: int, **kwargs: Any) -> ABMIL:
    if "gated" in kwargs:
        raise ValueError("build_mil_network: 'abmil_gated' is always gated; do not pass gated=...; use 'abmil'.")
    return ABMIL(in_features, gated=True, **kwargs)


MIL_NETWORKS: dict[str, Callable[..., MILNetwork]] = {
    "abmil": ABMIL,
    "abmil_gated": _gated_abmil,
    "transmil": TransMIL,
    "smap": SmAPMIL,
    "centre_gaussian": CentreGaussianMIL,
    "mean_pool": MeanPoolMIL,
    "max_pool": MaxPoolMIL,
    "instance_ceiling": InstanceCeiling,
    "max_score_pool": MaxScorePoolMIL,
    "torchmil": TorchMILAdapter,
}
"""Registered names and their constructors (each called as ``constructor(in_features, **kwargs)``); each name is
also the name of the module that defines the network (``abmil_gated`` is ``abmil`` with ``gated=True``; ``torchmil``, a
model of the optional ``torchmil`` library, is defined in ``torchmil_adapter``)."""


def build_mil_network(name: str, in_features: int, **kwargs: Any) -> MILNetwork:
    """Construct a MIL network by name.

    Args:
        name: one of ``abmil``, ``abmil_gated``, ``transmil``, ``smap``, ``centre_gaussian``, ``mean_pool``,
            ``max_pool``, ``instance_ceiling``, ``max_score_pool``, ``torchmil`` (needs the optional ``torchmil``
            package; ``model="ABMIL"``, ``model_kwargs={...}``).
        in_features: slice feature width ``D`` (768 for ViT-B/16 CLS embeddings).
        **kwargs: keyword arguments of the chosen class (e.g. ``hidden=128``, ``num_heads=8``, ``kernel_size=35``).

    Returns:
        The network; its ``forward(x [B, N, D], mask [B, N] | None)`` returns a
        :class:`~monai_ng.networks.mil_network.MILOutput`.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or invalid ``in_features``.
        TypeError: a keyword argument the chosen class does not accept.
    """
    if name not in MIL_NETWORKS:
        raise ValueError(f"build_mil_network: unknown network {name!r}; valid names: {', '.join(MIL_NETWORKS)}.")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"build_mil_network: in_features must be a positive int, got {in_features!r}.")
    return MIL_NETWORKS[name](in_features, **kwargs)


def mil_network_name(network: MILNetwork) -> str:
    """The registered name that builds ``network``'s class (``"abmil"`` for every :class:`ABMIL`).

    Raises:
        TypeError: ``network``'s class is not registered in :data:`MIL_NETWORKS`.
    """
    for name, constructor in MIL_NETWORKS.items():
        if constructor is type(network):
            return name
    raise TypeError(
        f"{type(network).__name__} is not a registered MIL network; registered: "
        f"{', '.join(sorted({c.__name__ for c in MIL_NETWORKS.values() if isinstance(c, type)}))}."
    )
