"""MIL network checkpoints: a plain ``state_dict`` of the network plus the arguments that rebuild it.

One format for training (:func:`monai_ng.engines.train_mil`), the experiment runner, ``monai-ng predict`` and MONAI
bundles:

- ``.safetensors``: the ``state_dict`` tensors; the build arguments in the file's metadata header.
- ``.pt`` / ``.pth``: exactly ``network.state_dict()`` saved with ``torch.save`` (MONAI bundles' ``models/model.pt``
  convention, loadable with ``torch.load(path, weights_only=True)``), with the build arguments in a JSON sidecar
  beside it (``model.pt`` -> ``model.json``, see :func:`build_arguments_path`).

The build arguments are a flat ``dict[str, str]``: ``network`` (the :data:`~monai_ng.networks.registry.MIL_NETWORKS`
name), ``in_features``, ``network_kwargs`` (JSON of the remaining constructor arguments), ``checkpoint_format``
(:data:`CHECKPOINT_FORMAT`) and any extra entries the caller adds (the experiment records ``method``).

Checkpoints without ``checkpoint_format`` were written before the paper-faithful defaults: their ``"max_pool"`` is the
per-slice-score max pooling, so they are rebuilt as ``"max_score_pool"`` (every other network's saved build
arguments still rebuild the same architecture).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from monai_ng.networks.mil_network import MILNetwork
from monai_ng.networks.registry import build_mil_network, mil_network_name

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "build_arguments_path",
    "checkpoint_header",
    "load_mil_checkpoint",
    "save_mil_checkpoint",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
#: written into every new header; absent in checkpoints from before ``max_pool`` became the embedding-level max
CHECKPOINT_FORMAT = "2"
_REQUIRED = ("network", "in_features", "network_kwargs")
_RESERVED = (*_REQUIRED, "checkpoint_format")
#: registry names whose meaning changed with checkpoint format 2, mapped to what older checkpoints hold
_BEFORE_FORMAT_2 = {"max_pool": "max_score_pool"}


def _check_suffix(path: Path) -> None:
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"{path}: a MIL checkpoint must end in one of {CHECKPOINT_SUFFIXES}, got {path.suffix!r}")


def build_arguments_path(path: str | Path) -> Path:
    """The JSON sidecar holding the build arguments of a ``.pt``/``.pth`` checkpoint: same folder and stem, ``.json``."""
    return Path(path).with_suffix(".json")


def save_mil_checkpoint(network: MILNetwork, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Save a MIL network's ``state_dict`` and its build arguments.

    Args:
        network: a registered :class:`~monai_ng.networks.mil_network.MILNetwork`.
        path: ``*.safetensors``, or ``*.pt`` / ``*.pth`` (then ``build_arguments_path(path)`` is written too).
        metadata: extra string entries stored with the build arguments (must not use their keys).

    Returns:
        ``path``.

    Raises:
        TypeError: ``network`` is not a registered MIL network, or a ``metadata`` value is not a string.
        ValueError: unknown suffix, or ``metadata`` reuses a reserved key.
    """
    path = Path(path)
    _check_suffix(path)
    if not isinstance(network, MILNetwork):
        raise TypeError(f"save_mil_checkpoint: expected a MILNetwork, got {type(network).__name__}")
    extra = dict(metadata or {})
    reserved = sorted(set(extra) & set(_RESERVED))
    if reserved:
        raise ValueError(f"save_mil_checkpoint: metadata keys {reserved} are reserved for the build arguments")
    if not all(isinstance(v, str) for v in extra.values()):
        raise TypeError("save_mil_checkpoint: metadata values must be strings")
    kwargs = network.build_arguments
    in_features = kwargs.pop("in_features")
    header = {
        "network": mil_network_name(network),
        "network_kwargs": json.dumps(kwargs),
        "in_features": str(in_features),
        "checkpoint_format": CHECKPOINT_FORMAT,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata=header)
    else:
        torch.save(state, path)
        build_arguments_path(path).write_text(json.dumps(header, indent=2) + "\n")
    return path


def checkpoint_header(path: str | Path) -> dict[str, str]:
    """The build arguments (and extra metadata) of a checkpoint, without reading its tensors.

    Raises:
        FileNotFoundError: the checkpoint (or, for ``.pt``, its JSON sidecar) does not exist.
        ValueError: unknown suffix, or the header lacks the build arguments.
    """
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
    else:
        sidecar = build_arguments_path(path)
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: its build arguments {sidecar.name} are missing beside it")
        try:
            header = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{sidecar}: not valid JSON ({exc})") from exc
        if not isinstance(header, dict):
            raise ValueError(f"{sidecar}: expected a JSON object of build arguments")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise ValueError(f"{path}: not a monai_ng MIL checkpoint (header lacks {missing})")
    return header


def load_mil_checkpoint(path: str | Path) -> tuple[MILNetwork, dict[str, str]]:
    """Rebuild a MIL network saved by :func:`save_mil_checkpoint`, in eval mode on the CPU.

    Args:
        path: ``*.safetensors`` or ``*.pt`` / ``*.pth`` (with its JSON sidecar).

    Returns:
        ``(network, header)``: the network with the saved weights, and the build arguments plus extra metadata
        (string values, e.g. ``header["in_features"]``).

    Raises:
        FileNotFoundError: missing checkpoint or sidecar.
        ValueError: not a MIL checkpoint, unknown network, or weights that do not fit the rebuilt network (the message
            names the file and the mismatching tensors).
    """
    path = Path(path)
    header = checkpoint_header(path)
    try:
        kwargs = json.loads(header["network_kwargs"])
        name = header["network"]
        if "checkpoint_format" not in header:  # written before format 2: max_pool was the per-slice-score max
            name = _BEFORE_FORMAT_2.get(name, name)
        network = build_mil_network(name, int(header["in_features"]), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild the network from its build arguments: {exc}") from exc
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the saved weights do not fit network {header['network']!r}: {exc}") from exc
    network.eval()
    return network, header
