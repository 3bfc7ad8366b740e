"""Local weight files for the frozen slice encoder: loaded by timm, torchvision layout mapped as a checkpoint filter.

timm reads the file (``.safetensors`` through safetensors, anything else through ``torch.load(weights_only=True)``,
see ``timm.models._helpers.load_state_dict``), adapts the patch embedding to the model's input channels (for one
channel it sums the RGB weights: ``timm.models._manipulate.adapt_input_conv``), resamples the position embedding to
the model's grid and drops the classification head. What this module adds is the one thing timm does not know:
torchvision's ``VisionTransformer`` key layout (e.g. the paper's ``vit_b_16`` ImageNet weights), mapped to timm's by
:func:`torchvision_vit_to_timm` inside :class:`TorchvisionToTimmFilter`, and a strict check that the file fits the
model (timm loads non-strictly once it has dropped the head).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "WEIGHT_FILE_SUFFIXES",
    "TorchvisionToTimmFilter",
    "create_timm_model_from_file",
    "file_sha256",
    "is_torchvision_vit_state_dict",
    "state_dict_sha256",
    "torchvision_vit_to_timm",
]

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")

_TV_BLOCK = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")
_TV_BLOCK_PARTS = {
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj.weight": "attn.proj.weight",
    "self_attention.out_proj.bias": "attn.proj.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.3.weight": "mlp.fc2.weight",
    "mlp.3.bias": "mlp.fc2.bias",
    # torchvision < 0.13 named the MLP layers linear_1 / linear_2
    "mlp.linear_1.weight": "mlp.fc1.weight",
    "mlp.linear_1.bias": "mlp.fc1.bias",
    "mlp.linear_2.weight": "mlp.fc2.weight",
    "mlp.linear_2.bias": "mlp.fc2.bias",
}
_TV_TOP = {
    "conv_proj.weight": "patch_embed.proj.weight",
    "conv_proj.bias": "patch_embed.proj.bias",
    "class_token": "cls_token",
    "encoder.pos_embedding": "pos_embed",
    "encoder.ln.weight": "norm.weight",
    "encoder.ln.bias": "norm.bias",
}


def is_torchvision_vit_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is in torchvision's ``VisionTransformer`` layout (has ``conv_proj`` and ``class_token``)."""
    return "conv_proj.weight" in state_dict and "class_token" in state_dict


def torchvision_vit_to_timm(state_dict: Mapping[str, torch.Tensor], keep_head: bool = False) -> dict[str, torch.Tensor]:
    """Convert a torchvision ``VisionTransformer`` state dict (e.g. ``vit_b_16``) to timm's ``VisionTransformer`` layout.

    Both implementations are the same pre-norm ViT (Dosovitskiy et al. 2021): LayerNorm with eps 1e-6, exact GELU,
    a class token prepended before the learned position embedding (which therefore includes the class position,
    ``[1, 1 + P, D]`` in both), ``nn.MultiheadAttention``'s packed ``in_proj`` (q, k, v stacked on the output axis)
    equal to timm's ``qkv`` linear. The mapping is:

    ``conv_proj`` -> ``patch_embed.proj``, ``class_token`` -> ``cls_token``, ``encoder.pos_embedding`` -> ``pos_embed``,
    ``encoder.layers.encoder_layer_i.{ln_1, self_attention.in_proj_*, self_attention.out_proj, ln_2, mlp.0, mlp.3}``
    -> ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``encoder.ln`` -> ``norm``,
    ``heads.head`` -> ``head`` (dropped unless ``keep_head``; a ``heads.pre_logits`` layer is always dropped).

    Args:
        state_dict: torchvision state dict.
        keep_head: keep the classification head as ``head.weight``/``head.bias``.

    Returns:
        A new dict in timm layout (tensors are shared, not copied).

    Raises:
        ValueError: a key that is neither known nor a classification head, or a missing required key.
    """
    if not is_torchvision_vit_state_dict(state_dict):
        raise ValueError(
            "not a torchvision VisionTransformer state dict: expected keys 'conv_proj.weight' and 'class_token', "
            f"got e.g. {sorted(state_dict)[:5]}"
        )
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key in _TV_TOP:
            out[_TV_TOP[key]] = value
            continue
        match = _TV_BLOCK.match(key)
        if match is not None and match.group(2) in _TV_BLOCK_PARTS:
            out[f"blocks.{int(match.group(1))}.{_TV_BLOCK_PARTS[match.group(2)]}"] = value
            continue
        if key.startswith("heads."):
            if keep_head and key in ("heads.head.weight", "heads.head.bias"):
                out["head." + key.rsplit(".", 1)[1]] = value
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"torchvision ViT state dict has keys with no timm counterpart: {unknown[:10]}")
    missing = [k for k in _TV_TOP.values() if k not in out]
    if missing:
        raise ValueError(f"torchvision ViT state dict lacks required entries (timm names): {missing}")
    return out


