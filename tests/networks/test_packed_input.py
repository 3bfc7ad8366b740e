"""Packed input ``x`` ``[T, D]`` + ``mask`` ``[B, N]`` (:func:`monai_ng.data.collate_packed_bags`) against padded input.

Every registered network must give the same logits and attention on either layout (eval, and training with dropout
under the same seed); ABMIL, SmAP and TransMIL consume the packed rows as they are (no gather) and give the same
parameter gradients. Bad packed inputs are rejected with precise messages naming the network.
"""

from __future__ import annotations

import copy

import pytest
import torch

from monai_ng.losses.mil_objective import MILObjective
from monai_ng.networks import MIL_NETWORKS, build_mil_network
from monai_ng.networks.bag_inputs import pack_valid_slices, prepare_bag, prepare_packed_bags

D = 10
LENGTHS = [5, 1, 8, 3, 8]
#: small build arguments per registered name; dropout where the network has it
SMALL: dict[str, dict] = {
    "abmil": {"hidden": 6, "dropout": 0.3},
    "abmil_gated": {"hidden": 6, "dropout": 0.3},
    "transmil": {"num_heads": 2, "dropout": 0.3},
    "smap": {"hidden": 6, "pool_smoothed": True},
    "centre_gaussian": {},
    "mean_pool": {},
    "max_pool": {},
    "instance_ceiling": {"kernel_size": 3, "dropout": 0.3},
    "max_score_pool": {},
    "torchmil": {"model": "SmABMIL", "model_kwargs": {"att_dim": 6}},
}
PACKED_PATH = ("abmil", "abmil_gated", "transmil", "smap")  # networks with a path on the packed rows


