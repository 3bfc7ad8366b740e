"""Packed paths (no work on padding) against the padded paths of ABMIL, SmAP and TransMIL.

ABMIL and SmAP run their per-slice layers on the ``[T, D]`` valid slices and pool per bag; TransMIL keeps the tokens
of every bag packed back to back and attends within each bag on its exact length. Each must give the same logits,
attention, gradients and dropout draws as its padded path, with padding garbage (huge, NaN, inf) never read.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ng.data.bag_dataset import BagKeys, collate_bags
from monai_ng.losses.mil_objective import MILObjective
from monai_ng.networks import build_mil_network
from monai_ng.networks.bag_inputs import pack_valid_slices
from monai_ng.networks.mil_network import use_packed_path

D = 24
LENGTHS = [7, 1, 13, 4, 13]


def garbage_batch(seed: int = 0, lengths: list[int] = LENGTHS, scattered: bool = False):
    """Padded bags with huge and non-finite garbage on the padding; ``scattered`` puts valid slices anywhere."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths) + 2
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for b, length in enumerate(lengths):
        cols = torch.randperm(n, generator=gen)[:length] if scattered else torch.arange(length)
        mask[b, cols] = True
    x = 1e4 * torch.randn(len(lengths), n, D, generator=gen)
    x = torch.where(mask.unsqueeze(-1), torch.randn(len(lengths), n, D, generator=gen), x)
    x[~mask] = torch.where(torch.arange(D) % 2 == 0, float("nan"), float("inf"))
    return x, mask


def pair(name: str, **kwargs):
    torch.manual_seed(3)
    kwargs = {"hidden": 8, **kwargs}
    new = build_mil_network(name, D, **kwargs)
    old = build_mil_network(name, D, **kwargs)
    old.packed = False
    old.load_state_dict(new.state_dict())
    return old, new


def train_step_grads(net, x, mask, labels):
    """One training-mode forward and NG-objective backward: ``(output, {parameter name: gradient})``."""
    net.train()
    out = net(x, mask)
    assert (out.attention[~mask] == 0).all() and torch.isfinite(out.logits).all()
    loss = MILObjective(ng_weight=1.0)(out, {"label": labels, "mask": mask})
    net.zero_grad()
    loss.backward()
    return out, {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("name", ["abmil", "abmil_gated"])
@pytest.mark.parametrize("scattered", [False, True])
def test_packed_equals_padded_outputs_and_gradients(name, scattered):
    old, new = pair(name)
    x, mask = garbage_batch(1, scattered=scattered)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    grads = [train_step_grads(net, x, mask, labels)[1] for net in (old, new)]
    a, b = old(x, mask), new(x, mask)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.attention, a.attention, atol=1e-6, rtol=0)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs", [("abmil", {}), ("abmil_gated", {}), ("transmil", {"hidden": 8, "num_heads": 2})]
)
def test_packed_draws_the_same_dropout_masks(name, kwargs):
    old, new = pair(name, dropout=0.4, **kwargs)
    x, mask = garbage_batch(7)
    old.train(), new.train()
    torch.manual_seed(12)
    a = old(x, mask)
    torch.manual_seed(12)
    b = new(x, mask)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.attention, a.attention, atol=1e-6, rtol=0)
    torch.manual_seed(13)
    assert not torch.allclose(new(x, mask).logits, b.logits)  # dropout is active, so the draws matter


def test_packed_gradient_of_the_features_equals_padded():
    old, new = pair("abmil")
    x, mask = garbage_batch(3)
    x = torch.where(mask.unsqueeze(-1), x, 0.0)
    grads = []
    for net in (old, new):
        xg = x.clone().requires_grad_(True)
        net(xg, mask).logits.sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert (grads[1][~mask] == 0).all()


def test_packed_is_the_default_and_not_an_architecture_argument():
    net = build_mil_network("abmil", D)
    assert net.packed == "auto" and "packed" not in net.build_arguments


def test_use_packed_path_rule():
    cpu, meta = torch.zeros(2, 3), torch.zeros(2, 3, device="meta")
    assert use_packed_path("auto", cpu) is True  # the CPU: no work on padding
    assert use_packed_path("auto", meta) is False  # any other device: the padded grid
    assert use_packed_path(True, meta) is True and use_packed_path(False, cpu) is False  # forced either way
    with pytest.raises(ValueError, match="packed must be True, False or 'auto', got 'yes'"):
        use_packed_path("yes", cpu)


