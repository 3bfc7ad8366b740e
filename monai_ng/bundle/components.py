"""Small builders and checks that bundle configs call at initialisation, so that bad input fails early and clearly.

Every check raises before anything is written and names the file or folder and the reason:

* :func:`open_embedding_store`: ``dataset_dir`` of training is a finished embedding store made with the bundle's
  encoder and preprocessing (its ``store.json`` is compared with :func:`embedding_spec`).
* :func:`read_labelled_manifest`: the scan manifest given to the embedding step has scan labels.
* :func:`load_network_weights`: ``models/model.pt`` is a plain ``state_dict`` (``torch.load(weights_only=True)``)
  whose keys and shapes match ``network_def``.
* :func:`check_encoder_matches`: the encoder of an inference run is the one whose embeddings ``model.pt`` was
  trained on (``models/embedding.json``, written by training beside ``model.pt``).
* :func:`load_checkpoint_network`: a checkpoint of ``monai-ng experiment`` / ``train_mil`` (build arguments in its
  header) as the inference ``network_def``, checked against the encoder's embedding width.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from monai_ng.data.embedding_store import METADATA_FILE, EmbeddingStore, StoreError
from monai_ng.data.scan_manifest import ENCODING_COLUMNS, read_scan_manifest, validate_scan_manifest
from monai_ng.data.splits import patient_level_split
from monai_ng.embedding.encoder import RANDOM_INIT, FrozenSliceEncoder
from monai_ng.embedding.stack_loading import CTSliceStackLoader
from monai_ng.networks.checkpoint import load_mil_checkpoint
from monai_ng.networks.mil_network import MILNetwork

__all__ = [
    "BundleInputError",
    "EMBEDDING_SPEC_FILE",
    "build_slice_encoder",
    "check_encoder_matches",
    "default_encoder_weights",
    "embedding_spec",
    "load_checkpoint_network",
    "load_network_weights",
    "open_embedding_store",
    "read_labelled_manifest",
    "store_split",
    "write_embedding_spec",
]

logger = logging.getLogger(__name__)

EMBEDDING_SPEC_FILE = "embedding.json"
"""Beside ``model.pt``: the encoder and preprocessing of the embeddings the model was trained on."""

_BANNER = "=" * 100


class BundleInputError(ValueError):
    """A bundle's input (dataset, store, manifest, weights) cannot be used; the message names the file and reason."""


def default_encoder_weights(
    bundle_root: str | os.PathLike, file_names: tuple[str, ...] = ("encoder.safetensors", "encoder.pth")
) -> str | None:
    """The first of ``<bundle_root>/models/<file_names>`` that exists (fetched through ``large_files.yml``), else None."""
    for name in file_names:
        path = Path(bundle_root) / "models" / name
        if path.is_file():
            return str(path)
    return None


def build_slice_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    in_chans: int = 3,
    image_size: int = 224,
    pooling: str = "cls",
    normalization: str = "auto",
    amp: str = "bf16",
    seed: int = 0,
) -> FrozenSliceEncoder:
    """The bundle's frozen slice encoder; without weights it is randomly initialised and says so loudly.

    Args:
        name: timm model name (``vit_base_patch16_224``, ``vit_tiny_patch16_224``, ...).
        weights: a ``.safetensors`` / ``.pth`` file (timm or torchvision layout), ``"timm"`` (online), or None /
            ``"random-init"`` for a seeded random initialisation.
        in_chans: input channels (number of windows).
        image_size: slice size fed to the encoder.
        pooling, normalization, amp, seed: see :class:`FrozenSliceEncoder`.

    Raises:
        BundleInputError: the weights file does not exist.
    """
    if weights in (None, "", "none", "None"):
        weights = RANDOM_INIT
    if weights not in (RANDOM_INIT, "timm") and not Path(weights).is_file():
        raise BundleInputError(f"encoder_weights {weights}: file does not exist")
    encoder = FrozenSliceEncoder(
        name,
        weights=weights,
        pooling=pooling,
        in_chans=in_chans,
        normalization=normalization,
        amp=amp,
        seed=seed,
        model_kwargs={"img_size": int(image_size)},
    )
    if not encoder.pretrained:
        logger.warning(
            "\n%s\nRANDOM-INIT ENCODER: %s is randomly initialised (seed %d). Its embeddings carry no learned features:\n"
            "results are for testing the pipeline only. Give weights with --encoder_weights FILE (.safetensors or\n"
            "torchvision .pth), or fetch the bundle's large files (large_files.yml) into models/.\n%s",
            _BANNER,
            name,
            seed,
            _BANNER,
        )
    return encoder


