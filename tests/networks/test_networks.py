"""Tests for the MIL networks in monai_ng.networks: contract (shapes, masking, padding invariance, dtypes, gradients,
errors, determinism) for every network, and independent reference computations per model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from monai_ng.networks import (
    ABMIL,
    CEILING_KERNELS,
    MIL_NETWORKS,
    CentreGaussianMIL,
    InstanceCeiling,
    MaxPoolMIL,
    MaxScorePoolMIL,
    MeanPoolMIL,
    MILOutput,
    SmAPMIL,
    TransMIL,
    build_mil_network,
    chain_adjacency_apply,
    chain_edge_weights,
    chain_smooth,
)

D = 12  # tiny feature width for the contract tests
TINY_KWARGS: dict[str, dict] = {
    "abmil": {"hidden": 5},
    "abmil_gated": {"hidden": 5},
    "transmil": {"hidden": 8, "num_heads": 2},
    "transmil_paper": {"num_heads": 4},  # the paper's: tokens are the embeddings (width D), no projection, no norm
    "smap": {"hidden": 5},
    "centre_gaussian": {},
    "mean_pool": {},
    "max_pool": {},
    "instance_ceiling": {"kernel_size": 4},
    "max_score_pool": {},
    "smap_pooled_smoothed": {"hidden": 5, "pool_smoothed": True},
}
#: test cases that are a registry name with other arguments
CASE_NETWORK = {"transmil_paper": "transmil", "smap_pooled_smoothed": "smap"}
ORDER_AWARE = ("transmil", "transmil_paper", "smap", "smap_pooled_smoothed", "centre_gaussian", "instance_ceiling")


def build(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = {**TINY_KWARGS[name], **overrides}
    return build_mil_network(CASE_NETWORK.get(name, name), D, **kwargs).eval()


def padded_batch(lengths: list[int], width: int = D, garbage: float = 1e3, seed: int = 1):
    """Bags of the given lengths padded at the end with large random garbage; returns (bags, x, mask)."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths)
    bags = [torch.randn(length, width, generator=gen) for length in lengths]
    x = garbage * torch.randn(len(lengths), n, width, generator=gen)
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    return bags, x, mask