@pytest.mark.parametrize("name", ["abmil", "smap", "transmil"])
def test_auto_takes_the_packed_path_on_the_cpu(name, monkeypatch):
    net = build_mil_network(name, D)
    x, mask = garbage_batch(3)
    net(x, mask)  # runs

    def refuse(*args, **kwargs):
        raise RuntimeError("packed path taken")

    monkeypatch.setattr(net, "prepare_packed", refuse)
    with pytest.raises(RuntimeError, match="packed path taken"):
        net(x, mask)
    net.packed = False  # forced padded: prepare_packed is never called
    net(x, mask)


def test_pack_valid_slices_rows_order_and_weighted_sum():
    x, mask = garbage_batch(4, scattered=True)
    bags = pack_valid_slices(x, mask, torch.float64)
    assert bags.x.dtype == torch.float64 and bags.x.shape == (int(mask.sum()), D)
    assert list(bags.lengths) == mask.sum(dim=1).tolist()
    torch.testing.assert_close(bags.x, x[mask].double())
    w = torch.rand(bags.x.shape[0], dtype=torch.float64)
    expected = torch.stack([(w[bags.bag == b, None] * bags.x[bags.bag == b]).sum(0) for b in range(len(LENGTHS))])
    torch.testing.assert_close(bags.weighted_sum(w), expected)
    grid = bags.scatter(w, -1.0)
    assert (grid[~mask] == -1.0).all() and torch.equal(bags.gather(grid), w)


@pytest.mark.parametrize("x_grad", [False, True])
def test_weighted_sum_gradients_and_its_counted_form(x_grad):
    """Gradients in the weights (and rows) equal autograd through the explicit per-bag sums (float64, gradcheck),
    mixed dtypes are promoted, and under a dispatch mode (FLOP counting) the per-bag products give the same values."""
    from torch.utils.flop_counter import FlopCounterMode

    x, mask = garbage_batch(4, scattered=True)
    bags = pack_valid_slices(x, mask, torch.float64)
    bags = bags._replace(x=bags.x.detach().requires_grad_(x_grad))
    w = torch.rand(bags.x.shape[0], dtype=torch.float64, requires_grad=True)
    inputs = (w, bags.x) if x_grad else (w,)
    assert torch.autograd.gradcheck(lambda *t: bags._replace(x=t[1] if x_grad else bags.x).weighted_sum(t[0]), inputs)
    with FlopCounterMode(display=False) as counter:
        counted = bags.weighted_sum(w)
    torch.testing.assert_close(counted, bags.weighted_sum(w), rtol=1e-12, atol=1e-12)
    assert counter.get_total_flops() == 2 * bags.x.shape[0] * D
    mixed = bags._replace(x=bags.x.detach().float()).weighted_sum(w.detach())  # float32 rows, float64 weights
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, bags.weighted_sum(w).detach(), rtol=1e-6, atol=1e-6)


def test_float16_batch_kept_by_collate_gives_the_same_outputs():
    rng = np.random.default_rng(0)
    items = [
        {
            BagKeys.EMBEDDINGS: torch.from_numpy(rng.standard_normal((n, D)).astype(np.float16)),
            BagKeys.LABEL: n % 2,
            BagKeys.SLICE_LABELS: torch.zeros(n, dtype=torch.int8),
            BagKeys.SCAN_ID: f"s{n}",
            BagKeys.INDEX: n,
        }
        for n in (3, 9, 5)
    ]
    full, half = collate_bags(items, dtype=torch.float32), collate_bags(items)
    assert full[BagKeys.EMBEDDINGS].dtype == torch.float32 and half[BagKeys.EMBEDDINGS].dtype == torch.float16
    assert torch.equal(half[BagKeys.EMBEDDINGS].float(), full[BagKeys.EMBEDDINGS])
    assert (
        collate_bags([{**items[0], BagKeys.EMBEDDINGS: items[0][BagKeys.EMBEDDINGS].float()}, items[1]], None)[
            BagKeys.EMBEDDINGS
        ].dtype
        == torch.float32
    )
    for name in ("abmil", "abmil_gated"):
        old, new = pair(name)
        for net in (old, new):
            net.eval()
            a = net(full[BagKeys.EMBEDDINGS], full[BagKeys.MASK])
            b = net(half[BagKeys.EMBEDDINGS], half[BagKeys.MASK])
            assert torch.equal(a.logits, b.logits) and torch.equal(a.attention, b.attention)


# ---------------------------------------------------------------- SmAP and TransMIL (order-aware: prefix masks)

