"""FrozenSliceEncoder: torchvision -> timm conversion as timm's checkpoint filter, weights sources, channels, pooling,
freezing."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from monai_ng.embedding.encoder import FrozenSliceEncoder
from monai_ng.embedding.weights import (
    TorchvisionToTimmFilter,
    create_timm_model_from_file,
    file_sha256,
    state_dict_sha256,
    torchvision_vit_to_timm,
)

TINY = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TIMM_NAME = "vit_tiny_patch16_224"


def _tiny_torchvision(seed: int = 0) -> TorchvisionViT:
    """A small torchvision ViT with every parameter random (class token and biases included, unlike its init)."""
    torch.manual_seed(seed)
    model = TorchvisionViT(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.heads = torch.nn.Identity()
    return model.eval()


def _torchvision_tokens(model: TorchvisionViT, x: torch.Tensor) -> torch.Tensor:
    """All output tokens ``[B, 1 + P, D]`` of a torchvision ViT, after its final LayerNorm."""
    tokens = model._process_input(x)
    cls = model.class_token.expand(x.shape[0], -1, -1)
    return model.encoder(torch.cat([cls, tokens], dim=1))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _tv_encoder(path, **kwargs) -> FrozenSliceEncoder:
    """The tiny ViT encoder (``TINY``) loaded from the torchvision checkpoint ``path``."""
    return FrozenSliceEncoder(TIMM_NAME, torchvision_weights=path, model_kwargs=TINY, **kwargs)


@pytest.fixture()
def tv_file(tmp_path):
    model = _tiny_torchvision()
    path = tmp_path / "tv_tiny.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_converted_torchvision_matches_cls_embeddings(tv_file):
    model, path = tv_file
    enc = _tv_encoder(path, in_chans=3, normalization="none", pooling="cls")
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)  # heads replaced by Identity: the CLS token after encoder.ln
    got = enc(x)
    assert got.shape == (5, 32)
    assert _rel_err(got, expected) <= 1e-4
    meta = enc.metadata
    assert meta["weights_source"] == "torchvision" and meta["pretrained"] is True
    assert meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_mean_pooling_matches_torchvision_patch_token_mean(tv_file):
    model, path = tv_file
    enc = _tv_encoder(path, in_chans=3, normalization="none", pooling="mean")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = _torchvision_tokens(model, x)[:, 1:].mean(dim=1)
    assert _rel_err(enc(x), expected) <= 1e-4


def test_one_channel_is_rgb_summed_patch_weights(tv_file):
    _, path = tv_file
    rgb = _tv_encoder(path, in_chans=3, normalization="none")
    grey = _tv_encoder(path, in_chans=1, normalization="none")
    w3 = rgb.model.patch_embed.proj.weight
    torch.testing.assert_close(grey.model.patch_embed.proj.weight, w3.sum(dim=1, keepdim=True))
    x = torch.rand(4, 1, 32, 32)
    # summing the weights over RGB == feeding the grey image replicated on R, G and B
    assert _rel_err(grey(x), rgb(x.expand(-1, 3, -1, -1))) <= 1e-5


def test_imagenet_normalisation_one_and_three_channels(tv_file):
    _, path = tv_file
    raw3 = _tv_encoder(path, in_chans=3, normalization="none")
    net3 = _tv_encoder(path, in_chans=3, normalization="imagenet")
    net1 = _tv_encoder(path, in_chans=1, normalization="imagenet")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x3 = torch.rand(2, 3, 32, 32)
    assert _rel_err(net3(x3), raw3((x3 - mean) / std)) <= 1e-5
    # one channel: normalised with the channel-averaged ImageNet statistics, then the RGB-summed weights
    x1 = torch.rand(2, 1, 32, 32)
    z = (x1 - 0.449) / 0.226
    assert _rel_err(net1(x1), raw3(z.expand(-1, 3, -1, -1))) <= 1e-5
    assert net1.metadata["mean"] == pytest.approx([0.449]) and net1.metadata["std"] == pytest.approx([0.226])


def test_full_size_vit_b_16_conversion():
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.vit_b_16(weights=None).eval()
    converted = torchvision_vit_to_timm(model.state_dict())
    assert "head.weight" not in converted and len(converted) == 4 + 12 * 12 + 2
    import timm

    timm_model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, weight_init="skip").eval()
    timm_model.load_state_dict(converted, strict=True)
    model.heads = torch.nn.Identity()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        got = timm_model.forward_features(x)[:, 0]
    assert expected.shape == (2, 768)
    assert _rel_err(got, expected) <= 1e-4


def test_conversion_rejects_unknown_keys_and_other_layouts():
    sd = _tiny_torchvision().state_dict()
    sd["encoder.layers.encoder_layer_0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no timm counterpart"):
        torchvision_vit_to_timm(sd)
    with pytest.raises(ValueError, match="not a torchvision VisionTransformer"):
        torchvision_vit_to_timm({"patch_embed.proj.weight": torch.zeros(1)})
    head = torchvision_vit_to_timm(
        {**_tiny_torchvision().state_dict(), "heads.head.weight": torch.ones(2, 32), "heads.head.bias": torch.ones(2)},
        keep_head=True,
    )
    assert head["head.weight"].shape == (2, 32)


def test_local_safetensors_and_pth_round_trip(tmp_path):
    from safetensors.torch import save_file

    src = FrozenSliceEncoder(TIMM_NAME, weights="random-init", seed=7, in_chans=3, model_kwargs=TINY)
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    st_path, pth_path = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file(state, str(st_path))
    torch.save({"state_dict": state}, pth_path)  # wrapped checkpoints are unwrapped
    x = torch.rand(3, 3, 32, 32)
    for path in (st_path, pth_path):
        enc = FrozenSliceEncoder(TIMM_NAME, weights=path, in_chans=3, model_kwargs=TINY)
        torch.testing.assert_close(enc(x), src(x), rtol=0, atol=0)
        assert enc.pretrained and enc.metadata["weights"] == path.name
        assert enc.metadata["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    # a torchvision-layout file passed as --weights is detected and converted
    model = _tiny_torchvision()
    tv_path = tmp_path / "tv.pth"
    torch.save(model.state_dict(), tv_path)
    enc = FrozenSliceEncoder(TIMM_NAME, weights=tv_path, in_chans=3, normalization="none", model_kwargs=TINY)
    assert enc.weights_source == "torchvision"
    with torch.no_grad():
        assert _rel_err(enc(x), model(x)) <= 1e-4


class _NotATensor:
    pass


def test_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FrozenSliceEncoder(TIMM_NAME, weights=tmp_path / "nope.pth", model_kwargs=TINY)
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported extension"):
        FrozenSliceEncoder(TIMM_NAME, weights=odd, model_kwargs=TINY)
    # timm loads .pth with torch.load(weights_only=True): a pickle holding other objects is refused
    pickled = tmp_path / "obj.pth"
    torch.save({"w": torch.zeros(1), "obj": _NotATensor()}, pickled)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        FrozenSliceEncoder(TIMM_NAME, weights=pickled, model_kwargs=TINY)
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(wrong))
    with pytest.raises(ValueError, match="does not fit timm model"):
        FrozenSliceEncoder(TIMM_NAME, weights=wrong, model_kwargs=TINY)
    # a timm-layout file with a tensor missing is refused, not left randomly initialised
    partial = tmp_path / "partial.safetensors"
    state = FrozenSliceEncoder(TIMM_NAME, weights="random-init", in_chans=3, model_kwargs=TINY).model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}, str(partial))
    with pytest.raises(ValueError, match=r"missing \['blocks\.1\.mlp\.fc2\.bias'\]"):
        FrozenSliceEncoder(TIMM_NAME, weights=partial, in_chans=3, model_kwargs=TINY)


def test_torchvision_weights_must_be_torchvision_layout(tmp_path):
    src = FrozenSliceEncoder(TIMM_NAME, weights="random-init", in_chans=3, model_kwargs=TINY)
    path = tmp_path / "timm_layout.pth"
    torch.save(src.model.state_dict(), path)
    with pytest.raises(ValueError, match="not a torchvision VisionTransformer state dict"):
        _tv_encoder(path, in_chans=3)


def test_timm_loads_the_file_and_adapts_the_input_channels(tv_file):
    """The file goes through timm: ``pretrained_cfg`` names it, and timm's ``adapt_input_conv`` sums RGB weights."""
    from timm.models._manipulate import adapt_input_conv

    model, path = tv_file
    grey, converted = create_timm_model_from_file(TIMM_NAME, path, num_classes=0, in_chans=1, **TINY)
    assert converted and grey.pretrained_cfg["file"] == str(path)
    expected = adapt_input_conv(1, model.conv_proj.weight.detach())
    assert torch.equal(grey.patch_embed.proj.weight, expected)
    assert torch.equal(expected, model.conv_proj.weight.detach().sum(dim=1, keepdim=True))
    # a larger input grid: timm resamples the position embedding of the 2x2 grid to 3x3
    big = FrozenSliceEncoder(TIMM_NAME, torchvision_weights=path, model_kwargs={**TINY, "img_size": 48})
    assert big.img_size == (48, 48) and big.model.pos_embed.shape == (1, 1 + 9, 32)
    # the filter alone maps torchvision keys to exactly the model's keys
    timm_keys = set(grey.state_dict())
    assert set(TorchvisionToTimmFilter(str(path))(model.state_dict(), grey)) == timm_keys