def test_factory_covers_all_names_and_lists_them_on_error():
    assert set(MIL_NETWORKS) == {
        "abmil",
        "abmil_gated",
        "transmil",
        "smap",
        "centre_gaussian",
        "mean_pool",
        "max_pool",
        "instance_ceiling",
        "max_score_pool",
        "torchmil",
    }
    with pytest.raises(ValueError, match=r"unknown network 'abmill'; valid names: abmil, abmil_gated, transmil"):
        build_mil_network("abmill", D)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        build_mil_network("abmil", 0)
    with pytest.raises(TypeError):
        build_mil_network("mean_pool", D, hidden=3)
    with pytest.raises(ValueError, match="always gated"):
        build_mil_network("abmil_gated", D, gated=False)
    assert build_mil_network("abmil_gated", D).gated and not build_mil_network("abmil", D).gated
    assert isinstance(build_mil_network("transmil", D, hidden=8, num_heads=2), TransMIL)
    assert isinstance(build_mil_network("smap", D), SmAPMIL)
    assert isinstance(build_mil_network("centre_gaussian", D), CentreGaussianMIL)
    assert isinstance(build_mil_network("mean_pool", D), MeanPoolMIL)
    assert isinstance(build_mil_network("max_pool", D), MaxPoolMIL)
    assert isinstance(build_mil_network("max_score_pool", D), MaxScorePoolMIL)
    assert isinstance(build_mil_network("instance_ceiling", D), InstanceCeiling)


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_shapes_dtype_and_attention_normalisation(name):
    model = build(name)
    lengths = [5, 1, 9, 2]
    _, x, mask = padded_batch(lengths)
    out = model(x, mask)
    assert isinstance(out, MILOutput)
    heads = model.num_heads
    assert heads == {"transmil": 2, "transmil_paper": 4}.get(name, 1)
    assert out.logits.shape == (4,) and out.logits.dtype == torch.float32
    assert out.attention.shape == (4, 9, heads) and out.attention.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    assert (out.attention[~mask] == 0).all()  # exactly 0 on padding
    if name == "max_pool":  # a count: a slice that holds no feature's maximum gets 0
        assert (out.attention[mask] >= 0).all() and (out.attention[mask] > 0).any()
    else:
        assert (out.attention[mask] > 0).all()
    sums = out.attention.sum(dim=1)  # [B, H]
    assert torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=1e-6)
    assert torch.equal(out.attention[1, 0], torch.ones(heads))  # a bag of one slice
    if name == "instance_ceiling":
        assert out.instance_logits.shape == (4, 9) and (out.instance_logits[~mask] == 0).all()
    else:
        assert out.instance_logits is None
    no_mask = model(x[:, :5])  # mask=None: every slice valid
    assert no_mask.attention.shape == (4, 5, heads)
    assert torch.allclose(no_mask.attention.sum(1), torch.ones(4, heads), atol=1e-6)


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_padding_invariance_with_garbage(name):
    model = build(name)
    lengths = [7, 1, 11, 2, 4]
    bags, x, mask = padded_batch(lengths, garbage=1e4, seed=3)
    batched = model(x, mask)
    for i, bag in enumerate(bags):
        alone = model(bag.unsqueeze(0))
        n = len(bag)
        assert torch.allclose(alone.logits[0], batched.logits[i], rtol=0, atol=1e-6), (name, i)
        assert torch.allclose(alone.attention[0], batched.attention[i, :n], rtol=0, atol=1e-6), (name, i)
        if alone.instance_logits is not None:
            assert torch.allclose(alone.instance_logits[0], batched.instance_logits[i, :n], rtol=0, atol=1e-6)
    # padding holding inf/nan must not leak either
    x_bad = x.clone()
    x_bad[~mask] = float("nan")
    x_bad[2:3, :][~mask[2:3]] = float("inf")
    bad = model(x_bad, mask)
    assert torch.equal(bad.logits, batched.logits) and torch.equal(bad.attention, batched.attention)


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_float16_input_is_cast(name):
    model = build(name)
    _, x, mask = padded_batch([6, 3], garbage=100.0)
    half = x.half()
    out = model(half, mask)
    ref = model(half.float(), mask)
    assert out.logits.dtype == torch.float32 and out.attention.dtype == torch.float32
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.attention, ref.attention)
    double = model.double()(x, mask)  # follows the parameter dtype, whatever it is
    assert double.logits.dtype == torch.float64 and double.attention.dtype == torch.float64


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    _, x, mask = padded_batch([6, 3, 1], garbage=10.0)
    out = model(x, mask)
    probe = torch.randn(out.attention.shape, generator=torch.Generator().manual_seed(5))
    loss = out.logits.sum() + (probe * out.attention).sum()
    if out.instance_logits is not None:
        loss = loss + out.instance_logits.sum()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_deterministic_under_seed(name):
    _, x, mask = padded_batch([6, 3], garbage=10.0)
    a, b = build(name, seed=7), build(name, seed=7)
    out_a, out_b = a(x, mask), b(x, mask)
    assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.attention, out_b.attention)
    assert torch.equal(a(x, mask).logits, out_a.logits)  # eval mode: repeated calls agree
    if name not in (
        "centre_gaussian",
        "mean_pool",
        "max_pool",
    ):  # a different seed gives different weights and (content-aware) attention; the max pool's attention is the
        # argmax count of the features, independent of the weights
        assert not torch.equal(build(name, seed=8)(x, mask).attention, out_a.attention)


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_bad_inputs_raise_precise_errors(name):
    model = build(name)
    cls = type(model).__name__
    x = torch.randn(3, 5, D)
    good = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=rf"{cls}: x must have rank 3 \[B, N, D\] \(padded\) or rank 2 .* got rank 4"):
        model(torch.randn(1, 3, 5, D))
    with pytest.raises(ValueError, match=rf"{cls}: packed x \[T, D\] \(rank 2, shape \(5, {D}\)\) needs its mask"):
        model(torch.randn(5, D))  # rank 2 is the packed layout (tests/networks/test_packed_input.py)
    with pytest.raises(ValueError, match=rf"{cls}: feature width mismatch, expected D={D}, got D=7"):
        model(torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match=r"mask shape mismatch, expected \[B, N\] = \[3, 5\].*got \[3, 4\]"):
        model(x, good[:, :4])
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        model(x, good.float())
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        model(torch.ones(3, 5, D, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"empty batch"):
        model(torch.randn(2, 0, D))
    empty = good.clone()
    empty[1] = False
    empty[2] = False
    with pytest.raises(ValueError, match=rf"{cls}: bag\(s\) at batch index \[1, 2\] have zero valid slices"):
        model(x, empty)
    gap = good.clone()
    gap[2, 1] = False
    if name in ORDER_AWARE:
        with pytest.raises(ValueError, match=r"batch index \[2\] are not a contiguous prefix"):
            model(x, gap)
    else:  # order-free pooling accepts any mask
        out = model(x, gap)
        assert out.attention[2, 1].eq(0).all()


# ---------------------------------------------------------------- ABMIL


def _softmax(v: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_abmil_matches_hand_computation():
    model = ABMIL(in_features=3, hidden=2)
    with torch.no_grad():
        model.attention_v.weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]]))
        model.attention_v.bias.copy_(torch.tensor([0.1, -0.2]))
        model.attention_w.weight.copy_(torch.tensor([[2.0, -1.0]]))
        model.attention_w.bias.copy_(torch.tensor([0.3]))
        model.classifier.weight.copy_(torch.tensor([[1.0, 2.0, -1.0]]))
        model.classifier.bias.copy_(torch.tensor([0.5]))
    x = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 2.0, 0.0]])
    scores = np.tanh(x @ np.array([[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]]).T + [0.1, -0.2]) @ [2.0, -1.0] + 0.3
    a = _softmax(scores)
    logit = (a @ x) @ [1.0, 2.0, -1.0] + 0.5
    xt = torch.tensor(x, dtype=torch.float32)
    batch = torch.zeros(2, 4, 3)
    batch[0, :3] = xt
    batch[1, :2] = xt[:2]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    out = model(batch, mask)
    np.testing.assert_allclose(out.attention[0, :3, 0].detach().numpy(), a, atol=1e-6)
    np.testing.assert_allclose(out.logits[0].item(), logit, atol=1e-5)
    np.testing.assert_allclose(out.attention[1, :2, 0].detach().numpy(), _softmax(scores[:2]), atol=1e-6)