ORDER_AWARE_CASES = [
    ("smap", {}),
    ("smap", {"smooth_at": "mid"}),
    ("smap", {"smooth_at": "late"}),
    ("smap", {"pool_smoothed": True}),
    ("smap", {"adjacency": "row", "pool_smoothed": True}),
    ("smap", {"adjacency": "row", "smooth_at": "mid", "spectral_norm": False}),
    ("transmil", {"hidden": None, "num_heads": 4}),
    ("transmil", {"hidden": 8, "num_heads": 2}),
    ("transmil", {"hidden": None, "num_heads": 2, "num_layers": 3}),
    ("transmil", {"hidden": None, "num_heads": 2, "num_layers": 1}),
]


@pytest.mark.parametrize(("name", "kwargs"), ORDER_AWARE_CASES)
def test_order_aware_packed_equals_padded_outputs_and_gradients(name, kwargs):
    old, new = pair(name, **kwargs)
    x, mask = garbage_batch(5)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    grads, outs = [], []
    for net in (old, new):
        grads.append(train_step_grads(net, x, mask, labels)[1])
        outs.append(net.eval()(x, mask))
    torch.testing.assert_close(outs[1].logits, outs[0].logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1].attention, outs[0].attention, atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1].attention.sum(1), torch.ones_like(outs[1].attention[:, 0]))
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), [ORDER_AWARE_CASES[0], ORDER_AWARE_CASES[4], ORDER_AWARE_CASES[6]])
def test_order_aware_packed_gradient_of_the_features_equals_padded(name, kwargs):
    old, new = pair(name, **kwargs)
    x, mask = garbage_batch(6)
    x = torch.where(mask.unsqueeze(-1), x, 0.0)
    grads = []
    for net in (old, new):
        net.eval()
        xg = x.clone().requires_grad_(True)
        net(xg, mask).logits.sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert (grads[1][~mask] == 0).all()


