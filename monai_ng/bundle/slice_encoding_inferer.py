"""``SliceEncodingInferer``: slice stack -> frozen encoder (in slice batches) -> MIL network, as one MONAI inferer.

A bundle's inference runs CT images end to end: the evaluator hands this inferer a scan's slice stack
``[1, S, C, H, W]``; it encodes the slices with the frozen ViT (:class:`monai_ng.embedding.FrozenSliceEncoder`) in
batches of ``slice_batch_size`` into ``[1, S, D]`` embeddings and calls the MIL network on them. MONAI's own
``SliceInferer`` cannot do this: it stitches per-slice *images* back into a volume and fails on per-slice vectors.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from monai_ng.embedding.encoder import FrozenSliceEncoder

__all__ = ["SliceEncodingInferer"]


class SliceEncodingInferer(Inferer):
    """Encode each slice with a frozen encoder, then run the MIL network on the bag of slice embeddings.

    Args:
        encoder: the frozen slice encoder (moved to the input's device on first use).
        slice_batch_size: slices per encoder forward pass.

    Call: ``inferer(inputs [B, S, C, H, W], network, *args, **kwargs)`` returns ``network(embeddings [B, S, D],
    *args, **kwargs)``; an empty ``inputs`` (a batch whose scan failed to load) returns None without calling either.

    Attributes:
        seconds: wall-clock seconds spent so far in the encoder (``"encode"``) and the MIL network (``"network"``),
            for stage timings (``monai-ng predict``, ``benchmarks/bench_predict.py``).
    """

    def __init__(self, encoder: FrozenSliceEncoder, slice_batch_size: int = 64) -> None:
        super().__init__()
        if not isinstance(encoder, FrozenSliceEncoder):
            raise TypeError(f"encoder must be a FrozenSliceEncoder, got {type(encoder).__name__}")
        if isinstance(slice_batch_size, bool) or not isinstance(slice_batch_size, int) or slice_batch_size < 1:
            raise ValueError(f"slice_batch_size must be a positive int, got {slice_batch_size!r}")
        self.encoder = encoder
        self.slice_batch_size = slice_batch_size
        self.seconds: dict[str, float] = {"encode": 0.0, "network": 0.0}

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[B, S, C, H, W]`` slices -> ``[B, S, D]`` float32 embeddings (no gradient)."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 5:
            raise ValueError(f"expected slice stacks [B, S, C, H, W], got {tuple(getattr(inputs, 'shape', ()))}")
        b, s = int(inputs.shape[0]), int(inputs.shape[1])
        if s < 1:
            raise ValueError("a scan must have at least one slice")
        if self.encoder.mean.device != inputs.device:
            self.encoder.to(inputs.device)
        flat = inputs.reshape(b * s, *inputs.shape[2:])
        chunks = [self.encoder(flat[i : i + self.slice_batch_size]) for i in range(0, b * s, self.slice_batch_size)]
        return torch.cat(chunks).reshape(b, s, -1)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, torch.Tensor) and inputs.numel() == 0:
            return None
        start = time.perf_counter()
        embeddings = self.encode(inputs)
        param = next(network.parameters(), None)
        if param is not None:
            embeddings = embeddings.to(device=param.device)
        middle = time.perf_counter()
        out = network(embeddings, *args, **kwargs)
        end = time.perf_counter()
        self.seconds["encode"] += middle - start
        self.seconds["network"] += end - middle
        return out
