"""SmAP's chain-adjacency option: the symmetric ``D^-1/2 A D^-1/2`` (default) and the row-normalised ``D^-1 A``.

References are dense ``N x N`` torch matrices built here from the definitions (never the batched neighbour sums), and
a per-bag SmAP written from the Normal Guidance paper's description of its public code: ``G <- (1 - alpha) X + alpha
P G`` for 10 steps from ``G_0 = X``, tanh MLP, softmax, pooling of the smoothed features, then ``Linear``.
"""

from __future__ import annotations

import json

import pytest
import torch

from monai_ng.networks import SmAPMIL
from monai_ng.networks.checkpoint import build_arguments_path, load_mil_checkpoint, save_mil_checkpoint
from monai_ng.networks.smap import chain_adjacency_apply, chain_neighbour_weights, chain_smooth

LENGTHS = [1, 2, 3, 6, 9]


def padded(lengths: list[int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 bags padded at the end with NaN/inf/1e4 garbage; returns ``(x [B, N, width], mask [B, N])``."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths) + 2
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.where(mask[..., None], torch.randn(len(lengths), n, width, generator=gen, dtype=torch.float64), 1e4)
    x[~mask] = torch.where(torch.arange(width) % 2 == 0, float("nan"), float("inf")).double()
    return x, mask


def dense_operator(n: int, adjacency: str) -> torch.Tensor:
    """The ``n x n`` normalised chain adjacency; an isolated node's row is 0."""
    a = torch.diag(torch.ones(n - 1, dtype=torch.float64), 1) + torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    degree = a.sum(1)
    safe = torch.where(degree > 0, degree, 1.0)
    if adjacency == "row":
        return a / safe[:, None]
    inv_sqrt = torch.where(degree > 0, safe.rsqrt(), 0.0)
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def dense_smoothing_matrix(n: int, adjacency: str, alpha: float, steps: int) -> torch.Tensor:
    """``S`` with ``G_T = S U``: the iteration ``G <- alpha P G + (1 - alpha) U`` run on the identity."""
    p, eye = dense_operator(n, adjacency), torch.eye(n, dtype=torch.float64)
    s = eye.clone()
    for _ in range(steps):
        s = alpha * p @ s + (1 - alpha) * eye
    return s


def test_row_weights_by_hand():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    prev, nxt = chain_neighbour_weights(mask, torch.float64, "row")
    # bag 0: degrees 1, 2, 1. Slice 1 receives slice 0 with 1/deg_1 = 1/2, slice 2 receives slice 1 with 1/deg_2 = 1;
    # slice 0 receives slice 1 with 1/deg_0 = 1, slice 1 receives slice 2 with 1/deg_1 = 1/2. No edge into padding.
    torch.testing.assert_close(prev, torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(nxt, torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    t_prev, t_nxt = chain_neighbour_weights(mask, torch.float64, "row", transpose=True)
    assert torch.equal(t_prev, nxt) and torch.equal(t_nxt, prev)
    s_prev, s_nxt = chain_neighbour_weights(mask, torch.float64, "symmetric")
    torch.testing.assert_close(s_prev[0, :2], torch.full((2,), 2**-0.5, dtype=torch.float64))
    assert torch.equal(s_prev, s_nxt)


@pytest.mark.parametrize("adjacency", ["symmetric", "row"])
@pytest.mark.parametrize("transpose", [False, True])
def test_operator_equals_dense_matrix(adjacency, transpose):
    x, mask = padded(LENGTHS, 3, seed=1)
    g = torch.where(mask[..., None], x, 0.0)
    got = chain_adjacency_apply(g, chain_neighbour_weights(mask, torch.float64, adjacency, transpose))
    for b, n in enumerate(LENGTHS):
        p = dense_operator(n, adjacency)
        torch.testing.assert_close(got[b, :n], (p.T if transpose else p) @ g[b, :n], atol=1e-12, rtol=0)
        assert (got[b, n:] == 0).all()
    if adjacency == "row":  # rows of D^-1 A sum to 1 (but for an isolated slice): a constant is left unchanged
        ones = torch.where(mask[..., None], 1.0, 0.0).double()
        moved = chain_adjacency_apply(ones, chain_neighbour_weights(mask, torch.float64, "row"))
        assert (moved[1:][mask[1:]] == 1.0).all() and (moved[0] == 0).all()


@pytest.mark.parametrize("adjacency", ["symmetric", "row"])
@pytest.mark.parametrize("transpose", [False, True])
def test_chain_smooth_equals_dense_smoothing_matrix(adjacency, transpose):
    alpha, steps = 0.7, 10
    x, mask = padded(LENGTHS, 4, seed=2)
    u = torch.where(mask[..., None], x, 0.0)
    got = chain_smooth(u, mask, alpha, steps, adjacency, transpose)
    for b, n in enumerate(LENGTHS):
        s = dense_smoothing_matrix(n, adjacency, alpha, steps)
        torch.testing.assert_close(got[b, :n], (s.T if transpose else s) @ u[b, :n], atol=1e-12, rtol=0)
    if adjacency == "row":  # the row operator is not symmetric: its transpose is a different map
        s = dense_smoothing_matrix(6, "row", alpha, steps)
        assert (s - s.T).abs().max() > 1e-2


@pytest.mark.parametrize("adjacency", ["symmetric", "row"])
def test_pool_smoothed_pools_the_smoothed_features(adjacency):
    """sum_j a_j Sm(X)_j, with Sm(X) = S X from the dense S, for both adjacencies and both execution paths."""
    torch.manual_seed(3)
    net = SmAPMIL(5, hidden=4, pool_smoothed=True, adjacency=adjacency).double().eval()
    x, mask = padded(LENGTHS, 5, seed=3)
    alpha = float(net.alpha.detach())
    w, bias = net.classifier.weight[0].detach(), float(net.classifier.bias.detach())
    for packed in (True, False):
        net.packed = packed
        out = net(x, mask)
        for b, n in enumerate(LENGTHS):
            smoothed = dense_smoothing_matrix(n, adjacency, alpha, net.num_steps) @ x[b, :n]
            expected = out.attention[b, :n, 0].detach() @ smoothed @ w + bias
            torch.testing.assert_close(out.logits[b].detach(), expected, atol=1e-10, rtol=0)


def public_code_smap(net: SmAPMIL, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The Normal Guidance public code's SmAP as described in its paper, bag by bag with dense matrices.

    Early smoothing with the row-normalised chain adjacency ``P``: ``G_0 = X``, ``G <- (1 - alpha) X + alpha P G``
    for ``T`` steps; scores ``w^T tanh(V G + b) + c`` (spectral-normed ``V``, ``w``); softmax over the bag; pooled
    ``sum_j a_j G_j``; logit ``Linear(pooled)``.
    """
    alpha = float(net.alpha.detach())
    v, b_v = net.attention_v.weight.detach(), net.attention_v.bias.detach()
    w, b_w = net.attention_w.weight.detach(), net.attention_w.bias.detach()
    c, b_c = net.classifier.weight.detach(), net.classifier.bias.detach()
    logits, attention = [], []
    for bag, keep in zip(x, mask, strict=True):
        features = bag[keep]
        p = dense_operator(len(features), "row")
        g = features.clone()
        for _ in range(net.num_steps):
            g = (1 - alpha) * features + alpha * p @ g
        scores = torch.tanh(g @ v.T + b_v) @ w.T + b_w  # [n, 1]
        a = torch.softmax(scores[:, 0], dim=0)
        logits.append(((a @ g) @ c.T + b_c)[0])
        attention.append(a)
    return torch.stack(logits), attention


def test_row_adjacency_network_equals_the_public_code_smap():
    torch.manual_seed(4)
    net = SmAPMIL(6, hidden=5, smooth_at="early", pool_smoothed=True, spectral_norm=True, adjacency="row").double()
    net.train()
    net(torch.randn(2, 4, 6, dtype=torch.float64))  # a few power iterations, so the spectral norms are not trivial
    net(torch.randn(2, 4, 6, dtype=torch.float64))
    net.eval()
    x, mask = padded([4, 1, 7, 2, 11], 6, seed=5)
    expected_logits, expected_attention = public_code_smap(net, x, mask)
    for packed in (True, False):
        net.packed = packed
        out = net(x, mask)
        torch.testing.assert_close(out.logits.detach(), expected_logits, atol=1e-10, rtol=0)
        for b, a in enumerate(expected_attention):
            torch.testing.assert_close(out.attention[b, : len(a), 0].detach(), a, atol=1e-12, rtol=0)
    symmetric = SmAPMIL(6, hidden=5, pool_smoothed=True).double().eval()
    symmetric.load_state_dict(net.state_dict())
    assert not torch.allclose(symmetric(x, mask).logits, expected_logits, atol=1e-6)  # the option changes the function


def test_adjacency_is_an_architecture_argument_and_old_checkpoints_load_symmetric(tmp_path):
    torch.manual_seed(6)
    row = SmAPMIL(4, hidden=3, adjacency="row").eval()
    assert row.build_arguments["adjacency"] == "row" and SmAPMIL(4).build_arguments["adjacency"] == "symmetric"
    loaded, _ = load_mil_checkpoint(save_mil_checkpoint(row, tmp_path / "row.pt"))
    assert loaded.adjacency == "row"
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(loaded(x).logits, row(x).logits, atol=0, rtol=0)
    path = save_mil_checkpoint(SmAPMIL(4, hidden=3).eval(), tmp_path / "old.pt")
    sidecar = build_arguments_path(path)
    header = json.loads(sidecar.read_text())
    kwargs = json.loads(header["network_kwargs"])
    del kwargs["adjacency"]  # written before the option existed
    sidecar.write_text(json.dumps({**header, "network_kwargs": json.dumps(kwargs)}))
    assert load_mil_checkpoint(path)[0].adjacency == "symmetric"


def test_bad_adjacency_is_rejected():
    with pytest.raises(ValueError, match=r"SmAPMIL: adjacency must be one of \('symmetric', 'row'\), got 'column'"):
        SmAPMIL(4, adjacency="column")
    mask = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="chain_smooth: adjacency must be one of"):
        chain_smooth(torch.zeros(1, 3, 1), mask, 0.5, 2, adjacency="random_walk")
