"""A linear layer with an optional fused activation, run by oneDNN on the CPU in float32.

Why this exists (issue 12, measured in ``benchmarks/bench_linear.py``; numbers in ``docs/performance.md``): the MIL
networks' cost is dominated by a few wide linear layers over every slice, e.g. ABMIL's ``D -> 128`` attention
projection on ``[T, 768]`` packed slices. On the CPU, ``torch.nn.functional.linear`` in float32 goes to the BLAS
(MKL in the PyTorch wheels), which on the 2-core AMD EPYC development machine reaches 85-99 GFLOP/s per core for that
narrow ``128``-wide output, and the element-wise ``torch.tanh`` after it costs another 15% of the product; oneDNN
(bundled with PyTorch and used by its compiler backend) runs the product with the ``tanh`` fused as a post-op at
88-101 GFLOP/s, against 65-66 for the two steps (forward, 1 thread, 2,600 and 13,000 rows). PyTorch exposes that primitive as
``torch.ops.mkldnn._linear_pointwise`` (forward only); :func:`fused_linear` wraps it with its backward.

What it computes: ``act(x @ weight^T + bias)`` with ``act`` one of ``"none"``, ``"tanh"``, ``"relu"``, exactly the
function of ``act(F.linear(x, weight, bias))``; the two differ only by float rounding (a different summation order
and ``tanh`` approximation: relative differences of order 1e-6, bounded in the tests). Gradients: ``dz = dy * act'``
from the saved output, ``dx = dz @ weight`` (oneDNN), ``dweight = dz^T @ x`` and ``dbias = sum(dz)`` (PyTorch).

When it is used: plain float32 CPU tensors, autograd or not, when oneDNN is available and enabled
(``torch.backends.mkldnn``), outside autocast, TorchScript tracing/scripting and Python dispatch modes (FLOP
counting, fake tensors). Everywhere else (CUDA, autocast, float16/bfloat16, float64, tensor subclasses, export) it is
exactly ``act(F.linear(x, weight, bias))``.
:func:`set_fused_linear_enabled` switches the oneDNN path off (e.g. to compare with the BLAS path in one process).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["fused_linear", "set_fused_linear_enabled", "fused_linear_enabled", "onednn_linear_available"]

Activation = Literal["none", "tanh", "relu"]
_ACTIVATIONS = ("none", "tanh", "relu")

_state: dict[str, bool | None] = {"enabled": True, "available": None}


def onednn_linear_available() -> bool:
    """Whether this PyTorch build runs ``torch.ops.mkldnn._linear_pointwise`` on float32 CPU tensors (probed once)."""
    if _state["available"] is None:
        ok = False
        if torch.backends.mkldnn.is_available():
            try:
                x, w = torch.ones(2, 3), torch.ones(4, 3)
                y = torch.ops.mkldnn._linear_pointwise(x, w, torch.zeros(4), "tanh", [], "")
                ok = tuple(y.shape) == (2, 4) and bool(torch.allclose(y, torch.tanh(torch.full((2, 4), 3.0))))
            except (AttributeError, RuntimeError, NotImplementedError):
                ok = False
        _state["available"] = ok
    return bool(_state["available"])


def set_fused_linear_enabled(enabled: bool) -> bool:
    """Allow (True, the default) or forbid the oneDNN path of :func:`fused_linear`; returns the previous setting."""
    previous = bool(_state["enabled"])
    _state["enabled"] = bool(enabled)
    return previous


def fused_linear_enabled() -> bool:
    """The current setting of :func:`set_fused_linear_enabled`."""
    return bool(_state["enabled"])


def _activate(y: Tensor, activation: str) -> Tensor:
    if activation == "tanh":
        return torch.tanh(y)
    if activation == "relu":
        return torch.relu(y)
    return y


def _use_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    return (
        bool(_state["enabled"])
        and type(x) is Tensor  # not a tensor subclass (e.g. MONAI's MetaTensor), which may override F.linear
        and _get_current_dispatch_mode() is None  # no FLOP counter, fake or meta tensors: they know F.linear
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and (bias is None or bias.dtype == torch.float32)
        and x.dim() >= 1
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.enabled
        and onednn_linear_available()
    )


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """``act(x @ weight^T + bias)`` by oneDNN for a 2-D ``x`` ``[M, K]`` and ``weight`` ``[O, K]`` (any strides)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, activation, [], "")


class _FusedLinear(torch.autograd.Function):
    """``act(x W^T + b)`` forward by oneDNN, backward from the saved input and output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
        y = _onednn(x, weight, bias, activation)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight, y = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.activation == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, y)
        elif ctx.activation == "relu":
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad, weight.t(), None, "none")  # [M, O] @ [O, K]
        if ctx.needs_input_grad[1]:
            if weight.shape[0] < weight.shape[1]:
                # narrow outputs (ABMIL / SmAP's 768 -> 128): [K, M] @ [M, O], transposed back, runs faster than the
                # product below; 64 bags, 2 threads: 2.57 vs 2.80 ms (20-60 slices), 13.8 vs 15.9 ms (100-300)
                grad_w = x.t().mm(grad).t()
            else:  # TransMIL's 768 -> 768 and 768 -> 2304: the two forms took the same time
                grad_w = grad.t().mm(x)  # [O, M] @ [M, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def fused_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: Activation = "none") -> Tensor:
    """``act(x @ weight^T + bias)``: :func:`torch.nn.functional.linear` followed by ``activation``, fused on the CPU.

    Args:
        x: ``[..., K]`` input.
        weight: ``[O, K]`` weight (an ``nn.Linear``'s ``weight``).
        bias: ``[O]`` bias or None.
        activation: ``"none"``, ``"tanh"`` or ``"relu"``, applied to the product.

    Returns:
        ``[..., O]``, differentiable in ``x``, ``weight`` and ``bias``.

    Raises:
        ValueError: unknown ``activation``, or shapes that do not chain (``x[..., K]`` against ``weight [O, K]``).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"fused_linear: activation must be one of {_ACTIVATIONS}, got {activation!r}.")
    if torch.jit.is_tracing() or torch.jit.is_scripting():  # export: the plain graph, shape-generic
        return _activate(F.linear(x, weight, bias), activation)
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"fused_linear: x [..., K] and weight [O, K] do not chain: x {tuple(x.shape)}, weight {tuple(weight.shape)}."
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"fused_linear: bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}.")
    if not _use_onednn(x, weight, bias):
        return _activate(F.linear(x, weight, bias), activation)
    rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    out = _FusedLinear.apply(rows, weight, bias, activation) if needs_grad else _onednn(rows, weight, bias, activation)
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], weight.shape[0])
