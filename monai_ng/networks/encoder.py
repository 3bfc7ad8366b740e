"""Frozen ViT slice encoder: one embedding per axial CT slice.

The paper (Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs", 2026) encodes every axial slice with
torchvision's ``vit_b_16`` ImageNet weights, its patch-embedding weights summed over RGB so that it takes one channel,
and keeps the CLS token (768-d). This module wraps a timm Vision Transformer chosen by name and can load

* timm's own pretrained weights (``weights="timm"``; needs network access, fails with a clear message offline),
* a local file (``.safetensors`` through safetensors, ``.pth``/``.pt``/``.bin`` through ``torch.load(weights_only=True)``)
  in timm layout or in torchvision layout (detected from the keys),
* torchvision's ``vit_b_16`` state dict converted to the timm layout (:func:`torchvision_vit_to_timm`),
* nothing (``weights="random-init"``): a seeded random initialisation, reported loudly in the log and in
  :attr:`FrozenSliceEncoder.metadata` (``pretrained=False``, ``weights="random-init"``).

The encoder is frozen: eval mode, ``requires_grad=False`` and the forward pass runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrozenSliceEncoder",
    "load_state_dict_file",
    "state_dict_sha256",
    "file_sha256",
    "torchvision_vit_to_timm",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

RANDOM_INIT = "random-init"
TIMM_PRETRAINED = "timm"
POOLINGS = ("cls", "mean")
NORMALIZATIONS = ("auto", "imagenet", "inception", "none")
AMP_MODES = ("none", "bf16", "fp16")

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


def _unwrap_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Return the tensor dict inside a checkpoint (plain state dict, or under 'state_dict' / 'model')."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"weights file {path} holds no tensors")
    # strip DistributedDataParallel prefixes
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, or the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap_checkpoint(load_file(str(path), device="cpu"), path)
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle with non-tensor objects is refused by weights_only=True
            raise ValueError(
                f"weights file {path} could not be loaded with torch.load(weights_only=True): {exc}"
            ) from exc
        return _unwrap_checkpoint(obj, path)
    raise ValueError(f"weights file {path}: unsupported extension {suffix!r}; use .safetensors, .pth, .pt or .bin")


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


def _adapt_to_model(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Fit a timm-layout state dict to ``model``: drop the head, sum RGB patch weights for 1 channel, resample pos embed."""
    target = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not (k.startswith("head.") and k not in target)}
    key = "patch_embed.proj.weight"
    if key in state_dict and key in target:
        have, want = state_dict[key].shape[1], target[key].shape[1]
        if have != want:
            if want == 1:
                # the paper's 1-channel encoder: sum the patch-embedding weights over RGB
                state_dict[key] = state_dict[key].sum(dim=1, keepdim=True)
            else:
                raise ValueError(f"{source}: patch embedding has {have} input channels, model expects {want}")
    key = "pos_embed"
    if key in state_dict and key in target and state_dict[key].shape != target[key].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 1 if getattr(model, "cls_token", None) is not None else 0
        new_grid = list(model.patch_embed.grid_size)
        n_old = state_dict[key].shape[1] - prefix
        side = int(math.isqrt(n_old))
        if side * side != n_old:
            raise ValueError(f"{source}: position embedding of {n_old} patches is not a square grid")
        state_dict[key] = resample_abs_pos_embed(
            state_dict[key], new_size=new_grid, old_size=[side, side], num_prefix_tokens=prefix
        )
    return state_dict


