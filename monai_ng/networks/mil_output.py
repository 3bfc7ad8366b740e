"""The common return type of every MIL network in :mod:`monai_ng.networks`."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["MILOutput"]


class MILOutput(NamedTuple):
    """Outputs of a MIL network for a batch of ``B`` bags padded to ``N`` slices with ``H`` attention heads.

    Attributes:
        logits: ``[B]`` scan-level logit (pre-sigmoid).
        attention: ``[B, N, H]`` per-slice localization score. Exactly 0 on padded slices; each head sums to 1 over
            the valid slices of its bag.
        instance_logits: ``[B, N]`` per-slice logits, only produced by the instance-level ceiling
            (:class:`~monai_ng.networks.instance_ceiling.InstanceCeiling`); ``None`` for attention-MIL models.
    """

    logits: Tensor
    attention: Tensor
    instance_logits: Tensor | None = None
