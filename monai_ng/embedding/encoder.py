"""Frozen ViT slice encoder: one embedding per axial CT slice.

The paper (Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs", 2026) encodes every axial slice with
torchvision's ``vit_b_16`` ImageNet weights, its patch-embedding weights summed over RGB so that it takes one channel,
and keeps the CLS token (768-d). This module wraps a timm Vision Transformer chosen by name; timm loads

* its own pretrained weights (``weights="timm"``; needs network access, fails with a clear message offline),
* a local file (``.safetensors`` through safetensors, ``.pth``/``.pt``/``.bin`` through
  ``torch.load(weights_only=True)``) in timm layout or in torchvision layout (e.g. torchvision's ``vit_b_16``), the
  latter mapped by the checkpoint filter of :mod:`monai_ng.embedding.weights`,
* nothing (``weights="random-init"``): a seeded random initialisation, reported loudly in the log and in
  :attr:`FrozenSliceEncoder.metadata` (``pretrained=False``, ``weights="random-init"``).

The encoder is frozen: eval mode, ``requires_grad=False`` and the forward pass runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ng.embedding.weights import create_timm_model_from_file, file_sha256, state_dict_sha256

__all__ = [
    "AMP_MODES",
    "NORMALIZATIONS",
    "POOLINGS",
    "RANDOM_INIT",
    "FrozenSliceEncoder",
]

logger = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
TIMM_PRETRAINED = "timm"
POOLINGS = ("cls", "mean")
NORMALIZATIONS = ("auto", "imagenet", "inception", "none")
AMP_MODES = ("none", "bf16", "fp16")


def _normalization_stats(
    normalization: str, model: nn.Module, source: str
) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """Resolve ``normalization`` to its name and per-channel RGB mean and std.

    ``"auto"``: timm's pretrained weights use their own data config (``timm.data.resolve_model_data_config``); every
    other source (a torchvision or timm-layout file, a random init) uses ImageNet's statistics.
    """
    from timm.data import (
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        IMAGENET_INCEPTION_MEAN,
        IMAGENET_INCEPTION_STD,
        resolve_model_data_config,
    )

    named = {
        "imagenet": (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)),
        "inception": (tuple(IMAGENET_INCEPTION_MEAN), tuple(IMAGENET_INCEPTION_STD)),
        "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    }
    if normalization != "auto":
        return (normalization, *named[normalization])
    if source != TIMM_PRETRAINED:
        return ("imagenet", *named["imagenet"])
    data_config = resolve_model_data_config(model)
    stats = (tuple(float(v) for v in data_config["mean"]), tuple(float(v) for v in data_config["std"]))
    for name in ("inception", "imagenet"):
        if stats == named[name]:
            return (name, *stats)
    return ("pretrained_cfg", *stats)


class FrozenSliceEncoder(nn.Module):
    """A frozen timm Vision Transformer mapping slices ``[B, C, H, W]`` (intensities in [0, 1]) to embeddings ``[B, D]``.

    Normalisation: the input is expected in [0, 1] (a CT window mapped to [0, 1]); the encoder subtracts ``mean`` and
    divides by ``std`` per channel before the patch embedding. With ``normalization="imagenet"`` these are ImageNet's
    (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225); for 1-channel input the channel averages (0.449 / 0.226) are used,
    i.e. the grey image is normalised as the mean RGB channel, which matches the RGB-summed patch-embedding weights.
    ``"inception"`` uses 0.5 / 0.5 (timm's AugReg ViTs), ``"none"`` leaves the input unchanged (e.g. the paper's
    dataset z-score applied upstream), ``"auto"`` picks the source's own convention (timm pretrained: its data config,
    ``timm.data.resolve_model_data_config``; local files and random init: ImageNet).

    Pooling: ``"cls"`` keeps the class token after the final LayerNorm (the paper); ``"mean"`` averages the patch tokens
    after the final LayerNorm.

    Args:
        model_name: timm model name, e.g. ``"vit_base_patch16_224"`` (768-d) or ``"vit_tiny_patch16_224"`` (192-d).
        weights: ``"timm"`` (timm's pretrained source, online), ``"random-init"``, or a path to a ``.safetensors`` /
            ``.pth`` file in timm or torchvision layout.
        torchvision_weights: path to a torchvision ``vit_b_16`` state dict, converted with
            :func:`monai_ng.embedding.weights.torchvision_vit_to_timm`; overrides ``weights``.
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

        weights_file: str | None = None
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
            elif source in ("file", "torchvision"):
                path = Path(torchvision_weights if source == "torchvision" else weights_str)
                model, converted = create_timm_model_from_file(
                    model_name,
                    path,
                    require_torchvision=source == "torchvision",
                    num_classes=0,
                    in_chans=in_chans,
                    **kwargs,
                )
                source = "torchvision" if converted else "file"
                weights_file = path.name
            else:
                model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        if not hasattr(model, "forward_features") or getattr(model, "patch_embed", None) is None:
            raise ValueError(f"timm model {model_name!r} is not a patch-embedding Vision Transformer")
        digest = file_sha256(path) if weights_file is not None else state_dict_sha256(model.state_dict())
        if source == RANDOM_INIT:
            logger.warning(
                "RANDOM-INIT ENCODER: %s has no pretrained weights (seed %d); its embeddings carry no learned "
                "features and every output is marked encoder.pretrained=false",
                model_name,
                seed,
            )

        normalization, mean, std = _normalization_stats(normalization, model, source)
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