class FrozenSliceEncoder(nn.Module):
    """A frozen timm Vision Transformer mapping slices ``[B, C, H, W]`` (intensities in [0, 1]) to embeddings ``[B, D]``.

    Normalisation: the input is expected in [0, 1] (a CT window mapped to [0, 1]); the encoder subtracts ``mean`` and
    divides by ``std`` per channel before the patch embedding. With ``normalization="imagenet"`` these are ImageNet's
    (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225); for 1-channel input the channel averages (0.449 / 0.226) are used,
    i.e. the grey image is normalised as the mean RGB channel, which matches the RGB-summed patch-embedding weights.
    ``"inception"`` uses 0.5 / 0.5 (timm's AugReg ViTs), ``"none"`` leaves the input unchanged (e.g. the paper's
    dataset z-score applied upstream), ``"auto"`` picks the source's own convention (timm pretrained: its
    ``pretrained_cfg``; torchvision and everything else: ImageNet).

    Pooling: ``"cls"`` keeps the class token after the final LayerNorm (the paper); ``"mean"`` averages the patch tokens
    after the final LayerNorm.

    Args:
        model_name: timm model name, e.g. ``"vit_base_patch16_224"`` (768-d) or ``"vit_tiny_patch16_224"`` (192-d).
        weights: ``"timm"`` (timm's pretrained source, online), ``"random-init"``, or a path to a ``.safetensors`` /
            ``.pth`` file in timm or torchvision layout.
        torchvision_weights: path to a torchvision ``vit_b_16`` state dict, converted with
            :func:`torchvision_vit_to_timm`; overrides ``weights``.
        pooling: ``"cls"`` or ``"mean"``.
        in_chans: 1 (grey slice, RGB-summed patch weights) or 3 (multi-window input).
        normalization: one of ``"auto"``, ``"imagenet"``, ``"inception"``, ``"none"``.
        amp: autocast on CUDA: ``"bf16"``, ``"fp16"`` or ``"none"`` (ignored on CPU).
        seed: seed of the random initialisation (the same on every rank so that shards agree).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch16_224",
        weights: str | Path = TIMM_PRETRAINED,
        torchvision_weights: str | Path | None = None,
        pooling: str = "cls",
        in_chans: int = 1,
        normalization: str = "auto",
        amp: str = "none",
        seed: int = 0,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
        import timm

        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}")
        kwargs = dict(model_kwargs or {})
        self.model_name = model_name
        self.pooling = pooling
        self.in_chans = in_chans
        self.amp = amp

        weights_str = str(weights) if weights is not None else RANDOM_INIT
        if torchvision_weights is not None:
            source = "torchvision"
        elif weights_str == TIMM_PRETRAINED:
            source = "timm"
        elif weights_str in (RANDOM_INIT, "none", "random"):
            source = RANDOM_INIT
        else:
            source = "file"

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if source == "timm":
                try:
                    model = timm.create_model(model_name, pretrained=True, num_classes=0, in_chans=in_chans, **kwargs)
                except Exception as exc:
                    raise RuntimeError(
                        f"could not fetch timm's pretrained weights for {model_name!r} ({type(exc).__name__}: {exc}). "
                        "Offline? Pass a local file (--weights FILE.safetensors|.pth, or --torchvision-weights "
                        "vit_b_16.pth), or --weights random-init to run with an untrained encoder."
                    ) from exc
            else:
                model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        if not hasattr(model, "forward_features") or getattr(model, "patch_embed", None) is None:
            raise ValueError(f"timm model {model_name!r} is not a patch-embedding Vision Transformer")

        weights_file: str | None = None
        if source in ("file", "torchvision"):
            path = Path(torchvision_weights if source == "torchvision" else weights_str)
            state = load_state_dict_file(path)
            weights_file = path.name
            digest = file_sha256(path)
            if source == "torchvision" or is_torchvision_vit_state_dict(state):
                if not is_torchvision_vit_state_dict(state):
                    raise ValueError(f"--torchvision-weights {path}: not a torchvision VisionTransformer state dict")
                state = torchvision_vit_to_timm(state)
                source = "torchvision"
            state = _adapt_to_model(state, model, f"weights file {path}")
            result = model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f"weights file {path} does not fit timm model {model_name!r}: missing {result.missing_keys[:8]}, "
                    f"unexpected {result.unexpected_keys[:8]}"
                )
        else:
            digest = state_dict_sha256(model.state_dict())
        if source == RANDOM_INIT:
            logger.warning(
                "RANDOM-INIT ENCODER: %s has no pretrained weights (seed %d); its embeddings carry no learned "
                "features and every output is marked encoder.pretrained=false",
                model_name,
                seed,
            )

        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if normalization == "auto":
            normalization = "imagenet"
            if source == "timm" and tuple(cfg.get("mean", IMAGENET_MEAN)) == INCEPTION_MEAN:
                normalization = "inception"
        mean, std = {
            "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
            "inception": (INCEPTION_MEAN, INCEPTION_STD),
            "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        }[normalization]
        if in_chans == 1:
            mean, std = (sum(mean) / 3.0,), (sum(std) / 3.0,)
        self.normalization = normalization
        self._mean_values = [float(v) for v in mean]
        self._std_values = [float(v) for v in std]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, in_chans, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, in_chans, 1, 1), persistent=False)

        self.model = model
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.embed_dim = int(model.num_features)
        self.img_size = tuple(int(s) for s in model.patch_embed.img_size)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        self.pretrained = source != RANDOM_INIT
        self.weights_source = source
        self.weights_sha256 = digest
        self.weights_file = weights_file
        self.seed = seed

    @property
    def metadata(self) -> dict[str, Any]:
        """What determines the embeddings; stored under ``encoder`` in the embedding store's metadata."""
        weights = {"timm": "timm-pretrained", RANDOM_INIT: RANDOM_INIT}.get(self.weights_source, self.weights_file)
        meta: dict[str, Any] = {
            "name": self.model_name,
            "dim": self.embed_dim,
            "pretrained": self.pretrained,
            "weights": weights,
            "weights_source": self.weights_source,
            "weights_sha256": self.weights_sha256,
            "pooling": self.pooling,
            "in_chans": self.in_chans,
            "img_size": list(self.img_size),
            "normalization": self.normalization,
            "mean": list(self._mean_values),
            "std": list(self._std_values),
        }
        if self.weights_source == RANDOM_INIT:
            meta["seed"] = self.seed
        if self.weights_source == "torchvision":
            meta["conversion"] = "torchvision->timm" + (", patch weights summed over RGB" if self.in_chans == 1 else "")
        return meta

    def train(self, mode: bool = True) -> FrozenSliceEncoder:
        """The encoder stays in eval mode whatever is asked (it is frozen)."""
        super().train(False)
        return self

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected slices [B, C, H, W], got {getattr(x, 'shape', type(x))}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channel(s), got input of shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected slices of {self.img_size[0]}x{self.img_size[1]}, got {tuple(x.shape[-2:])}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode slices.

        Args:
            x: ``[B, C, H, W]`` float slices in [0, 1] (any device; moved to the encoder's device).

        Returns:
            ``[B, D]`` float32 embeddings.
        """
        self._check(x)
        device = self.mean.device
        with torch.inference_mode():
            x = x.to(device=device, dtype=torch.float32, non_blocking=True)
            x = (x - self.mean) / self.std
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            use_amp = device.type == "cuda" and self.amp != "none"
            dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
                tokens = self.model.forward_features(x)  # [B, prefix + P, D], after the final norm
            if self.pooling == "cls":
                out = tokens[:, 0]
            else:
                out = tokens[:, self.num_prefix_tokens :].mean(dim=1)
            return out.float()

    def to_channels_last(self) -> FrozenSliceEncoder:
        """Put the (convolutional) patch embedding in channels_last memory format; a no-op on CPU for correctness."""
        self.model.to(memory_format=torch.channels_last)
        return self
