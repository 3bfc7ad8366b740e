"""The packed ``[B, 1 + N]`` tensor output that MONAI bundle tooling needs (verify_net_in_out, export)."""

from __future__ import annotations

import pytest
import torch

from monai_ng.networks import MIL_NETWORKS, build_mil_network
from monai_ng.networks.mil_network import MILOutput, unpack_mil_output


@pytest.mark.parametrize("name", sorted(MIL_NETWORKS))
def test_tensor_output_packs_logit_and_mean_attention(name):
    kwargs = {"num_heads": 4} if name == "transmil" else {}  # the paper-width TransMIL: 12-d tokens, 4 heads
    torch.manual_seed(0)
    net = build_mil_network(name, in_features=12, **kwargs).eval()
    x = torch.randn(3, 9, 12)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    out = net(x, mask=mask)
    packed = net.with_tensor_output()(x, mask=mask)
    assert packed.shape == (3, 10)
    assert torch.equal(packed[:, 0], out.logits)
    assert torch.allclose(packed[:, 1:], out.attention.mean(dim=-1), atol=0, rtol=0)
    assert torch.all(packed[1, 7:] == 0)  # padded slices carry no attention
    # the state dict does not depend on the output form (a bundle's model.pt is the same either way)
    assert list(net.state_dict()) == list(build_mil_network(name, in_features=12, **kwargs).state_dict())
    logits, attention, instance = unpack_mil_output(packed)
    assert torch.equal(logits, out.logits) and attention.shape == (3, 9, 1) and instance is None
    assert isinstance(net.with_tensor_output(False)(x), MILOutput)


def test_to_tensor_by_hand():
    out = MILOutput(logits=torch.tensor([0.5]), attention=torch.tensor([[[0.2, 0.4], [0.8, 0.6]]]))
    assert torch.allclose(out.to_tensor(), torch.tensor([[0.5, 0.3, 0.7]]), atol=1e-7, rtol=0)
