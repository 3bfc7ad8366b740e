"""The contract every MIL network of :mod:`monai_ng.networks` keeps: :class:`MILNetwork` and its :class:`MILOutput`.

A network maps bags, padded ``x`` ``[B, N, D]`` or packed ``x`` ``[T, D]`` (the valid slices only), and their validity
``mask`` ``[B, N]`` to a :class:`MILOutput`. The base class holds what all networks share: argument checks, the input
checks (:func:`~monai_ng.networks.bag_inputs.prepare_bag`, :func:`~monai_ng.networks.bag_inputs.prepare_packed_bags`),
the attention-pooling scan head, the FLOP count interface and the build arguments a checkpoint needs to rebuild the
network (:mod:`monai_ng.networks.checkpoint`).
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from monai_ng.networks.bag_inputs import PackedBags, prepare_bag, prepare_packed_bags

__all__ = ["MILOutput", "MILNetwork", "LinearHeadMIL", "unpack_mil_output", "use_packed_path"]


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

    def to_tensor(self) -> Tensor:
        """Pack into one tensor ``[B, 1 + N]``: column 0 the scan logit, columns ``1..N`` the head-averaged attention.

        This is the single-tensor form MONAI bundle tooling (``verify_net_in_out``, ``ckpt_export``) needs; per-head
        attention and instance logits are not kept (:func:`unpack_mil_output` reads it back as one head).
        """
        return torch.cat([self.logits.unsqueeze(-1), self.attention.mean(dim=-1)], dim=-1)


def unpack_mil_output(pred: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(logits [B], attention [B, N, H], instance_logits [B, N] or None)`` from a network's output.

    Accepts a :class:`MILOutput` (or any object with ``logits`` and ``attention``), a 2- or 3-tuple, or the packed
    tensor ``[B, 1 + N]`` of :meth:`MILOutput.to_tensor` (read back as one attention head).

    Raises:
        TypeError: ``pred`` is none of these.
    """
    if hasattr(pred, "logits") and hasattr(pred, "attention"):
        return pred.logits, pred.attention, getattr(pred, "instance_logits", None)
    if isinstance(pred, (tuple, list)) and len(pred) in (2, 3):
        return pred[0], pred[1], pred[2] if len(pred) == 3 else None
    if isinstance(pred, Tensor) and pred.ndim == 2 and pred.shape[1] >= 2:
        return pred[:, 0], pred[:, 1:].unsqueeze(-1), None
    raise TypeError(f"expected a MIL network output (logits, attention[, instance_logits]), got {type(pred).__name__}")


def use_packed_path(packed: bool | str, x: Tensor) -> bool:
    """Whether a network whose execution option ``packed`` is set so runs its packed path on the batch ``x``.

    The packed path runs per-slice layers on the ``[T, D]`` valid slices only and loops over bags where a layer needs
    a bag's own length (softmax, attention); the padded path runs every layer once on the ``[B, N, D]`` grid.

    Args:
        packed: ``True`` / ``False`` force one path; ``"auto"`` takes the packed path on the CPU and the padded grid
            on other devices. On the CPU the work on padding costs time in proportion, while on a GPU the per-bag
            calls are launch-bound: on an H200 (bf16 autocast, 64-bag batches, ``docs/performance.md``) the padded
            grid ran ABMIL(+NG) 1.2-2.8x, SmAP(+NG) 1.1-1.9x and TransMIL(+NG) 2.6-9.1x faster than the packed path.
        x: the batch (its device decides ``"auto"``).

    Returns:
        True for the packed path. Always False under ``torch.jit`` tracing or scripting (the padded path is
        shape-generic there).

    Raises:
        ValueError: ``packed`` is not True, False or ``"auto"``.
    """
    if packed not in (True, False, "auto"):
        raise ValueError(f"packed must be True, False or 'auto', got {packed!r}.")
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if packed == "auto":
        return x.device.type == "cpu"
    return bool(packed)