class TorchvisionToTimmFilter:
    """timm checkpoint filter (``filter_fn(state_dict, model)``): torchvision layout -> timm layout, then timm's own.

    Called by ``timm.models.load_pretrained`` on the loaded state dict, before timm adapts the input channels and drops
    the classification head. A torchvision ``VisionTransformer`` state dict is mapped with
    :func:`torchvision_vit_to_timm`; then timm's ``vision_transformer.checkpoint_filter_fn`` runs (position-embedding
    resampling to the model's grid, other timm conventions) when the model is a timm ``VisionTransformer``. Finally
    the keys are checked against the model's, the head excepted, because timm loads non-strictly once it has dropped
    the head and would otherwise leave a missing tensor randomly initialised.

    Args:
        source: the file's name in error messages.
        require_torchvision: refuse a state dict that is not in torchvision layout (``--torchvision-weights``).

    Attributes:
        converted: whether the last state dict seen was in torchvision layout (and was converted).
    """

    def __init__(self, source: str, require_torchvision: bool = False) -> None:
        self.source = source
        self.require_torchvision = bool(require_torchvision)
        self.converted = False

    def __call__(self, state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Return ``state_dict`` in ``model``'s timm layout.

        Raises:
            ValueError: not torchvision layout although required, or keys that do not fit ``model``.
        """
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        self.converted = is_torchvision_vit_state_dict(state_dict)
        if self.require_torchvision and not self.converted:
            raise ValueError(f"--torchvision-weights {self.source}: not a torchvision VisionTransformer state dict")
        tensors = {str(k): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        if self.converted:
            tensors = torchvision_vit_to_timm(tensors)
        if isinstance(model, VisionTransformer):
            tensors = checkpoint_filter_fn(tensors, model)
        expected = set(model.state_dict())
        missing = sorted(expected - set(tensors))
        unexpected = sorted(k for k in set(tensors) - expected if not k.startswith("head."))
        if missing or unexpected:
            name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
            raise ValueError(
                f"weights file {self.source} does not fit timm model {name!r}: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}"
            )
        return tensors


def create_timm_model_from_file(
    model_name: str,
    path: str | Path,
    require_torchvision: bool = False,
    **model_kwargs: Any,
) -> tuple[nn.Module, bool]:
    """Create a timm model and load a local weight file into it, both through timm.

    The model is created with ``pretrained_cfg_overlay=dict(file=path)`` (so ``model.pretrained_cfg["file"]`` names
    the file) and ``timm.models.load_pretrained`` loads it: the file through safetensors or
    ``torch.load(weights_only=True)``, then :class:`TorchvisionToTimmFilter`, then timm's input-channel adaptation
    (``in_chans`` of 1: RGB patch weights summed) and head removal -- what ``timm.create_model(pretrained=True)`` does,
    with the torchvision mapping plugged in as the checkpoint filter (timm's ViT factory fixes its own filter, so it
    cannot be passed through ``create_model``).

    Args:
        model_name: timm model name.
        path: ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file, timm or torchvision layout.
        require_torchvision: refuse a file that is not in torchvision layout.
        **model_kwargs: keyword arguments of ``timm.create_model`` (``in_chans``, ``num_classes``, ``img_size``, ...).

    Returns:
        The model (train mode, as timm returns it) and whether the file was in torchvision layout.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, a file that is not a plain tensor state dict, or one that does not fit.
    """
    import timm
    from timm.models import load_pretrained

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix.lower() not in WEIGHT_FILE_SUFFIXES:
        raise ValueError(
            f"weights file {path}: unsupported extension {path.suffix.lower()!r}; use one of {WEIGHT_FILE_SUFFIXES}"
        )
    model = timm.create_model(model_name, pretrained=False, pretrained_cfg_overlay=dict(file=str(path)), **model_kwargs)
    checkpoint_filter = TorchvisionToTimmFilter(str(path), require_torchvision=require_torchvision)
    try:
        load_pretrained(
            model,
            num_classes=int(getattr(model, "num_classes", 0)),
            in_chans=int(model_kwargs.get("in_chans", 3)),
            filter_fn=checkpoint_filter,
            strict=True,
        )
    except ValueError:
        raise
    except Exception as exc:  # timm's weights_only refusal, a corrupt file, a shape mismatch
        raise ValueError(
            f"weights file {path} could not be loaded by timm (safetensors, or torch.load(weights_only=True)): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return model, checkpoint_filter.converted


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's tensors in sorted-key order (name, dtype, shape and raw bytes of each tensor)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