def test_gated_abmil_matches_hand_computation():
    torch.manual_seed(0)
    model = ABMIL(in_features=4, hidden=3, gated=True).double()
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    xn = x[0].numpy()
    h = np.tanh(xn @ p["attention_v.weight"].T + p["attention_v.bias"])
    gate = 1.0 / (1.0 + np.exp(-(xn @ p["attention_u.weight"].T + p["attention_u.bias"])))
    a = _softmax((h * gate) @ p["attention_w.weight"][0] + p["attention_w.bias"][0])
    np.testing.assert_allclose(model(x).attention[0, :, 0].detach().numpy(), a, atol=1e-12)


def test_abmil_flops_match_counted_matmuls():
    for gated in (False, True):
        model = ABMIL(in_features=10, hidden=4, gated=gated)
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 9, 10))
        assert counter.get_total_flops() == model.flops_per_bag(9)


# ---------------------------------------------------------------- TransMIL


def _layer_norm(t: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = t.mean(-1, keepdims=True)
    var = t.var(-1, keepdims=True)
    return (t - mu) / np.sqrt(var + eps) * g + b


def _same_conv(s: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Depthwise cross-correlation with symmetric zero padding: s [N, C], w [C, 1, k] (k odd), b [C]."""
    n, c = s.shape
    k = w.shape[-1]
    half = (k - 1) // 2
    out = np.zeros_like(s)
    for j in range(n):
        for t in range(k):
            src = j + t - half
            if 0 <= src < n:
                out[j] += w[:, 0, t] * s[src]
    return out + b


def transmil_reference(model: TransMIL, bag: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Independent numpy forward of a 2-layer TransMIL on one unpadded bag [N, D].

    Returns (logit, renormalised slice attention [N, H], raw class-token row over all keys [H, 1 + N]).
    """
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    c, heads = model.hidden, model.num_heads
    dh = c // heads
    if "input_projection.weight" in p:
        s = np.maximum(bag @ p["input_projection.weight"].T + p["input_projection.bias"], 0.0)
    else:  # the paper's: the embeddings are the tokens
        s = bag
    t = np.vstack([p["class_token"][0], s])
    # layer 0: full self-attention
    h = _layer_norm(t, p["layers.0.norm.weight"], p["layers.0.norm.bias"])
    qkv = h @ p["layers.0.qkv.weight"].T + p["layers.0.qkv.bias"]
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    out = np.zeros_like(t)
    for hd in range(heads):
        cols = slice(hd * dh, (hd + 1) * dh)
        a = _softmax(q[:, cols] @ k[:, cols].T / math.sqrt(dh), axis=1)
        out[:, cols] = a @ v[:, cols]
    t = t + out @ p["layers.0.proj.weight"].T + p["layers.0.proj.bias"]
    # PPEG on slice tokens only
    s = t[1:]
    ppeg = s.copy()
    for kk in (3, 5, 7):
        ppeg += _same_conv(s, p[f"ppeg.conv{kk}.weight"], p[f"ppeg.conv{kk}.bias"])
    t = np.vstack([t[:1], ppeg])
    # layer 1: class-token query row only
    h = _layer_norm(t, p["layers.1.norm.weight"], p["layers.1.norm.bias"])
    qkv = h @ p["layers.1.qkv.weight"].T + p["layers.1.qkv.bias"]
    q, k, v = qkv[0, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    row = np.zeros((heads, t.shape[0]))
    cls_out = np.zeros(c)
    for hd in range(heads):
        cols = slice(hd * dh, (hd + 1) * dh)
        row[hd] = _softmax(k[:, cols] @ q[cols] / math.sqrt(dh))
        cls_out[cols] = row[hd] @ v[:, cols]
    cls = t[0] + cls_out @ p["layers.1.proj.weight"].T + p["layers.1.proj.bias"]
    if "norm.weight" in p:
        cls = _layer_norm(cls, p["norm.weight"], p["norm.bias"])
    logit = cls @ p["classifier.weight"][0] + p["classifier.bias"][0]
    slice_attention = (row[:, 1:] / (1.0 - row[:, :1])).T  # class-token mass removed, renormalised
    return float(logit), slice_attention, row


@pytest.mark.parametrize(
    ("in_features", "kwargs"),
    [(3, {"hidden": 4}), (4, {}), (4, {"final_norm": True}), (3, {"hidden": 4, "final_norm": False})],
    ids=["projected", "paper", "paper+norm", "projected-no-norm"],
)
def test_transmil_matches_numpy_reference(in_features, kwargs):
    torch.manual_seed(0)
    model = TransMIL(in_features=in_features, num_heads=2, num_layers=2, **kwargs).double().eval()
    assert (model.input_projection is None) == ("hidden" not in kwargs)
    assert (model.norm is not None) == kwargs.get("final_norm", "hidden" in kwargs)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters and conv biases
        for name, prm in model.named_parameters():
            if name.endswith("norm.weight"):
                prm.add_(0.3 * torch.randn_like(prm))
            elif name.endswith(".bias"):
                prm.copy_(0.2 * torch.randn_like(prm))
    gen = torch.Generator().manual_seed(1)
    lengths = [6, 1, 2, 9]
    x = 50.0 * torch.randn(4, 9, in_features, generator=gen, dtype=torch.float64)
    mask = torch.arange(9)[None] < torch.tensor(lengths)[:, None]
    out = model(x, mask)
    for i, n in enumerate(lengths):
        bag = x[i, :n].numpy()
        logit, attention, row = transmil_reference(model, bag)
        np.testing.assert_allclose(out.logits[i].item(), logit, rtol=0, atol=1e-10)
        np.testing.assert_allclose(out.attention[i, :n].detach().numpy(), attention, rtol=0, atol=1e-12)
        np.testing.assert_allclose(attention.sum(0), np.ones(2), atol=1e-12)
        assert (out.attention[i, n:] == 0).all()
        # the raw row gives the class token a share, so its slice part alone would not sum to 1
        assert row[:, 0].min() > 0 and np.all(row[:, 1:].sum(1) < 1.0 - 1e-6)


def test_transmil_class_token_row_is_exposed_and_zero_on_padding():
    torch.manual_seed(2)
    layer = TransMIL(in_features=3, hidden=4, num_heads=2).layers[-1]
    tokens = torch.randn(2, 5, 4)
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    _, row, scores = layer.class_token_forward(tokens, key_mask)
    assert row.shape == (2, 2, 5) and (row[1, :, 3:] == 0).all()
    assert torch.allclose(row.sum(-1), torch.ones(2, 2), atol=1e-6)
    assert torch.allclose(row[0], scores[0].softmax(-1), atol=1e-7)


def test_transmil_full_layer_matches_explicit_attention():
    """The SDPA layer (used before the last) equals explicit masked softmax attention, row by row."""
    torch.manual_seed(3)
    layer = TransMIL(in_features=3, hidden=8, num_heads=2).layers[0].double()
    tokens = torch.randn(2, 6, 8, dtype=torch.float64)
    key_mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    got = layer(tokens, key_mask)
    h = layer.norm(tokens)
    q, k, v = layer.qkv(h).split(8, dim=-1)
    ref = torch.empty_like(tokens)
    for b in range(2):
        for hd in range(2):
            cols = slice(hd * 4, hd * 4 + 4)
            s = q[b, :, cols] @ k[b, :, cols].T / 2.0
            a = s.masked_fill(~key_mask[b][None], float("-inf")).softmax(-1)
            ref[b, :, cols] = a @ v[b, :, cols]
    ref = tokens + layer.proj(ref)
    assert torch.allclose(got, ref, atol=1e-12)


def _explicit_sdpa(q, k, v, attn_mask=None, **_):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:  # the packed path attends each bag at its exact length, without a mask
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("hidden", [8, None])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_transmil_flops_match_counted_operations(monkeypatch, num_layers, hidden):
    # count SDPA as the two matmuls it performs (FlopCounterMode does not see the fused CPU kernel)
    monkeypatch.setattr(F, "scaled_dot_product_attention", _explicit_sdpa)
    model = TransMIL(in_features=6, hidden=hidden, num_heads=2, num_layers=num_layers)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 6, 6))
    assert counter.get_total_flops() == model.flops_per_bag(6)
    assert model.flops_per_bag(6) < model.flops_per_bag(7)


def test_transmil_rejects_bad_configuration():
    with pytest.raises(ValueError, match="hidden=10 must be divisible by num_heads=4"):
        TransMIL(in_features=3, hidden=10, num_heads=4)
    with pytest.raises(ValueError, match=r"token width 12 \(= in_features\) must be divisible by num_heads=8"):
        TransMIL(in_features=12)
    with pytest.raises(TypeError, match="final_norm must be a bool or None"):
        TransMIL(in_features=8, final_norm=1)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        TransMIL(in_features=3, hidden=8, num_heads=2, num_layers=0)


def test_transmil_ppeg_folded_kernel_equals_three_convolutions():
    torch.manual_seed(4)
    ppeg = TransMIL(in_features=3, hidden=4, num_heads=2).ppeg.double()
    s = torch.randn(2, 9, 4, dtype=torch.float64)
    mask = torch.arange(9)[None] < torch.tensor([[9], [5]])
    got = ppeg(s, mask)
    for i, n in enumerate((9, 5)):
        bag = s[i, :n].numpy()
        ref = bag.copy()
        for kk in (3, 5, 7):
            conv = getattr(ppeg, f"conv{kk}")
            ref += _same_conv(bag, conv.weight.detach().numpy(), conv.bias.detach().numpy())
        np.testing.assert_allclose(got[i, :n].detach().numpy(), ref, atol=1e-12)
        assert (got[i, n:] == 0).all()


# ---------------------------------------------------------------- SmAP


def dense_chain_operator(n: int) -> np.ndarray:
    """A_hat = D^-1/2 A D^-1/2 of a chain of n nodes, with all-zero rows for isolated nodes."""
    a = np.zeros((n, n))
    for i in range(n - 1):
        a[i, i + 1] = a[i + 1, i] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1.0)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_chain_operator_equals_dense_matrix():
    lengths = [1, 2, 5, 3]
    _, g, mask = padded_batch(lengths, width=3, garbage=1e3, seed=9)
    g = g.double()
    got = chain_adjacency_apply(g, chain_edge_weights(mask, torch.float64))
    for i, n in enumerate(lengths):
        ref = dense_chain_operator(n) @ g[i, :n].numpy()
        np.testing.assert_allclose(got[i, :n].numpy(), ref, atol=1e-9)
        assert (got[i, n:] == 0).all()
    # hand values: 3-node chain, degrees 1, 2, 1 -> weights 1/sqrt(2) on both edges
    w = chain_edge_weights(torch.ones(1, 3, dtype=torch.bool), torch.float64)
    np.testing.assert_allclose(w.numpy(), [[1 / math.sqrt(2), 1 / math.sqrt(2)]], atol=1e-15)
    # 2-node chain: degrees 1, 1 -> weight 1; single node: no edge, row of zeros
    np.testing.assert_allclose(dense_chain_operator(2), [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(dense_chain_operator(1), [[0.0]])


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_chain_smooth_equals_dense_iteration(alpha):
    lengths = [1, 2, 5, 7]
    _, u, mask = padded_batch(lengths, width=2, garbage=0.0, seed=10)
    u = u.double()
    got = chain_smooth(u, mask, alpha, num_steps=10)
    for i, n in enumerate(lengths):
        a_hat = dense_chain_operator(n)
        un = u[i, :n].numpy()
        g = un.copy()
        for _ in range(10):
            g = alpha * a_hat @ g + (1 - alpha) * un
        np.testing.assert_allclose(got[i, :n].numpy(), g, atol=1e-12)
    # a single slice has no neighbours: G_T = (1 - alpha) U
    np.testing.assert_allclose(got[0, 0].numpy(), (1 - alpha) * u[0, 0].numpy(), atol=1e-15)


@pytest.mark.parametrize("smooth_at", ["early", "mid", "late"])
def test_smap_attention_equals_dense_reference(smooth_at):
    torch.manual_seed(11)
    model = SmAPMIL(in_features=4, hidden=3, smooth_at=smooth_at).double().eval()
    lengths = [5, 2, 1]
    _, x, mask = padded_batch(lengths, width=4, garbage=1e3, seed=12)
    x = x.double()
    out = model(x, mask)
    alpha = 1.0 / (1.0 + math.exp(-model.alpha_logit.item()))
    np.testing.assert_allclose(alpha, 0.5)  # alpha_init
    wv, bv = model.attention_v.weight.detach().numpy(), model.attention_v.bias.detach().numpy()
    ww, bw = model.attention_w.weight.detach().numpy(), model.attention_w.bias.detach().numpy()
    is_normed = {"early": (True, True), "mid": (False, True), "late": (False, False)}[smooth_at]
    for weight, normed in zip((wv, ww), is_normed, strict=True):  # spectral norm where the Sm authors put it
        if normed:
            np.testing.assert_allclose(np.linalg.norm(weight, 2), 1.0, atol=1e-2)

    def smooth(u, a_hat):
        g = u.copy()
        for _ in range(model.num_steps):
            g = alpha * a_hat @ g + (1 - alpha) * u
        return g

    for i, n in enumerate(lengths):
        a_hat = dense_chain_operator(n)
        xn = x[i, :n].numpy()
        feats = smooth(xn, a_hat) if smooth_at == "early" else xn
        h = feats @ wv.T + bv
        h = smooth(h, a_hat) if smooth_at == "mid" else h
        s = np.tanh(h) @ ww.T + bw
        s = smooth(s, a_hat) if smooth_at == "late" else s
        a = _softmax(s[:, 0])
        np.testing.assert_allclose(out.attention[i, :n, 0].detach().numpy(), a, atol=1e-12)
        pooled = a @ xn  # pooling uses the unsmoothed features
        logit = pooled @ model.classifier.weight.detach().numpy()[0] + model.classifier.bias.item()
        np.testing.assert_allclose(out.logits[i].item(), logit, atol=1e-12)


def test_smap_rejects_bad_configuration():
    with pytest.raises(ValueError, match=r"alpha_init must be in \(0, 1\), got 1.0"):
        SmAPMIL(4, alpha_init=1.0)
    with pytest.raises(ValueError, match="smooth_at must be one of"):
        SmAPMIL(4, smooth_at="before")


# ---------------------------------------------------------------- baselines


def test_centre_attention_strictly_ranked_by_distance_and_content_blind():
    model = CentreGaussianMIL(in_features=3)
    for s in (1, 2, 7, 8, 51, 1000):
        mask = torch.ones(1, s, dtype=torch.bool)
        a1 = model(torch.randn(1, s, 3), mask).attention[0, :, 0]
        a2 = model(100 * torch.randn(1, s, 3), mask).attention[0, :, 0]
        assert torch.equal(a1, a2)  # content-blind
        dist = (torch.arange(1, s + 1, dtype=torch.float64) - (s + 1) / 2).abs()
        closer = dist[:, None] < dist[None, :]
        same = dist[:, None] == dist[None, :]
        bigger = a1[:, None] > a1[None, :]
        assert bool(bigger[closer].all()), s  # strictly larger when strictly closer to the centre
        assert bool((a1[:, None] == a1[None, :])[same].all()), s
        assert (a1 > 0).all()
        scores = model.ranking_scores(mask)[0]
        assert bool((scores[:, None] > scores[None, :])[closer].all())


def test_centre_gaussian_values_and_literal_sigma():
    s = 9
    mask = torch.arange(12)[None] < torch.tensor([[s]])
    j = np.arange(1, s + 1)
    for sigma, width in ((None, s / 4.0), (1.0, 1.0), (3.0, 3.0)):
        model = CentreGaussianMIL(in_features=2, sigma=sigma).double()
        a = model(torch.randn(1, 12, 2, dtype=torch.float64), mask).attention[0, :, 0].numpy()
        ref = np.exp(-((j - 5.0) ** 2) / (2 * width**2))
        np.testing.assert_allclose(a[:s], ref / ref.sum(), atol=1e-14)
        assert (a[s:] == 0).all()
    # the paper's literal sigma = 1 underflows to exact zeros far from the centre: ties, hence the default
    far = CentreGaussianMIL(in_features=2, sigma=1.0)(torch.zeros(1, 200, 2)).attention[0, :, 0]
    assert (far == 0).sum() > 100
    with pytest.raises(ValueError, match="sigma must be > 0"):
        CentreGaussianMIL(in_features=2, sigma=0.0)


def test_mean_and_max_pooling_hand_values():
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [5.0, 0.0]], [[2.0, 2.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    mean = MeanPoolMIL(2)
    with torch.no_grad():
        mean.classifier.weight.copy_(torch.tensor([[1.0, -1.0]]))
        mean.classifier.bias.fill_(0.5)
    out = mean(x, mask)
    assert torch.allclose(out.logits, torch.tensor([3.0 - 1.0 / 3.0 + 0.5, 0.5]))
    assert torch.allclose(out.attention[..., 0], torch.tensor([[1 / 3] * 3, [1.0, 0.0, 0.0]]))
    # the paper's max pooling: element-wise max over the valid slices, then Linear
    mx = MaxPoolMIL(2)
    with torch.no_grad():
        mx.classifier.weight.copy_(torch.tensor([[1.0, -1.0]]))
        mx.classifier.bias.fill_(0.5)
    out = mx(x, mask)
    assert torch.equal(out.logits, torch.tensor([5.0 - 2.0 + 0.5, 2.0 - 2.0 + 0.5]))  # max [5, 2]; [2, 2]
    # feature 0 takes its maximum at slice 2, feature 1 at slice 0; slice 1 holds none
    assert torch.equal(out.attention[..., 0], torch.tensor([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]]))
    tie = mx(torch.tensor([[[1.0, 1.0], [1.0, 0.0]]]))  # feature 0 ties at both slices: counts 2 and 1
    assert torch.allclose(tie.attention[0, :, 0], torch.tensor([2 / 3, 1 / 3]), atol=0, rtol=0)
    x.requires_grad_(True)
    mx(x, mask).logits.sum().backward()  # the gradient reaches the arg-max slices only
    assert torch.equal(x.grad[0], torch.tensor([[0.0, -1.0], [0.0, 0.0], [1.0, 0.0]]))
    # the per-slice-score max ("max_score_pool", this project's max pooling before the paper's became the default)
    ms = MaxScorePoolMIL(2)
    with torch.no_grad():
        ms.classifier.weight.copy_(torch.tensor([[1.0, -1.0]]))
        ms.classifier.bias.fill_(0.5)
    out = ms(x.detach(), mask)
    scores = torch.tensor([-0.5, 4.5, 5.5])  # x @ w + b for bag 0
    assert torch.allclose(out.logits, torch.tensor([5.5, 0.5]))
    assert torch.allclose(out.attention[0, :, 0], scores.softmax(0))
    assert torch.equal(out.attention[1, :, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_max_pool_flops_match_counted_matmuls():
    for model in (MaxPoolMIL(7), MaxScorePoolMIL(7)):
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 5, 7))
        assert counter.get_total_flops() == model.flops_per_bag(5)


# ---------------------------------------------------------------- instance ceiling


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_ceiling_convolution_equals_manual_depthwise_convolution_even_kernel():
    model = InstanceCeiling(in_features=2, kernel_size=4)
    assert (model.pad_before, model.pad_after) == (1, 2)
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[0.0, 1.0, 0.0, -1.0]]]))
        model.conv.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, -1.0]]])
    z = model.slice_features(x, torch.ones(1, 3, dtype=torch.bool))
    # output j sees slices j-1, j, j+1, j+2 (zeros outside the bag)
    # channel 0: j=0: 2*1+3*2+4*3 = 20 (+0.5); j=1: 1*1+2*2+3*3 = 14; j=2: 1*2+2*3 = 8
    # channel 1: j=0: 1*1 - 1*(-1) = 2; j=1: 1*0 - 0 = 0; j=2: 1*(-1) = -1
    expected = torch.tensor([[[20.5, 2.0], [14.5, 0.0], [8.5, -1.0]]])
    assert torch.allclose(z, expected)
    reference = torch.nn.Conv1d(2, 2, 4, groups=2, padding="same")  # PyTorch's own "same" convention agrees
    reference.load_state_dict(model.conv.state_dict())
    assert torch.allclose(reference(x.transpose(1, 2)).transpose(1, 2), z)


