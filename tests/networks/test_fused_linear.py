"""``fused_linear``: ``act(x W^T + b)`` by oneDNN on float32 CPU tensors, ``act(F.linear)`` everywhere else.

Values and gradients are checked against a float64 evaluation of the same formula (an independent reference), the
fallbacks against ``F.linear`` bit for bit, and the networks that use it against their BLAS path.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from monai_ng.networks import build_mil_network
from monai_ng.networks.fused_linear import (
    fused_linear,
    fused_linear_enabled,
    onednn_linear_available,
    set_fused_linear_enabled,
)

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this PyTorch build has no oneDNN linear")
ACTIVATIONS = {"none": lambda y: y, "tanh": torch.tanh, "relu": torch.relu}


@pytest.fixture
def blas_only():
    previous = set_fused_linear_enabled(False)
    yield
    set_fused_linear_enabled(previous)


def operands(m: int = 53, k: int = 40, o: int = 12, seed: int = 0, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(o, k, generator=gen) / k**0.5
    b = torch.randn(o, generator=gen) if bias else None
    return x, w, b


def reference64(x, w, b, activation):
    """``act(x W^T + b)`` in float64 (differentiable: the tests take its gradients with autograd)."""
    y = x.double() @ w.double().t() + (0 if b is None else b.double())
    return ACTIVATIONS[activation](y)


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("o", [12, 60])  # narrower and wider than k = 40: the two weight-gradient products
def test_values_and_gradients_match_a_float64_reference(activation, bias, o):
    x, w, b = operands(o=o, bias=bias)
    # keep pre-activations away from relu's kink so that float rounding cannot flip a gradient
    if activation == "relu":
        pre = F.linear(x, w, b)
        x = x[(pre.abs() > 1e-3).all(dim=1)]
    leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    y = fused_linear(leaves[0], leaves[1], leaves[2] if bias else None, activation)
    assert y.grad_fn is not None and "FusedLinear" in type(y.grad_fn).__name__  # the oneDNN path ran
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(y, leaves, g)
    ref_leaves = [t.double().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    ref = reference64(ref_leaves[0], ref_leaves[1], ref_leaves[2] if bias else None, activation)
    want = torch.autograd.grad(ref, ref_leaves, g.double())
    torch.testing.assert_close(y.double(), ref, atol=2e-6, rtol=1e-5)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), e, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_tanh_gradient_is_one_minus_output_squared_by_hand():
    x = torch.tensor([[0.5, -1.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.25], [2.0, 0.0]])
    b = torch.tensor([0.0, -1.0])
    y = fused_linear(x, w, b, "tanh")  # pre-activations 0.25 and 0.0
    torch.testing.assert_close(y, torch.tanh(torch.tensor([[0.25, 0.0]])), atol=1e-6, rtol=0)
    y.sum().backward()
    d = 1 - torch.tanh(torch.tensor(0.25)) ** 2
    # dx_k = sum_o (1 - y_o^2) w_ok
    torch.testing.assert_close(x.grad, torch.stack([d * 1.0 + 2.0, d * 0.25]).view(1, 2), atol=1e-6, rtol=0)


@needs_onednn
def test_leading_dimensions_and_no_grad_give_the_same_values():
    x, w, b = operands(m=60)
    flat = fused_linear(x, w, b, "tanh")
    shaped = fused_linear(x.view(3, 4, 5, 40), w, b, "tanh")
    assert shaped.shape == (3, 4, 5, 12)
    torch.testing.assert_close(shaped.reshape(60, 12), flat, atol=0, rtol=0)
    with torch.inference_mode():
        inferred = fused_linear(x, w, b, "tanh")
    assert inferred.grad_fn is None
    torch.testing.assert_close(inferred, flat, atol=0, rtol=0)
    # a non-contiguous input is read correctly
    wide = torch.cat([x, x], dim=1)[:, ::2]
    torch.testing.assert_close(fused_linear(wide, w, b), fused_linear(wide.contiguous(), w, b), atol=0, rtol=0)


@pytest.mark.parametrize("activation", ["none", "tanh", "relu"])
def test_disabled_is_f_linear_bit_for_bit(blas_only, activation):
    assert not fused_linear_enabled()
    x, w, b = operands()
    torch.testing.assert_close(
        fused_linear(x, w, b, activation), ACTIVATIONS[activation](F.linear(x, w, b)), atol=0, rtol=0
    )


def test_float64_autocast_and_tracing_fall_back_to_f_linear():
    x, w, b = operands()
    x64, w64, b64 = x.double(), w.double(), b.double()
    torch.testing.assert_close(fused_linear(x64, w64, b64, "tanh"), torch.tanh(F.linear(x64, w64, b64)), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fused_linear(x, w, b, "tanh")
        want = torch.tanh(F.linear(x, w, b))
    assert y.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(y, want, atol=0, rtol=0)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())

        def forward(self, inputs):
            return fused_linear(inputs, self.weight, self.bias, "tanh")

    traced = torch.jit.trace(Layer(), x)
    assert "aten::linear" in str(traced.graph) and "mkldnn" not in str(traced.graph)
    x2 = operands(m=9, seed=4)[0]
    torch.testing.assert_close(traced(x2), torch.tanh(F.linear(x2, w, b)), atol=0, rtol=0)


def test_set_enabled_returns_the_previous_setting():
    first = set_fused_linear_enabled(False)
    try:
        assert set_fused_linear_enabled(False) is False
        assert set_fused_linear_enabled(True) is False
        assert fused_linear_enabled() is True
    finally:
        set_fused_linear_enabled(first)


def test_bad_arguments_are_named():
    x, w, b = operands()
    with pytest.raises(ValueError, match="activation must be one of"):
        fused_linear(x, w, b, "gelu")
    with pytest.raises(ValueError, match=r"do not chain: x \(53, 40\), weight \(12, 39\)"):
        fused_linear(x, w[:, :39], None)
    with pytest.raises(ValueError, match=r"bias must have shape \[12\], got \(11,\)"):
        fused_linear(x, w, b[:11])


@needs_onednn
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("abmil", {"hidden": 16}), ("abmil_gated", {"hidden": 16}), ("smap", {"hidden": 16}), ("transmil", {})],
)
def test_networks_keep_their_outputs_and_gradients(name, kwargs):
    """The oneDNN path changes float rounding only: logits, attention and gradients as on the BLAS path."""
    torch.manual_seed(0)
    net = build_mil_network(name, 48, **kwargs).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 30, 48, generator=gen)
    mask = torch.arange(30)[None, :] < torch.tensor([30, 3, 17, 22, 1])[:, None]
    results = []
    for enabled in (True, False):
        previous = set_fused_linear_enabled(enabled)
        try:
            run = copy.deepcopy(net)  # train-mode state (SmAP's spectral-norm vectors) starts equal for both runs
            out = run(x, mask)
            (out.logits.sum() + (out.attention.squeeze(-1) ** 2).sum()).backward()
            grads = {k: p.grad.clone() for k, p in run.named_parameters() if p.grad is not None}
            results.append((out.logits.detach(), out.attention.detach(), grads))
        finally:
            set_fused_linear_enabled(previous)
    (l1, a1, g1), (l2, a2, g2) = results
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a1, a2, atol=1e-6, rtol=1e-5)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], atol=1e-5, rtol=1e-4, msg=key)


def test_dispatch_modes_and_tensor_subclasses_see_the_plain_linear():
    """FLOP counting (and fake/meta tensor modes) and tensor subclasses get ``F.linear``: 2 M K O FLOPs counted."""
    from torch.utils.flop_counter import FlopCounterMode

    x, w, b = operands(m=10, k=6, o=4)
    with FlopCounterMode(display=False) as counter:
        y = fused_linear(x, w, b, "tanh")
    assert counter.get_total_flops() == 2 * 10 * 6 * 4
    torch.testing.assert_close(y, torch.tanh(F.linear(x, w, b)), atol=0, rtol=0)

    class Tagged(torch.Tensor):
        pass

    tagged = fused_linear(x.as_subclass(Tagged), w, b)
    assert type(tagged) is Tagged
    torch.testing.assert_close(tagged.as_subclass(torch.Tensor), F.linear(x, w, b), atol=0, rtol=0)