@pytest.mark.parametrize("name", ["smap", "transmil"])
def test_each_bag_alone_equals_the_packed_batch(name):
    torch.manual_seed(4)
    net = build_mil_network(name, D, **({"num_heads": 2} if name == "transmil" else {})).eval()
    x, mask = garbage_batch(8, lengths=[1, 9, 2, 6])
    out = net(x, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        alone = net(x[b : b + 1, :n], None)
        torch.testing.assert_close(out.logits[b], alone.logits[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.attention[b, :n], alone.attention[0], atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["smap", "transmil"])
def test_order_aware_packed_is_the_default_and_traces_the_padded_path(name):
    torch.manual_seed(5)
    net = build_mil_network(name, D, **({"num_heads": 2} if name == "transmil" else {})).eval()
    assert net.packed == "auto" and "packed" not in net.build_arguments
    x, mask = garbage_batch(9, lengths=[3, 5])
    x = torch.where(mask.unsqueeze(-1), x, 0.0)
    traced = torch.jit.trace(net.with_tensor_output(), (x, mask), check_trace=False)
    x2, mask2 = garbage_batch(10, lengths=[7, 2, 11])
    x2 = torch.where(mask2.unsqueeze(-1), x2, 0.0)
    # the traced graph is valid for another batch size and length: it holds no per-bag loop
    torch.testing.assert_close(traced(x2, mask2), net(x2, mask2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["abmil", "smap", "transmil"])
def test_packed_trains_under_bfloat16_autocast_like_the_padded_path(name):
    # the packed pooling's custom backward gets a bfloat16 gradient for float32 inputs under autocast
    old, new = pair(name, num_heads=4) if name == "transmil" else pair(name)
    x, mask = garbage_batch(4)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    grads = []
    for net in (old, new):
        net.eval()  # no spectral-norm power iteration: both nets see the same weights
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, mask)
            loss = MILObjective(ng_weight=1.0)(out, {"label": labels, "mask": mask})
        net.zero_grad()
        loss.backward()
        assert all(p.grad is None or p.grad.dtype == p.dtype for p in net.parameters())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.isfinite(grads[1]).all()
    # bfloat16 has 8 bits of mantissa: the two paths round differently, but agree to bfloat16 precision
    torch.testing.assert_close(grads[1], grads[0], atol=2e-2 * float(grads[0].abs().max()), rtol=0.0)


def test_packed_bags_groups_split_consecutive_bags_within_the_row_budget():
    x, mask = garbage_batch(5, scattered=True)  # lengths 7, 1, 13, 4, 13
    bags = pack_valid_slices(x, mask, torch.float32)
    assert bags.groups(1000) == [bags]  # within budget: the batch itself
    groups = bags.groups(12)
    # greedy runs: [7, 1] (8 rows; 8 + 13 > 12), [13] alone (over budget), [4] (4 + 13 > 12), [13]
    assert [g.lengths for g in groups] == [(7, 1), (13,), (4,), (13,)]
    assert [g.shape for g in groups] == [(2, 15), (1, 15), (1, 15), (1, 15)]
    assert torch.equal(torch.cat([g.x for g in groups]), bags.x)
    assert groups[2].x.data_ptr() == bags.x[21:].data_ptr()  # views, not copies
    torch.testing.assert_close(torch.cat([g.mask for g in groups]), mask, rtol=0, atol=0)
    w = torch.rand(bags.x.shape[0])
    pieces = w.split([sum(g.lengths) for g in groups])
    # grids rebuilt per group concatenate to the batch's grid; bag indices and weighted sums renumbered per group
    torch.testing.assert_close(
        torch.cat([g.scatter(p, -2.0) for g, p in zip(groups, pieces, strict=True)]), bags.scatter(w, -2.0)
    )
    torch.testing.assert_close(
        torch.cat([g.weighted_sum(p) for g, p in zip(groups, pieces, strict=True)]), bags.weighted_sum(w)
    )
    assert [g.bag.tolist() for g in groups][0] == [0] * 7 + [1]
    for g, p in zip(groups, pieces, strict=True):
        torch.testing.assert_close(g.gather(g.scatter(p)), p, rtol=0, atol=0)
    # one more row per bag (a class token): [7, 1] now counts 10 rows, [4] 5
    assert [g.lengths for g in bags.groups(10, per_bag=1)] == [(7, 1), (13,), (4,), (13,)]
    assert [g.lengths for g in bags.groups(9, per_bag=1)] == [(7,), (1,), (13,), (4,), (13,)]
    assert [g.lengths for g in bags.groups(9)] == [(7, 1), (13,), (4,), (13,)]
    with pytest.raises(ValueError, match="max_rows must be >= 1, got 0"):
        bags.groups(0)
    with pytest.raises(ValueError, match="per_bag must be >= 0, got -1"):
        bags.groups(5, per_bag=-1)


@pytest.mark.parametrize("kwargs", [{"hidden": None, "num_heads": 2}, {"hidden": 8, "num_heads": 2, "num_layers": 3}])
def test_transmil_bag_groups_give_the_outputs_and_gradients_of_one_group(kwargs, monkeypatch):
    torch.manual_seed(4)
    whole = build_mil_network("transmil", D, **kwargs)
    grouped = build_mil_network("transmil", D, **kwargs)
    grouped.load_state_dict(whole.state_dict())
    whole.group_bytes = None
    grouped.group_bytes = 3 * grouped.hidden * 4 * 16  # 16 tokens per group: 8, 2, 14, 5, 14 -> 4 groups
    calls = []
    run = grouped._forward_group
    monkeypatch.setattr(grouped, "_forward_group", lambda bags: calls.append(bags.lengths) or run(bags))
    x, mask = garbage_batch(6)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    outs, grads = zip(*(train_step_grads(net, x, mask, labels) for net in (whole, grouped)), strict=True)
    assert calls == [(7, 1), (13,), (4,), (13,)]
    torch.testing.assert_close(outs[1].logits, outs[0].logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1].attention, outs[0].attention, atol=1e-6, rtol=0)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


def test_transmil_bag_groups_rule_and_bad_budget():
    x, mask = garbage_batch(6)
    bags = pack_valid_slices(x, mask, torch.float32)
    net = build_mil_network("transmil", D, num_heads=2)
    assert net.group_bytes == 24 * 2**20 and "group_bytes" not in net.build_arguments
    assert net.bag_groups(bags) == [bags]  # 38 rows of 24-d: far under the default budget
    net.group_bytes = 3 * D * 4 * 16
    assert len(net.bag_groups(bags)) == 4
    net.group_bytes = 1  # below one row: still one bag per group
    assert [g.lengths for g in net.bag_groups(bags)] == [(n,) for n in LENGTHS]
    dropping = build_mil_network("transmil", D, num_heads=2, dropout=0.1)
    dropping.group_bytes = 3 * D * 4 * 16
    assert len(dropping.train().bag_groups(bags)) == 1  # dropout active: the padded path's draws are kept
    assert len(dropping.eval().bag_groups(bags)) == 4
    net.group_bytes = None
    assert net.bag_groups(bags) == [bags]
    for bad in (0, -5, 2.5, True, "24M"):
        net.group_bytes = bad
        with pytest.raises(ValueError, match="group_bytes must be None or a positive int"):
            net.bag_groups(bags)