def test_ceiling_kernel_12_equals_numpy_loop_and_scan_pooling():
    torch.manual_seed(13)
    model = InstanceCeiling(in_features=3, kernel_size=12).double().eval()
    lengths = [15, 4]
    _, x, mask = padded_batch(lengths, width=3, garbage=1e3, seed=14)
    x = x.double()
    out = model(x, mask)
    w, b = model.conv.weight.detach().numpy(), model.conv.bias.detach().numpy()
    for i, n in enumerate(lengths):
        bag = x[i, :n].numpy()
        z = np.zeros_like(bag)
        for j in range(n):
            for t in range(12):
                src = j + t - 5
                if 0 <= src < n:
                    z[j] += w[:, 0, t] * bag[src]
        z += b
        inst = z @ model.classifier.weight.detach().numpy()[0] + model.classifier.bias.item()
        np.testing.assert_allclose(out.instance_logits[i, :n].detach().numpy(), inst, atol=1e-10)
        np.testing.assert_allclose(out.logits[i].item(), inst.max(), atol=1e-10)
        np.testing.assert_allclose(out.attention[i, :n, 0].detach().numpy(), _softmax(inst), atol=1e-12)
    lse = InstanceCeiling(in_features=3, kernel_size=12, scan_pooling="logsumexp").double().eval()
    lse.load_state_dict(model.state_dict())
    smooth = lse(x, mask)
    expected = torch.logsumexp(out.instance_logits.masked_fill(~mask, float("-inf")), dim=1)
    assert torch.allclose(smooth.logits, expected, atol=1e-12)
    assert (smooth.logits >= out.logits).all()
    with pytest.raises(ValueError, match="scan_pooling must be one of"):
        InstanceCeiling(in_features=3, scan_pooling="mean")