def test_random_init_is_loud_seeded_and_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        a = FrozenSliceEncoder(TIMM_NAME, weights="random-init", seed=3, model_kwargs=TINY)
    assert "RANDOM-INIT ENCODER" in caplog.text
    meta = a.metadata
    assert meta["pretrained"] is False and meta["weights"] == "random-init" and meta["seed"] == 3
    b = FrozenSliceEncoder(TIMM_NAME, weights="random-init", seed=3, model_kwargs=TINY)
    c = FrozenSliceEncoder(TIMM_NAME, weights="random-init", seed=4, model_kwargs=TINY)
    assert a.weights_sha256 == b.weights_sha256 == state_dict_sha256(b.model.state_dict())
    assert a.weights_sha256 != c.weights_sha256
    # frozen: no trainable parameter, stays in eval mode, output carries no graph
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training and not a.model.training
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = a(x)
    assert out.is_inference() and not out.requires_grad and out.dtype == torch.float32


def test_argument_and_input_checks():
    with pytest.raises(ValueError, match="pooling"):
        FrozenSliceEncoder(TIMM_NAME, weights="random-init", pooling="max", model_kwargs=TINY)
    with pytest.raises(ValueError, match="in_chans"):
        FrozenSliceEncoder(TIMM_NAME, weights="random-init", in_chans=2, model_kwargs=TINY)
    with pytest.raises(ValueError, match="unknown timm model"):
        FrozenSliceEncoder("no_such_vit", weights="random-init")
    enc = FrozenSliceEncoder(TIMM_NAME, weights="random-init", model_kwargs=TINY)
    with pytest.raises(ValueError, match="channel"):
        enc(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="32x32"):
        enc(torch.rand(2, 1, 48, 48))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        enc(torch.rand(1, 32, 32))


def test_timm_pretrained_offline_fails_clearly(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="random-init"):
        FrozenSliceEncoder(TIMM_NAME, weights="timm", model_kwargs=TINY)
