"""TorchMILAdapter: torchmil attention models behind MILNetwork, trained by Normal Guidance."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from monai_ng.losses import MILObjective
from monai_ng.networks import (
    TORCHMIL_MODELS,
    TorchMILAdapter,
    build_mil_network,
    chain_adjacency_matrix,
    load_mil_checkpoint,
    mil_network_name,
    save_mil_checkpoint,
)

needs_torchmil = pytest.mark.skipif(importlib.util.find_spec("torchmil") is None, reason="torchmil not installed")
D = 6
SMALL = {  # small models so that the tests stay fast
    "ABMIL": {"att_dim": 8},
    "TransformerABMIL": {"pool_att_dim": 8, "transf_att_dim": 12, "transf_n_heads": 2},
    "SmABMIL": {"att_dim": 8},
    "SmTransformerABMIL": {"pool_att_dim": 8, "transf_att_dim": 12, "transf_n_heads": 2},
}


def _net(model: str) -> TorchMILAdapter:
    torch.manual_seed(0)
    return TorchMILAdapter(D, model, SMALL[model]).double()


def _padded_batch(lengths: list[int], extra: int = 0, garbage: float = float("nan")) -> tuple[torch.Tensor, ...]:
    """``(x [B, N, D], mask [B, N])`` float64 with valid slices first and ``garbage`` in the padding."""
    g = torch.Generator().manual_seed(1)
    n = max(lengths) + extra
    x = torch.full((len(lengths), n, D), garbage, dtype=torch.float64)
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    x[mask] = torch.randn(int(mask.sum()), D, generator=g, dtype=torch.float64)
    return x, mask


@needs_torchmil
@pytest.mark.parametrize("model", TORCHMIL_MODELS)
def test_attention_is_a_softmax_over_the_valid_slices_and_padding_changes_nothing(model):
    net = _net(model).eval()
    x, mask = _padded_batch([7, 4, 1], extra=3)  # NaN in the padding, 3 more padded slices than needed
    out = net(x, mask)
    assert out.logits.shape == (3,) and out.attention.shape == (3, 10, 1)
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3, 1, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.all(out.attention[~mask] == 0) and torch.all(out.attention[mask] > 0)
    for b, length in enumerate([7, 4, 1]):  # each bag alone, unpadded
        alone = net(x[b : b + 1, :length])
        torch.testing.assert_close(alone.logits, out.logits[b : b + 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.attention, out.attention[b : b + 1, :length], rtol=0, atol=1e-12)


@needs_torchmil
@pytest.mark.parametrize("model", TORCHMIL_MODELS)
def test_logits_equal_the_torchmil_model_called_directly(model):
    net = _net(model).eval()
    x, mask = _padded_batch([5, 3], garbage=0.0)
    if model.startswith("Sm"):
        direct = net.model(x, chain_adjacency_matrix(mask, torch.float64), mask)
    else:
        direct = net.model(x, mask)
    torch.testing.assert_close(net(x, mask).logits, direct, rtol=0, atol=0)


@needs_torchmil
def test_attention_is_the_pooling_weight_of_abmil():
    net = _net("ABMIL").eval()
    x, mask = _padded_batch([6, 2], garbage=0.0)
    out = net(x, mask)
    pooled = torch.einsum("bn,bnd->bd", out.attention[..., 0], x)
    torch.testing.assert_close(net.model.classifier(pooled).squeeze(-1), out.logits, rtol=0, atol=1e-12)


@needs_torchmil
def test_chain_adjacency_by_hand_and_as_torchmil_builds_it():
    from torchmil.utils import build_adj, normalize_adj

    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    adj = chain_adjacency_matrix(mask, torch.float64)
    w = 1 / np.sqrt(2)  # end slice (degree 1) to middle slice (degree 2)
    expected = torch.tensor(
        [[[0, w, 0, 0], [w, 0, w, 0], [0, w, 0, 0], [0, 0, 0, 0]], [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0] * 4]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(adj, expected, rtol=0, atol=1e-15)
    # torchmil's own builder on slice coordinates 0..S-1 (its CT-scan datasets)
    s = 9
    index, weight = build_adj(np.arange(s, dtype=float)[:, None], dist_thr=1.0)
    dense = np.zeros((s, s))
    dense[index[0], index[1]] = normalize_adj(index, weight, n_nodes=s)
    got = chain_adjacency_matrix(torch.ones(1, s, dtype=torch.bool), torch.float64)[0]
    np.testing.assert_allclose(got.numpy(), dense, rtol=0, atol=1e-7)  # torchmil normalises in float32


@needs_torchmil
@pytest.mark.parametrize("model", ["ABMIL", "SmABMIL", "TransformerABMIL"])
def test_normal_guidance_trains_the_torchmil_parameters(model):
    net = _net(model).train()
    x, mask = _padded_batch([12, 9, 5], garbage=0.0)
    target = {"label": torch.tensor([1.0, 0.0, 1.0]), "mask": mask}
    MILObjective(ng_weight=1.0)(net(x, mask), target).backward()  # scan BCE + NG: every parameter gets a gradient
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert grads and all(name.startswith("model.") for name in grads)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # NG alone reaches the attention parameters of the torchmil model, and descending it lowers it
    net.zero_grad()
    ng_only = MILObjective(ng_weight=1.0, scan_weight=0.0)
    loss = ng_only(net(x, mask), target)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for name, p in net.named_parameters() if ".pool." in name)
    first = loss.item()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):
        optimiser.zero_grad()
        ng_only(net(x, mask), target).backward()
        optimiser.step()
    assert ng_only(net(x, mask), target).item() < 0.9 * first


@needs_torchmil
def test_registry_build_checkpoint_and_flops(tmp_path):
    torch.manual_seed(0)
    net = build_mil_network("torchmil", D, model="SmABMIL", model_kwargs={"att_dim": 4})
    assert isinstance(net, TorchMILAdapter) and mil_network_name(net) == "torchmil"
    assert net.build_arguments == {"in_features": D, "model": "SmABMIL", "model_kwargs": {"att_dim": 4}}
    assert net.uses_slice_order and not build_mil_network("torchmil", D).uses_slice_order
    path = save_mil_checkpoint(net, tmp_path / "net.safetensors")
    loaded, _ = load_mil_checkpoint(path)
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(loaded.eval()(x).logits, net.eval()(x).logits, rtol=0, atol=0)
    assert 0 < net.flops_per_bag(5) < net.flops_per_bag(9)


@needs_torchmil
def test_bad_arguments():
    with pytest.raises(ValueError, match=r"TorchMILAdapter: model must be one of \('ABMIL', .*got 'TransMIL'"):
        TorchMILAdapter(D, "TransMIL")
    with pytest.raises(ValueError, match=r"model_kwargs may not set \['criterion', 'in_shape'\]"):
        TorchMILAdapter(D, "ABMIL", {"in_shape": (3,), "criterion": None})
    with pytest.raises(TypeError):
        TorchMILAdapter(D, "ABMIL", {"no_such_argument": 1})
    with pytest.raises(ValueError, match="not a contiguous prefix"):
        TorchMILAdapter(D, "SmABMIL")(torch.randn(1, 3, D), torch.tensor([[True, False, True]]))


def test_missing_torchmil_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmil.models", None)  # makes `import torchmil.models` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'monai-ng\[torchmil\]'"):
        TorchMILAdapter(D, "ABMIL")