def embedding_spec(encoder_name: str, channels: int, pooling: str, loader: CTSliceStackLoader) -> dict[str, Any]:
    """What an embedding store must record to be usable by the bundle: encoder name, channels, pooling, preprocessing."""
    return {
        "encoder": {"name": encoder_name, "in_chans": int(channels), "pooling": pooling},
        "preprocessing": json.loads(json.dumps(loader.describe())),
    }


def open_embedding_store(dataset_dir: str | os.PathLike, expected: Mapping[str, Any] | None = None) -> EmbeddingStore:
    """Open the training store and check it was made with the bundle's encoder and preprocessing.

    Raises:
        BundleInputError: naming the folder or its ``store.json``: missing or empty folder, not a store, or made with
            another encoder / preprocessing (the first differing key, with both values).
    """
    path = Path(dataset_dir)
    if not path.is_dir():
        raise BundleInputError(
            f"dataset_dir {path}: embedding store folder does not exist (run the bundle's embed.json first)"
        )
    if not any(path.iterdir()):
        raise BundleInputError(f"dataset_dir {path}: folder is empty, not an embedding store (run embed.json first)")
    try:
        store = EmbeddingStore(path)
    except StoreError as exc:
        raise BundleInputError(f"dataset_dir {path}: not a usable embedding store: {exc}") from exc
    if expected:
        try:
            store.require_metadata(expected)
        except StoreError as exc:
            raise BundleInputError(
                f"{path / METADATA_FILE}: this store was made with another encoder or preprocessing than the "
                f"bundle's ({exc}); re-run embed.json with the bundle's settings or override them to match"
            ) from exc
    if len(np.unique(store.labels)) < 2:
        raise BundleInputError(f"dataset_dir {path}: every scan has label {int(store.labels[0])}; training needs both")
    return store


def store_split(store: EmbeddingStore, seed: int = 1001) -> dict[str, np.ndarray]:
    """Store rows of the train / val / test parts of the paper's patient-level stratified split for ``seed``."""
    assignment = patient_level_split(store.patient_ids, store.labels.tolist(), int(seed))
    parts = np.array([assignment[p] for p in store.patient_ids])
    split = {k: np.flatnonzero(parts == k) for k in ("train", "val", "test")}
    empty = [k for k, v in split.items() if len(v) == 0]
    if empty:
        raise BundleInputError(f"{store.path}: split {seed} leaves no scans in {empty}; the store has too few patients")
    return split