def batch(lengths=LENGTHS, seed: int = 0):
    """``(padded x [B, N, D] with NaN/inf/huge garbage on padding, packed rows [T, D], mask [B, N])``."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths) + 1
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), n, D, generator=gen)
    x[~mask] = torch.where(torch.arange(D) % 3 == 0, float("nan"), 1e6)
    x[~mask, 1] = float("inf")
    rows = torch.cat([x[b, :length] for b, length in enumerate(lengths)])  # bags back to back, as the collate writes
    return x, rows, mask


def build(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    if name == "torchmil":
        pytest.importorskip("torchmil")
    torch.manual_seed(seed)
    return build_mil_network(name, D, **{**SMALL[name], **overrides})


def test_small_arguments_cover_the_registry():
    assert set(SMALL) == set(MIL_NETWORKS)


@pytest.mark.parametrize("name", sorted(MIL_NETWORKS))
@pytest.mark.parametrize("training", [False, True])
def test_packed_input_gives_the_padded_outputs(name, training):
    x, rows, mask = batch()
    padded_net = build(name).train(training)
    packed_net = copy.deepcopy(padded_net)  # own copy: a training call may update buffers (spectral norm)
    torch.manual_seed(11)
    a = padded_net(x, mask)
    torch.manual_seed(11)
    b = packed_net(rows, mask)
    # bit for bit: the packed paths read the same rows, the others get back the same zero-padded grid
    assert torch.equal(b.logits, a.logits) and torch.equal(b.attention, a.attention)
    assert torch.isfinite(b.logits).all() and (b.attention[~mask] == 0).all()
    if name == "instance_ceiling":
        assert torch.equal(b.instance_logits, a.instance_logits)
    if training and SMALL[name].get("dropout"):  # dropout is live, so equal outputs mean equal draws
        torch.manual_seed(12)
        assert not torch.equal(packed_net(rows, mask).logits, b.logits)


@pytest.mark.parametrize("name", PACKED_PATH)
def test_padded_path_of_a_packed_network_takes_packed_input(name):
    # packed=False (and the traced export) run on the padded grid that prepare rebuilds from the packed rows
    x, rows, mask = batch(seed=2)
    net = build(name).eval()
    padded_path = copy.deepcopy(net)
    padded_path.packed = False
    a, b = net(x, mask), padded_path(rows, mask)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.attention, a.attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["abmil", "abmil_gated", "smap", "transmil"])
def test_packed_input_gives_the_padded_gradients(name):
    x, rows, mask = batch(seed=3)
    x = torch.where(mask.unsqueeze(-1), x, 0.0)  # finite padding, so the padded input's gradient is comparable
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    nets = [build(name).train()]
    nets.append(copy.deepcopy(nets[0]))
    grads, input_grads = [], []
    for net, features in zip(nets, (x, rows), strict=True):
        features = features.clone().requires_grad_(True)
        torch.manual_seed(5)
        out = net(features, mask)
        loss = MILObjective(ng_weight=1.0)(out, {"label": labels, "mask": mask})
        loss.backward()
        grads.append({k: p.grad for k, p in net.named_parameters() if p.grad is not None})
        input_grads.append(features.grad)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for k in grads[0]:
        assert torch.equal(grads[1][k], grads[0][k]), k
    assert torch.equal(input_grads[1], input_grads[0][mask])  # the rows' gradient is the valid slices' gradient
    assert (input_grads[0][~mask] == 0).all()


def test_packed_rows_are_consumed_without_a_copy():
    x, rows, mask = batch()
    bags = prepare_packed_bags(rows, mask, D, torch.float32, model="M")
    assert bags.x.data_ptr() == rows.data_ptr()  # no gather, no cast: the collated rows themselves
    reference = pack_valid_slices(x, mask, torch.float32)
    assert torch.equal(bags.x, reference.x) and torch.equal(bags.index, reference.index)
    assert torch.equal(bags.bag, reference.bag) and torch.equal(bags.mask, mask)
    assert bags.shape == reference.shape == tuple(mask.shape) and bags.lengths == tuple(LENGTHS)
    half = prepare_packed_bags(rows.half(), mask, D, torch.float64, model="M")
    assert half.x.dtype == torch.float64 and torch.equal(half.x, rows.half().double())
    # a padded input goes through the one gather, with the all-valid mask when none is given
    full = prepare_packed_bags(x[:, :1], None, D, torch.float32, model="M")  # every bag's first slice is valid
    assert full.mask.all() and full.lengths == (1,) * len(LENGTHS) and torch.equal(full.x, x[:, 0])


def test_prepare_bag_puts_packed_rows_on_a_zero_grid():
    x, rows, mask = batch()
    grid, out_mask = prepare_bag(rows.half(), mask, D, torch.float64, model="M")
    assert grid.dtype == torch.float64 and grid.shape == x.shape and out_mask is mask
    assert torch.equal(grid[mask], rows.half().double()) and (grid[~mask] == 0).all()
    assert not torch.signbit(grid[~mask]).any()  # +0.0, as the padded path's torch.where gives
    padded, _ = prepare_bag(x.half(), mask, D, torch.float64, model="M")
    assert torch.equal(grid, padded)  # the padded input's result, garbage and all
    # zero_padding=False leaves a padded x untouched, but a packed x has no padding to leave: the grid comes back
    kept = prepare_bag(rows.half(), mask, D, torch.float32, model="M", zero_padding=False)[0]
    assert kept.dtype == torch.float32 and torch.equal(kept, padded.float())


@pytest.mark.parametrize("name", sorted(MIL_NETWORKS))
def test_bad_packed_inputs_raise_precise_errors(name):
    net = build(name).eval()
    cls = type(net).__name__
    _, rows, mask = batch()
    with pytest.raises(ValueError, match=rf"{cls}: packed x \[T, D\] \(rank 2, shape \(25, {D}\)\) needs its mask"):
        net(rows)
    with pytest.raises(ValueError, match=rf"{cls}: packed x has T=24 rows but mask \[5, 9\] has 25 valid slices"):
        net(rows[:-1], mask)
    with pytest.raises(ValueError, match=rf"{cls}: packed x has T=26 rows but mask \[5, 9\] has 25 valid slices"):
        net(torch.cat([rows, rows[:1]]), mask)
    with pytest.raises(TypeError, match=rf"{cls}: mask must have dtype torch.bool .* got torch.float32"):
        net(rows, mask.float())
    with pytest.raises(TypeError, match=rf"{cls}: mask must be a bool torch.Tensor"):
        net(rows, mask.tolist())
    with pytest.raises(ValueError, match=rf"{cls}: mask must have rank 2 \[B, N\] with packed x \[T, D\], got shape"):
        net(rows, mask.reshape(-1))
    with pytest.raises(ValueError, match=rf"{cls}: feature width mismatch, expected D={D}, got D=4"):
        net(rows[:, :4], mask)
    with pytest.raises(TypeError, match=rf"{cls}: x must be a floating-point tensor"):
        net(rows.long(), mask)
    with pytest.raises(ValueError, match=rf"{cls}: empty batch, mask has shape \[0, 9\]"):
        net(rows[:0], mask[:0])
    with pytest.raises(ValueError, match=rf"{cls}: x must have rank 3 \[B, N, D\] \(padded\) or rank 2 \[T, D\]"):
        net(rows[0], mask)
    empty = mask.clone()
    empty[3] = False  # bag 3 (3 slices) is empty: its rows are gone too
    with pytest.raises(ValueError, match=rf"{cls}: bag\(s\) at batch index \[3\] have zero valid slices"):
        net(torch.cat([rows[:14], rows[17:]]), empty)
    gap = mask.clone()
    gap[2, 1] = False  # bag 2 loses its second slice: not a prefix any more
    keep = torch.ones(len(rows), dtype=torch.bool)
    keep[7] = False
    if net.uses_slice_order:
        with pytest.raises(ValueError, match=rf"{cls}: the valid slices of bag\(s\) at batch index \[2\] are not a"):
            net(rows[keep], gap)
    else:  # order-free pooling takes any mask; the rows still follow it, row-major
        x_gap = torch.zeros(5, 9, D)
        x_gap[gap] = rows[keep]
        assert torch.equal(net(rows[keep], gap).logits, net(x_gap, gap).logits)
