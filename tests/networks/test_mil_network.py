"""The MILNetwork contract shared by every registered network: build arguments, argument checks, FLOP counts."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from monai_ng.networks import (
    ABMIL,
    MIL_NETWORKS,
    InstanceCeiling,
    MILNetwork,
    MILOutput,
    SmAPMIL,
    TransMIL,
    build_mil_network,
    mil_network_name,
    unpack_mil_output,
)

D = 12
KWARGS = {"transmil": {"hidden": 8, "num_heads": 2}, "instance_ceiling": {"kernel_size": 4}}


@pytest.mark.parametrize("name", list(MIL_NETWORKS))
def test_build_arguments_rebuild_the_same_architecture(name):
    torch.manual_seed(0)
    net = build_mil_network(name, D, **KWARGS.get(name, {}))
    assert isinstance(net, MILNetwork)
    args = net.build_arguments
    params = [p for p in inspect.signature(type(net).__init__).parameters if p != "self"]
    assert sorted(args) == sorted(params)  # every constructor argument is recorded
    assert args["in_features"] == D
    torch.manual_seed(0)
    rebuilt = build_mil_network(mil_network_name(net), **args)
    state, rebuilt_state = net.state_dict(), rebuilt.state_dict()
    assert list(state) == list(rebuilt_state)
    for key, value in state.items():
        torch.testing.assert_close(rebuilt_state[key], value, rtol=0, atol=0)


def test_registry_names_the_class_of_a_network():
    assert mil_network_name(ABMIL(D, gated=True)) == "abmil"
    assert mil_network_name(SmAPMIL(D)) == "smap"
    with pytest.raises(TypeError, match="not a registered MIL network"):
        mil_network_name(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ABMIL(D, hidden=0), ValueError, "ABMIL: hidden must be >= 1, got 0"),
        (lambda: ABMIL(D, hidden=2.5), TypeError, "ABMIL: hidden must be an integer, got 2.5"),
        (lambda: ABMIL(0), ValueError, "ABMIL: in_features must be >= 1, got 0"),
        (lambda: ABMIL(D, dropout=1.0), ValueError, r"ABMIL: dropout must be in \[0, 1\), got 1.0"),
        (lambda: TransMIL(D, hidden=8, num_heads=0), ValueError, "TransMIL: num_heads must be >= 1"),
        (lambda: SmAPMIL(D, num_steps=-1), ValueError, "SmAPMIL: num_steps must be >= 0, got -1"),
        (lambda: InstanceCeiling(D, kernel_size=0), ValueError, "InstanceCeiling: kernel_size must be >= 1"),
        (lambda: InstanceCeiling(D, dropout=-0.1), ValueError, "InstanceCeiling: dropout must be in"),
    ],
)
def test_argument_checks_name_the_network_and_the_argument(build, error, message):
    with pytest.raises(error, match=message):
        build()


FLOP_CASES = [(n, KWARGS.get(n, {})) for n in MIL_NETWORKS if n != "transmil"]  # TransMIL: in test_networks.py
FLOP_CASES += [("smap", {"smooth_at": "mid"}), ("smap", {"smooth_at": "late"})]


@pytest.mark.parametrize(("name", "kwargs"), FLOP_CASES)
def test_flops_per_bag_equal_the_counted_matrix_products(name, kwargs):
    net = build_mil_network(name, D, **kwargs).eval()
    for n in (2, 9):  # (a 1-slice einsum is not a counted matmul)
        with FlopCounterMode(display=False) as counter:
            net(torch.randn(1, n, D))
        assert counter.get_total_flops() == net.flops_per_bag(n)


def test_unpack_mil_output_accepts_outputs_and_tuples():
    logits, attention = torch.zeros(2), torch.ones(2, 3, 1)
    assert unpack_mil_output(MILOutput(logits, attention))[2] is None
    assert unpack_mil_output((logits, attention, logits))[2] is logits
    with pytest.raises(TypeError, match="expected a MIL network output"):
        unpack_mil_output(logits)
