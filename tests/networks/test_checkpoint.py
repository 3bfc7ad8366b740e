"""MIL checkpoints: round trips in both formats, the plain state_dict of a .pt, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from monai_ng.networks import build_mil_network
from monai_ng.networks.checkpoint import build_arguments_path, load_mil_checkpoint, save_mil_checkpoint


def _network(name="transmil", **kwargs):
    torch.manual_seed(0)
    if name == "transmil":
        kwargs = {"hidden": 8, "num_heads": 2, "num_layers": 2, **kwargs}
    return build_mil_network(name, 6, **kwargs).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize(("name", "kwargs"), [("transmil", {}), ("abmil_gated", {"hidden": 3}), ("smap", {})])
def test_round_trip_rebuilds_the_same_network(tmp_path, suffix, name, kwargs):
    net = _network(name, **kwargs)
    path = save_mil_checkpoint(net, tmp_path / "sub" / f"model{suffix}", metadata={"method": "M"})
    loaded, header = load_mil_checkpoint(path)
    assert type(loaded) is type(net) and not loaded.training
    assert loaded.build_arguments == net.build_arguments
    assert header["method"] == "M" and header["in_features"] == "6"
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(loaded(x).logits, net(x).logits, rtol=0, atol=0)


def test_pt_is_a_plain_state_dict_loadable_with_weights_only(tmp_path):
    net = _network()
    path = save_mil_checkpoint(net, tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    assert list(state) == list(net.state_dict())  # exactly network.state_dict(), nothing wrapped around it
    fresh = _network()
    fresh.load_state_dict(state)  # MONAI bundles' CheckpointLoader does the same
    sidecar = json.loads(build_arguments_path(path).read_text())
    assert sidecar["network"] == "transmil" and json.loads(sidecar["network_kwargs"])["hidden"] == 8


def test_safetensors_header_holds_the_build_arguments(tmp_path):
    path = save_mil_checkpoint(_network(), tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["network"] == "transmil" and meta["in_features"] == "6" and meta["checkpoint_format"] == "2"
    assert json.loads(meta["network_kwargs"]) == {
        "hidden": 8,
        "num_heads": 2,
        "num_layers": 2,
        "dropout": 0.0,
        "final_norm": None,
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoints_from_before_format_2_rebuild_what_they_hold(tmp_path, suffix):
    """Before the paper-faithful defaults, 'max_pool' was the per-slice-score max and TransMIL headers had no
    final_norm: such checkpoints load as the per-slice-score max and the projected TransMIL with its LayerNorm."""
    from safetensors.torch import load_file, save_file

    from monai_ng.networks import MaxPoolMIL, MaxScorePoolMIL

    x = torch.randn(2, 5, 6)
    for name, old_kwargs, expected in (
        ("max_score_pool", {}, MaxScorePoolMIL),
        ("transmil", {"hidden": 8, "num_heads": 2, "num_layers": 2, "dropout": 0.0}, None),
    ):
        torch.manual_seed(0)
        net = build_mil_network(name, 6, **old_kwargs).eval()
        path = save_mil_checkpoint(net, tmp_path / f"{name}{suffix}")
        # rewrite the header as the earlier code wrote it: no checkpoint_format, 'max_pool', no final_norm
        old = {"network": "max_pool" if name == "max_score_pool" else name, "network_kwargs": json.dumps(old_kwargs),
               "in_features": "6"}  # fmt: skip
        if suffix == ".pt":
            build_arguments_path(path).write_text(json.dumps(old))
        else:
            save_file(load_file(str(path)), str(path), metadata=old)
        loaded, header = load_mil_checkpoint(path)
        assert type(loaded) is (expected or type(net))
        torch.testing.assert_close(loaded(x).logits, net(x).logits, rtol=0, atol=0)
    # a new checkpoint of 'max_pool' is the embedding-level max
    new = save_mil_checkpoint(build_mil_network("max_pool", 6), tmp_path / f"new{suffix}")
    assert type(load_mil_checkpoint(new)[0]) is MaxPoolMIL


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_mismatched_shapes_name_the_file(tmp_path, suffix):
    path = save_mil_checkpoint(_network(), tmp_path / f"model{suffix}")
    header_file = build_arguments_path(path)
    if suffix == ".pt":  # claim a different width in the sidecar
        header = json.loads(header_file.read_text())
        header["network_kwargs"] = json.dumps({"hidden": 4, "num_heads": 2, "num_layers": 2, "dropout": 0.0})
        header_file.write_text(json.dumps(header))
    else:  # same weights under a header that claims other input features
        from safetensors.torch import load_file, save_file

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata())
        meta["in_features"] = "7"
        save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(
        ValueError, match=rf"(?s){path.name}: the saved weights do not fit network 'transmil'.*size mismatch"
    ):
        load_mil_checkpoint(path)


def test_missing_files_and_bad_input_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_mil_checkpoint(tmp_path / "none.safetensors")
    path = save_mil_checkpoint(_network(), tmp_path / "model.pt")
    build_arguments_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="model.json are missing"):
        load_mil_checkpoint(path)
    with pytest.raises(ValueError, match="must end in one of"):
        save_mil_checkpoint(_network(), tmp_path / "model.bin")
    with pytest.raises(TypeError, match="expected a MILNetwork"):
        save_mil_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_mil_checkpoint(_network(), tmp_path / "x.pt", metadata={"network": "abmil"})
    with pytest.raises(ValueError, match="reserved"):
        save_mil_checkpoint(_network(), tmp_path / "x.pt", metadata={"checkpoint_format": "1"})
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a monai_ng MIL checkpoint"):
        load_mil_checkpoint(tmp_path / "plain.safetensors")