def test_transmil_packed_layer_equals_unpacked_on_valid_rows():
    from monai_ng.networks import ClassTokenAttentionLayer

    torch.manual_seed(0)
    layer = ClassTokenAttentionLayer(dim=8, num_heads=2).double()
    tokens = torch.randn(3, 6, 8, dtype=torch.float64)
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    full = layer(tokens, key_mask)
    packed = layer(tokens, key_mask, packed=True)
    torch.testing.assert_close(packed[key_mask], full[key_mask], rtol=0, atol=1e-12)


def test_transmil_default_is_the_papers_width_and_padding_invariant():
    """768-d tokens, 8 heads of 96, no input projection, no final LayerNorm; bags of 1-300 slices padded with garbage
    give the same outputs as alone (<= 1e-6, float32, random init)."""
    torch.manual_seed(0)
    model = TransMIL().eval()
    assert model.hidden == 768 and model.num_heads == 8 and model.layers[0].head_dim == 96
    assert model.input_projection is None and model.norm is None and model.classifier.in_features == 768
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("input_projection", "norm.")) for n in names)
    lengths = [300, 1, 37, 120]
    bags, x, mask = padded_batch(lengths, width=768, garbage=1e4, seed=5)
    with torch.no_grad():
        batched = model(x, mask)
        for i, bag in enumerate(bags):
            alone = model(bag.unsqueeze(0))
            n = len(bag)
            assert (batched.logits[i] - alone.logits[0]).abs() <= 1e-6
            assert (batched.attention[i, :n] - alone.attention[0]).abs().max() <= 1e-6
    # the projected variant (this project's TransMIL before the paper-width default) is one argument away
    projected = TransMIL(hidden=128)
    assert projected.input_projection.out_features == 128 and projected.norm is not None