def read_labelled_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scan manifest (``monai-ng ingest`` output) for the embedding step; it must carry scan labels.

    Raises:
        BundleInputError: naming the file: not found, not a manifest, or without a ``label`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleInputError(f"manifest_file {path}: file does not exist (make it with `monai-ng ingest`)")
    try:
        frame = read_scan_manifest(path)
        return validate_scan_manifest(frame, str(path), required=ENCODING_COLUMNS)
    except ValueError as exc:
        reason = str(exc)
        if "label" in reason and "lacks column" in reason:
            raise BundleInputError(
                f"{path}: the manifest has no 'label' column; training needs a scan label (0/1) per scan"
            ) from exc
        raise BundleInputError(f"{path}: not a usable scan manifest: {reason}") from exc


def load_network_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``models/model.pt`` (a plain ``state_dict``, read with ``weights_only=True``) into ``network_def``.

    Raises:
        BundleInputError: naming the file: missing, unreadable as a state_dict, or whose keys / shapes differ from the
            network's (the first few differences are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise BundleInputError(f"{path}: model weights not found (train the bundle or fetch large_files.yml)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleInputError(f"{path}: cannot read as a state_dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleInputError(f"{path}: expected a plain state_dict of tensors (network_def.state_dict())")
    own = network.state_dict()
    problems = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"missing {k}" for k in own if k not in state]
    if problems:
        raise BundleInputError(
            f"{path}: weights do not match network_def ({type(network).__name__}): "
            + "; ".join(problems[:5])
            + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Check network_name / network_kwargs / the encoder (embedding width) against the training run."
        )
    network.load_state_dict(state)
    logger.info("loaded %s into %s", path, type(network).__name__)
    return network


def write_embedding_spec(store: EmbeddingStore, path: str | os.PathLike) -> Path:
    """Record the store's encoder and preprocessing beside ``model.pt`` (``models/embedding.json``)."""
    path = Path(path)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {k: store.metadata.get(k) for k in ("encoder", "preprocessing")}
    path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return path


def check_encoder_matches(
    encoder: FrozenSliceEncoder, loader: CTSliceStackLoader, path: str | os.PathLike
) -> FrozenSliceEncoder:
    """Refuse an inference encoder / preprocessing other than the one ``model.pt`` was trained on.

    ``path`` is ``models/embedding.json``; when it does not exist (weights from elsewhere) nothing is checked.

    Raises:
        BundleInputError: naming the file and the differing keys.
    """
    path = Path(path)
    if not path.is_file():
        logger.warning("%s not found: cannot check that the encoder matches the one model.pt was trained on", path)
        return encoder
    recorded = json.loads(path.read_text())
    current = json.loads(json.dumps({"encoder": encoder.metadata, "preprocessing": loader.describe()}))
    keys = ("name", "dim", "in_chans", "pooling", "weights_sha256", "normalization", "img_size")
    diffs = [
        f"encoder.{k}: trained with {recorded['encoder'].get(k)!r}, now {current['encoder'].get(k)!r}"
        for k in keys
        if (recorded.get("encoder") or {}).get(k) != current["encoder"].get(k)
    ]
    diffs += [
        f"preprocessing.{k}: trained with {(recorded.get('preprocessing') or {}).get(k)!r}, now {v!r}"
        for k, v in current["preprocessing"].items()
        if (recorded.get("preprocessing") or {}).get(k) != v
    ]
    if diffs:
        raise BundleInputError(
            f"{path}: model.pt was trained on embeddings from another encoder or preprocessing: " + "; ".join(diffs)
        )
    return encoder


def load_checkpoint_network(path: str | os.PathLike, embed_dim: int | None = None) -> MILNetwork:
    """A MIL checkpoint (``.safetensors``, or ``.pt`` with its ``.json``; :func:`monai_ng.networks.save_mil_checkpoint`)
    as an inference ``network_def``, in eval mode.

    Args:
        path: the checkpoint written by ``monai-ng experiment`` (``checkpoints/*.safetensors``) or ``train_mil``
            (``best_model.pt``).
        embed_dim: the encoder's embedding width D; the checkpoint's ``in_features`` must equal it.

    Raises:
        BundleInputError: naming the file: missing, not a MIL checkpoint, or trained on embeddings of another width.
    """
    path = Path(path)
    try:
        network, header = load_mil_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise BundleInputError(f"checkpoint {path}: {exc}") from exc
    if embed_dim is not None and int(header["in_features"]) != int(embed_dim):
        raise BundleInputError(
            f"checkpoint {path}: trained on {header['in_features']}-d embeddings, but the encoder gives {embed_dim}-d; "
            "give the encoder the checkpoint was trained with (--encoder-name / --bundle)"
        )
    logger.info("loaded %s (%s)", path, header["network"])
    return network.eval()