class MILNetwork(nn.Module):
    """Base class of the MIL networks: ``forward(x [B, N, D] or [T, D], mask [B, N] | None) -> MILOutput``.

    A subclass passes its constructor arguments to ``super().__init__(in_features, **hyperparameters)`` first, creates
    its layers (the scan head ``self.classifier``, whose weight dtype is the compute dtype, last), and implements
    :meth:`forward` (starting with :meth:`prepare`, or :meth:`prepare_packed` for a path that runs on the valid slices
    only) and :meth:`flops_per_bag`. The recorded arguments are
    :attr:`build_arguments`: ``type(net)(**net.build_arguments)`` builds the same architecture, which is how
    :func:`monai_ng.networks.checkpoint.load_mil_checkpoint` rebuilds a saved network.

    Args:
        in_features: slice feature width ``D``.
        **hyperparameters: the subclass's other constructor arguments, by name.

    Attributes:
        uses_slice_order: class flag; True for networks that use the slice order (convolutions, chain graphs,
            positions): their bags' valid slices must come first (padding only at the end).
        num_heads: attention heads ``H`` of the output.
    """

    uses_slice_order: ClassVar[bool] = False
    classifier: nn.Module

    def __init__(self, in_features: int, **hyperparameters: Any) -> None:
        super().__init__()
        self.check_int("in_features", in_features)
        self.in_features = int(in_features)
        self.num_heads = 1
        self.tensor_output = False
        self._build_arguments: dict[str, Any] = {"in_features": self.in_features, **hyperparameters}

    def with_tensor_output(self, enabled: bool = True) -> MILNetwork:
        """Make calls return :meth:`MILOutput.to_tensor`'s ``[B, 1 + N]`` tensor instead of a :class:`MILOutput`.

        For MONAI bundles: ``verify_net_in_out`` and TorchScript/ONNX export need one tensor out. The state dict is
        unchanged, so ``models/model.pt`` is the same either way. Returns ``self`` (usable in a config expression).
        """
        self.tensor_output = bool(enabled)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(*args, **kwargs)
        return out.to_tensor() if self.tensor_output else out

    @property
    def build_arguments(self) -> dict[str, Any]:
        """Constructor keyword arguments (``in_features`` included) that rebuild this architecture."""
        return dict(self._build_arguments)

    def check_int(self, name: str, value: Any, minimum: int = 1) -> None:
        """Raise unless ``value`` is an integer ``>= minimum``; the message names the network and the argument."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{type(self).__name__}: {name} must be an integer, got {value!r}.")
        if value < minimum:
            raise ValueError(f"{type(self).__name__}: {name} must be >= {minimum}, got {value}.")

    def check_dropout(self, dropout: float) -> None:
        """Raise unless ``0 <= dropout < 1``."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}.")

    def prepare(self, x: Tensor, mask: Tensor | None, zero_padding: bool = True) -> tuple[Tensor, Tensor]:
        """Check a batch (padded or packed), return it padded in the scan head's dtype with zeroed padded slices.

        Args:
            x: ``[B, N, D]`` (padded) or ``[T, D]`` (packed, ``mask`` required) floating-point slice features.
            mask: ``[B, N]`` bool, True = valid slice; ``None`` = all valid (padded ``x`` only).
            zero_padding: False returns a padded ``x`` uncast and untouched (a packed ``x`` always comes back as the
                zero-padded grid).

        Returns:
            ``(x [B, N, D], mask [B, N])``; see :func:`~monai_ng.networks.bag_inputs.prepare_bag` for the checks.
        """
        return prepare_bag(
            x,
            mask,
            self.in_features,
            self.classifier.weight.dtype,
            model=type(self).__name__,
            require_prefix=self.uses_slice_order,
            zero_padding=zero_padding,
        )

    def prepare_packed(self, x: Tensor, mask: Tensor | None) -> PackedBags:
        """Check a batch (padded or packed) as :meth:`prepare` does and return its valid slices packed ``[T, D]``.

        Padded ``x`` ``[B, N, D]``: the valid rows are gathered once; packed ``x`` ``[T, D]`` is used as it is (cast to
        the scan head's dtype). See :func:`~monai_ng.networks.bag_inputs.prepare_packed_bags`.

        Returns:
            :class:`~monai_ng.networks.bag_inputs.PackedBags` (rows ``[T, D]``, their grid positions, bag lengths and
            the mask ``[B, N]``).
        """
        return prepare_packed_bags(
            x,
            mask,
            self.in_features,
            self.classifier.weight.dtype,
            model=type(self).__name__,
            require_prefix=self.uses_slice_order,
        )

    def attention_pool(self, attention: Tensor, x: Tensor) -> MILOutput:
        """Single-head attention pooling head: scan logit ``classifier(sum_j a_j x_j)``.

        Args:
            attention: ``[B, N]`` attention, 0 on padded slices.
            x: ``[B, N, D]`` prepared features.

        Returns:
            ``MILOutput(logits [B], attention [B, N, 1])``.
        """
        pooled = torch.einsum("bn,bnd->bd", attention, x)  # [B, D]
        logits = self.classifier(pooled).squeeze(-1)
        return MILOutput(logits=logits, attention=attention.unsqueeze(-1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:  # pragma: no cover - abstract
        """Score the bags (every network's ``forward``; each starts with :meth:`prepare`).

        Args:
            x: ``[B, N, D]`` padded slice features, or ``[T, D]`` packed ones: the ``T`` valid slices, row ``t`` the
                ``t``-th True entry of ``mask`` in row-major order (:func:`monai_ng.data.collate_packed_bags`). Cast to
                the scan head's dtype. Both layouts give the same outputs.
            mask: ``[B, N]`` bool, True = valid slice; ``None`` = all valid (padded ``x`` only). Networks with
                :attr:`uses_slice_order` need each bag's valid slices first.

        Returns:
            ``MILOutput(logits [B], attention [B, N, H])`` (``H = 1`` but for multi-head networks).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def flops_per_bag(self, n_slices: int) -> int:  # pragma: no cover - abstract
        """Forward FLOPs for one unpadded bag of ``n_slices`` slices, 2 per multiply-add, matrix products only."""
        raise NotImplementedError(f"{type(self).__name__} must implement flops_per_bag")


class LinearHeadMIL(MILNetwork):
    """A MIL network whose only layer is its scan head ``classifier = Linear(D -> 1)`` (the pooling baselines).

    Subclasses implement :meth:`forward` (how the slices are pooled) and :meth:`flops_per_bag`.

    Args:
        in_features: slice feature width ``D``.

    Shapes:
        ``x`` ``[B, N, D]``, ``mask`` ``[B, N]`` bool -> ``MILOutput(logits [B], attention [B, N, 1])``.
    """

    def __init__(self, in_features: int = 768) -> None:
        super().__init__(in_features)
        self.classifier = nn.Linear(in_features, 1)