def test_named_old_variants_equal_the_values_of_the_earlier_code():
    """Outputs on fixed seeds equal those computed with the committed code before the paper-faithful defaults
    (TransMIL(hidden=8, num_heads=2) and the then 'max_pool', now 'max_score_pool')."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 7, 16, generator=gen)
    mask = torch.arange(7)[None] < torch.tensor([7, 4, 1])[:, None]
    expected = {
        ("transmil", (("hidden", 8), ("num_heads", 2))): (
            [-1.1537498235702515, -1.1031279563903809, -1.126561164855957],
            [0.11365710198879242, 0.1353507936000824, 0.16572719812393188, 0.19134639203548431,
             0.13411742448806763, 0.13950133323669434, 0.12029977887868881],
        ),
        ("max_score_pool", ()): (
            [0.4733589291572571, 0.1988750398159027, -0.02876366674900055],
            [0.09807917475700378, 0.15652145445346832, 0.07231787592172623, 0.19447380304336548,
             0.1821730136871338, 0.13929231464862823, 0.15714232623577118],
        ),
    }  # fmt: skip
    for (name, kwargs), (logits, attention) in expected.items():
        torch.manual_seed(0)
        net = build_mil_network(name, 16, **dict(kwargs)).eval()
        with torch.no_grad():
            out = net(x, mask)
        torch.testing.assert_close(out.logits, torch.tensor(logits), rtol=0, atol=1e-6)
        torch.testing.assert_close(out.attention.mean(-1)[0], torch.tensor(attention), rtol=0, atol=1e-6)


def test_smap_pooled_smoothed_equals_pooling_dense_smoothed_features():
    """pool_smoothed=True (the public code's SmAP) pools Sm(X): checked against the dense operator on D features."""
    torch.manual_seed(11)
    model = SmAPMIL(in_features=4, hidden=3, pool_smoothed=True).double().eval()
    plain = SmAPMIL(in_features=4, hidden=3).double().eval()
    plain.load_state_dict(model.state_dict())
    lengths = [5, 2, 1, 7]
    _, x, mask = padded_batch(lengths, width=4, garbage=1e3, seed=12)
    x = x.double()
    out, ref = model(x, mask), plain(x, mask)
    torch.testing.assert_close(out.attention, ref.attention, rtol=0, atol=0)  # the attention is unchanged
    alpha = float(model.alpha.detach())
    for i, n in enumerate(lengths):
        a_hat = dense_chain_operator(n)
        xn = x[i, :n].numpy()
        g = xn.copy()
        for _ in range(model.num_steps):
            g = alpha * a_hat @ g + (1 - alpha) * xn
        pooled = out.attention[i, :n, 0].detach().numpy() @ g
        logit = pooled @ model.classifier.weight.detach().numpy()[0] + model.classifier.bias.item()
        np.testing.assert_allclose(out.logits[i].item(), logit, atol=1e-12)
    assert not torch.allclose(out.logits[[0, 1, 3]], ref.logits[[0, 1, 3]])  # pooling Sm(X), not X
    with pytest.raises(ValueError, match="pool_smoothed=True needs smooth_at='early'"):
        SmAPMIL(4, smooth_at="late", pool_smoothed=True)


def test_ceiling_kernels_per_dataset():
    assert CEILING_KERNELS == {"head": 12, "chest": 35, "abdomen": 29}
    assert InstanceCeiling().kernel_size == CEILING_KERNELS["head"]
