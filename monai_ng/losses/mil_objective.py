"""The training objective of Normal Guidance MIL: BCE + lambda * NG + (alpha / 2) * sum |theta|.

Reference: E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs" (2026), where the scan
BCE is combined with the NG penalty on attention and an L1 penalty on all parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_ng.losses.head_diversity import head_similarity
from monai_ng.losses.normal_guidance import NormalGuidanceLoss
from monai_ng.networks.mil_network import unpack_mil_output

__all__ = ["LossTerms", "MILObjective"]


class LossTerms(Mapping[str, float]):
    """The detached terms of one objective call, read as Python floats only when a value is asked for.

    Converting a CUDA tensor to a float waits for the GPU; doing it for every term of every training step would stall
    the host before ``backward`` is even queued. This mapping keeps the detached tensors and converts (once, cached)
    on access, so a step that nobody logs costs no synchronisation.

    Args:
        terms: term name -> detached 0-d tensor.
    """

    def __init__(self, terms: Mapping[str, Tensor] | None = None) -> None:
        self._tensors = dict(terms or {})
        self._floats: dict[str, float] = {}

    def __getitem__(self, key: str) -> float:
        if key not in self._floats:
            self._floats[key] = float(self._tensors[key])
        return self._floats[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"LossTerms({ {k: self[k] for k in self} })"


class MILObjective(nn.Module):
    """``scan_weight`` * scan BCE + ``ng_weight`` * NG + (``l1_weight`` / 2) * sum |theta| (+ optional slice BCE and
    head-similarity terms).

    Used as the ``loss_function`` of a MONAI ``SupervisedTrainer``: it is called as ``objective(pred, target)``
    where ``pred`` is the network's ``MILOutput`` and ``target`` the dict built by
    :func:`monai_ng.engines.prepare_bag_batch` (``label`` ``[B]``, ``mask`` ``[B, N]``, ``slice_labels`` ``[B, N]``).

    Args:
        ng_weight: lambda, the weight of the NG penalty (0 disables it; the paper's default is 1).
        divergence: NG divergence, see :class:`NormalGuidanceLoss`.
        guide: which bags NG guides, see :class:`NormalGuidanceLoss`.
        l1_weight: alpha of the (alpha / 2) * sum |theta| penalty over all parameters of ``network``.
        network: the module whose parameters the L1 penalty covers (required when ``l1_weight > 0``).
        instance_weight: weight of a per-slice BCE on ``instance_logits`` against known slice labels (the
            instance-level ceiling; slices labelled -1 and padding are ignored).
        pos_weight: optional positive-class weight of the scan BCE.
        scan_weight: weight of the scan BCE (1 for every scan-label model). The paper's instance-level ceiling is
            trained on the slice BCE only (``scan_weight=0``, ``instance_weight=1``, as the public code does);
            ``scan_weight=1`` with ``instance_weight=1`` is this project's earlier scan + slice BCE ceiling. With 0 the
            scan BCE is still computed and logged (``last_terms["bce"]``) but adds nothing to the loss.
        ng_heads: ``"each"`` guides every attention head toward its own normal (multi-head NG: several foci, like a
            Gaussian mixture); ``"mean"`` guides the head-averaged attention toward one normal (single-focus NG).
        eps: NG clamp.
        reference: NG reference, ``"normal"`` (the paper) or ``"mixture"`` (beyond the paper), see
            :class:`NormalGuidanceLoss`.
        components: mixture components of ``reference="mixture"``.
        em_steps: EM steps of ``reference="mixture"``.
        head_diversity_weight: weight of the mean pairwise cosine similarity of the attention heads
            (:func:`~monai_ng.losses.head_diversity.head_similarity`, mean over the bags of the batch; beyond the
            paper, against the collapse of multi-head NG onto one focus). 0 (default) disables it; it is 0 for
            one-head networks.

    After each call ``last_terms`` holds the detached terms (``bce``, ``ng``, ``l1``, ``instance``,
    ``head_similarity``, ``total``) as a :class:`LossTerms` mapping to floats, converted only when read (no GPU
    synchronisation per step).
    """

    def __init__(
        self,
        ng_weight: float = 1.0,
        divergence: str = "forward_kl",
        guide: str = "all",
        l1_weight: float = 0.0,
        network: nn.Module | None = None,
        instance_weight: float = 0.0,
        pos_weight: float | None = None,
        ng_heads: str = "each",
        eps: float = 1e-6,
        scan_weight: float = 1.0,
        reference: str = "normal",
        components: int = 2,
        em_steps: int = 5,
        head_diversity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        weights = (
            ("ng_weight", ng_weight),
            ("l1_weight", l1_weight),
            ("instance_weight", instance_weight),
            ("scan_weight", scan_weight),
            ("head_diversity_weight", head_diversity_weight),
        )
        for name, value in weights:
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if l1_weight > 0 and network is None:
            raise ValueError("l1_weight > 0 needs the network whose parameters it penalises (network=...)")
        if ng_heads not in ("each", "mean"):
            raise ValueError(f"ng_heads must be 'each' or 'mean', got {ng_heads!r}")
        self.ng_heads = ng_heads
        self.ng_weight = float(ng_weight)
        self.l1_weight = float(l1_weight)
        self.instance_weight = float(instance_weight)
        self.scan_weight = float(scan_weight)
        self.head_diversity_weight = float(head_diversity_weight)
        self.ng = NormalGuidanceLoss(
            divergence=divergence, eps=eps, guide=guide, reference=reference, components=components, em_steps=em_steps
        )
        # keep the network out of this module's children so it is not saved twice in checkpoints
        self._network = [network] if network is not None else []
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.last_terms: LossTerms = LossTerms()

    def forward(self, pred: Any, target: Mapping[str, Tensor]) -> Tensor:
        logits, attention, instance_logits = unpack_mil_output(pred)
        if not isinstance(target, Mapping) or "label" not in target or "mask" not in target:
            raise TypeError("target must be a dict with 'label' [B] and 'mask' [B, N] (see prepare_bag_batch)")
        labels = target["label"].to(logits.dtype).reshape(-1)
        mask = target["mask"]
        if labels.shape != logits.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
        pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pw)
        total = bce if self.scan_weight == 1.0 else (bce * self.scan_weight if self.scan_weight > 0 else None)
        terms = {"bce": bce.detach()}
        if self.ng_weight > 0:
            guided = attention.mean(dim=-1) if self.ng_heads == "mean" and attention.dim() == 3 else attention
            ng = self.ng(guided, mask, labels)
            total = _add(total, self.ng_weight * ng)
            terms["ng"] = ng.detach()
        if self.head_diversity_weight > 0:
            similarity = head_similarity(attention, mask).mean()
            total = _add(total, self.head_diversity_weight * similarity)
            terms["head_similarity"] = similarity.detach()
        if self.l1_weight > 0:
            l1 = sum(p.abs().sum() for p in self._network[0].parameters() if p.requires_grad)
            total = _add(total, 0.5 * self.l1_weight * l1)
            terms["l1"] = l1.detach()
        if self.instance_weight > 0:
            if instance_logits is None:
                raise ValueError("instance_weight > 0 needs a network that returns instance_logits (the ceiling)")
            sl = target.get("slice_labels")
            if sl is None:
                raise ValueError("instance_weight > 0 needs slice_labels in the target")
            known = mask & (sl >= 0)
            if known.any():
                inst = F.binary_cross_entropy_with_logits(instance_logits[known], sl[known].to(instance_logits.dtype))
            else:
                inst = instance_logits.sum() * 0.0
            total = _add(total, self.instance_weight * inst)
            terms["instance"] = inst.detach()
        if total is None:  # every term weighted 0: a zero that keeps the graph
            total = logits.sum() * 0.0
        terms["total"] = total.detach()
        self.last_terms = LossTerms(terms)
        return total


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term
