"""Predict on CT images (or an embedding store) with a bundle's inference, and over DICOMweb: the Python API behind
``monai-ng predict``.

:func:`predict` runs a bundle's own ``configs/inference.json`` -- the same ``initialize`` and ``run`` expressions
``python -m monai.bundle run`` evaluates, with ``dataset_dir`` / ``output_dir`` (and any other id) overridden -- so the
command line, the demo and the bundle share one implementation: scan discovery
(:func:`~monai_ng.bundle.scan_inputs.find_scan_inputs`: DICOM series by UID at any depth, NIfTI files, a scan manifest),
:class:`~monai_ng.bundle.scan_stack.LoadSliceStackd`, :class:`~monai_ng.bundle.slice_encoding_inferer.SliceEncodingInferer`
and :class:`~monai_ng.bundle.prediction_writer.PredictionWriter` (``<scan>.json``, ``predictions.csv``, PNG, KOS + SC,
``failures.csv``). With a ``checkpoint`` (``monai-ng experiment`` / ``train_mil``) instead of the bundle's
``models/model.pt``, ``network_def`` is rebuilt from the checkpoint's header; without a ``bundle`` the recipe is the
head bundle's ``inference.json`` (``RECIPE_BUNDLE``) with the encoder and preprocessing given as overrides.

An embedding store as input needs no encoder: the MIL network scores its bags (``scan_scores.csv``,
``slice_scores.csv``, ``metrics.json`` as before, plus ``<scan>.json``, ``predictions.csv`` and PNGs).

:func:`predict_dicomweb` pulls a study's CT series from a PACS (:func:`monai_ng.pacs.fetch_ct_series`), predicts, and
with ``stow=True`` stores the KOS and Secondary Capture documents back (:func:`monai_ng.pacs.store_instances`).

Nothing here logs a patient identifier: scan ids are pseudonymous (``series-<hash>``) unless the user's manifest or
file names chose them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from monai_ng.bundle.components import BundleInputError, check_encoder_matches, load_network_weights
from monai_ng.bundle.prediction_writer import FAILURES_FILE, PREDICTIONS_FILE, PredictionWriter
from monai_ng.bundle.scan_inputs import ScanInputError
from monai_ng.bundle.scan_stack import LoadSliceStackd
from monai_ng.bundle.slice_encoding_inferer import SliceEncodingInferer
from monai_ng.reporting import ScanResult

__all__ = [
    "RECIPE_BUNDLE",
    "PredictError",
    "PredictSummary",
    "bundles_root",
    "is_embedding_store",
    "predict",
    "predict_dicomweb",
]

logger = logging.getLogger(__name__)

RECIPE_BUNDLE = "head_ct_hemorrhage_localization"
"""The bundle whose ``inference.json`` is the recipe of a checkpoint-only run (the three bundles' inference configs
differ only in ``window_preset``, which a run overrides)."""

_STORE_MARKER = "store.json"


class PredictError(ValueError):
    """A prediction cannot start: bad bundle, checkpoint, input or encoder; the message names the file and reason."""


@dataclass
class PredictSummary:
    """What a prediction run produced.

    Attributes:
        output_dir: the output folder.
        results: one :class:`~monai_ng.reporting.ScanResult` per scan written.
        failures: ``{"scan_id", "stage", "reason"}`` per scan that failed (also in ``failures.csv``).
        seconds: wall-clock seconds by stage: ``discover`` (finding the scans), ``build`` (encoder and network),
            ``weights`` (loading and checking ``model.pt``), ``load`` (reading and preprocessing the slices),
            ``encode``, ``network`` (the MIL network), ``write`` (all output files), ``total``; store input:
            ``build``, ``network`` (loading + scoring), ``write``, ``total``.
        stored: SOPInstanceUIDs stored on the PACS (``predict_dicomweb(..., stow=True)``).
    """

    output_dir: Path
    results: list[ScanResult]
    failures: list[dict[str, str]]
    seconds: dict[str, float] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no scan failed."""
        return not self.failures

    def files(self, scan_id: str) -> dict[str, Path]:
        """The files written for one scan: ``json``, ``png``, ``kos``, ``sc`` (those that exist)."""
        names = {
            "json": f"{scan_id}.json",
            "png": f"{scan_id}.png",
            "kos": f"{scan_id}_kos.dcm",
            "sc": f"{scan_id}_sc.dcm",
        }
        return {k: self.output_dir / v for k, v in names.items() if (self.output_dir / v).is_file()}


def bundles_root() -> Path:
    """The ``bundles/`` folder of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "bundles"


def is_embedding_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding an embedding store (``store.json``)."""
    return Path(path).is_dir() and (Path(path) / _STORE_MARKER).is_file()


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost bundle / input error of a chain (MONAI wraps errors of config expressions)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (BundleInputError, ScanInputError, FileNotFoundError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _recipe(bundle: str | os.PathLike | None) -> tuple[Path, Path]:
    """``(bundle_root, configs folder)`` of the run."""
    root = Path(bundle) if bundle is not None else bundles_root() / RECIPE_BUNDLE
    configs = root / "configs"
    if not (configs / "inference.json").is_file():
        if bundle is None:
            raise PredictError(
                f"{configs / 'inference.json'}: the recipe of a checkpoint-only run is missing (this install has no "
                "bundles/ folder); pass --bundle BUNDLE_DIR"
            )
        raise PredictError(f"bundle {root}: configs/inference.json not found (is this a MONAI bundle folder?)")
    return root, configs


def _parser(configs: Path, overrides: Mapping[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(f=str(configs / "inference.json"))
    if (configs / "metadata.json").is_file():
        parser.read_meta(f=str(configs / "metadata.json"))
    parser.update(pairs=dict(overrides))
    parser.parse(reset=True)
    return parser


def _device_expr(device: str | None) -> str | None:
    if device is None:
        return None
    if not isinstance(device, str) or not device.replace(":", "").replace("_", "").isalnum():
        raise PredictError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}")
    return f"$torch.device('{device}')"


def _as_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise PredictError("no input given")
    missing = [str(p) for p in items if not Path(p).exists()]
    if missing:
        raise PredictError(f"input {missing[0]} does not exist")
    return [str(Path(p)) for p in items]


def predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    embedding_spec: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
    store_batch_size: int = 64,
) -> PredictSummary:
    """Predict every scan of ``inputs``; write the per-scan outputs to ``output_dir``.

    Args:
        inputs: a DICOM folder (one series, or studies: series found by SeriesInstanceUID at any depth, files of
            several series mixed in one folder included), NIfTI file(s), a scan manifest (``.csv`` / ``.parquet``),
            a list of these, or one embedding store folder (then no encoder runs).
        output_dir: output folder (created).
        bundle: bundle folder: its ``configs/inference.json`` is the recipe and, without ``checkpoint``, its
            ``models/model.pt`` the model (checked against ``models/embedding.json``).
        checkpoint: MIL checkpoint of ``monai-ng experiment`` / ``train_mil`` (``.safetensors``, or ``.pt`` with its
            ``.json``), used instead of the bundle's ``model.pt``.
        overrides: config ids of ``inference.json`` to override, e.g. ``{"encoder_name": "vit_small_patch16_224",
            "encoder_weights": "vit.safetensors", "window_preset": "head", "image_size": 224, "amp": "none",
            "top_k": 5, "threshold": 0.5, "write_dicom": False, "slice_batch_size": 32}``.
        embedding_spec: a ``store.json`` / ``embedding.json`` recording the encoder and preprocessing the model was
            trained on; the run refuses another (default: the bundle's ``models/embedding.json`` when the bundle's
            own model is used).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default the config's (CUDA when available).
        progress: show a progress bar over scans.
        store_batch_size: bags per batch when ``inputs`` is an embedding store.

    Returns:
        The :class:`PredictSummary` (results, failures, stage timings).

    Raises:
        PredictError: nothing could be predicted: a bad bundle, checkpoint, input or encoder (the message names the
            file and the reason). A scan that fails is not an error: it is recorded in ``failures.csv``.
    """
    start = time.perf_counter()
    if bundle is None and checkpoint is None:
        raise PredictError("give a bundle (--bundle BUNDLE_DIR) or a checkpoint (--checkpoint FILE), or both")
    paths = _as_inputs(inputs)
    out = Path(output_dir)
    if len(paths) == 1 and is_embedding_store(paths[0]):
        return _predict_store(paths[0], out, bundle, checkpoint, overrides or {}, device, store_batch_size, start)
    root, configs = _recipe(bundle)
    pairs: dict[str, Any] = {
        "bundle_root": str(root),
        "dataset_dir": paths[0] if len(paths) == 1 else paths,
        "output_dir": str(out),
    }
    if checkpoint is not None:
        pairs.update(
            load_pretrain=False,
            checkpoint_file=str(checkpoint),
            network_def="$monai_ng.bundle.load_checkpoint_network(@checkpoint_file, @encoder_def.embed_dim)"
            ".with_tensor_output()",
        )
        if bundle is None:
            pairs["encoder_weights"] = None
    if device is not None:
        pairs["device"] = _device_expr(device)
    pairs.update(overrides or {})

    seconds: dict[str, float] = {}
    try:
        parser = _parser(configs, pairs)
        t = time.perf_counter()
        scans = parser.get_parsed_content("scans")
        seconds["discover"] = time.perf_counter() - t
        t = time.perf_counter()
        encoder = parser.get_parsed_content("encoder_def")
        parser.get_parsed_content("network")
        seconds["build"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(len(parser["initialize"])):
            parser.get_parsed_content(f"initialize#{i}")
        if embedding_spec is not None:
            check_encoder_matches(encoder, parser.get_parsed_content("stack_loader"), embedding_spec)
        evaluator = parser.get_parsed_content("evaluator")
        seconds["weights"] = time.perf_counter() - t
    except PredictError:
        raise
    except Exception as exc:
        cause = _root_cause(exc)
        raise PredictError(str(cause) if cause is not exc else f"{type(exc).__name__}: {exc}") from exc

    writer = next((h for h in parser.get_parsed_content("handlers") if isinstance(h, PredictionWriter)), None)
    if writer is None:
        raise PredictError(f"{configs / 'inference.json'}: 'handlers' holds no monai_ng.bundle.PredictionWriter")
    inferer = parser.get_parsed_content("inferer")
    loaders = [
        t
        for t in getattr(parser.get_parsed_content("preprocessing"), "transforms", ())
        if isinstance(t, LoadSliceStackd)
    ]
    _attach_progress(evaluator, writer, len(scans), progress)
    logger.info("predicting %d scan(s) into %s", len(scans), out)
    t = time.perf_counter()
    for i in range(len(parser["run"])):
        parser.get_parsed_content(f"run#{i}")
    run_seconds = time.perf_counter() - t
    if isinstance(inferer, SliceEncodingInferer):
        seconds.update(inferer.seconds)
    seconds["load"] = sum(loader.seconds for loader in loaders)
    seconds["write"] = writer.seconds
    seconds["other"] = max(run_seconds - sum(seconds.get(k, 0.0) for k in ("load", "encode", "network", "write")), 0.0)
    seconds["total"] = time.perf_counter() - start
    return PredictSummary(out, list(writer.results), list(writer.failures), seconds)


def _attach_progress(evaluator: Any, writer: PredictionWriter, total: int, enabled: bool) -> None:
    """A tqdm bar over scans (on stderr) showing how many failed so far."""
    from ignite.engine import Events
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="scan", desc="predict", disable=not enabled or total < 1, leave=True)

    def _step(engine: Any) -> None:
        bar.update(len(engine.state.batch.get("scan_id") or [1]))
        if writer.failures:
            bar.set_postfix(failed=len(writer.failures), refresh=False)

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, _step)
    evaluator.add_event_handler(Events.COMPLETED, lambda _: bar.close())
    evaluator.add_event_handler(Events.EXCEPTION_RAISED, lambda *_: bar.close())


def _predict_store(
    store_dir: str,
    out: Path,
    bundle: str | os.PathLike | None,
    checkpoint: str | os.PathLike | None,
    overrides: Mapping[str, Any],
    device: str | None,
    batch_size: int,
    start: float,
) -> PredictSummary:
    """Score an embedding store's bags with the MIL network (no encoder); PNGs only when ``write_png`` is set."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from monai_ng.data.bag_dataset import BagDataset, collate_packed_bags
    from monai_ng.data.embedding_store import EmbeddingStore, StoreError
    from monai_ng.engines.evaluation import evaluate_mil
    from monai_ng.networks.checkpoint import load_mil_checkpoint
    from monai_ng.networks.registry import build_mil_network
    from monai_ng.reporting import SliceScore, check_scan_id, write_attention_png, write_results_csv, write_scan_json

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    try:
        store = EmbeddingStore(store_dir)
        if checkpoint is not None:
            network, meta = load_mil_checkpoint(checkpoint)
            if store.dim != int(meta["in_features"]):
                raise PredictError(
                    f"{checkpoint} expects {meta['in_features']}-d embeddings but {store_dir} holds {store.dim}-d"
                )
        else:
            root, configs = _recipe(bundle)
            parser = _parser(configs, {"bundle_root": str(root), **overrides})
            network = build_mil_network(
                parser.get_parsed_content("network_name"), store.dim, **parser.get_parsed_content("network_kwargs")
            )
            load_network_weights(network, Path(parser.get_parsed_content("ckpt_dir")) / "model.pt")
            _check_store_spec(store.metadata, Path(parser.get_parsed_content("ckpt_dir")) / "embedding.json")
    except PredictError:
        raise
    except (StoreError, BundleInputError, FileNotFoundError, ValueError) as exc:
        raise PredictError(str(exc)) from exc
    seconds["build"] = time.perf_counter() - t
    t = time.perf_counter()
    loader = DataLoader(BagDataset(store), batch_size=batch_size, collate_fn=collate_packed_bags)
    metrics, scans, slices = evaluate_mil(network, loader, device or "cpu")
    seconds["network"] = time.perf_counter() - t
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scans.to_csv(out / "scan_scores.csv", index=False)
    slices.to_csv(out / "slice_scores.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    top_k = int(overrides.get("top_k", 5))
    threshold = float(overrides.get("threshold", 0.5))
    results: list[ScanResult] = []
    failures: list[dict[str, str]] = []
    by_scan = {k: g for k, g in slices.groupby("scan_id", sort=False)} if len(slices) else {}
    for row in scans.itertuples(index=False):
        scan_id = str(row.scan_id)
        try:
            check_scan_id(scan_id)
            group = by_scan[row.scan_id].sort_values("slice")
            result = ScanResult(
                scan_id=scan_id,
                scan_probability=min(max(float(row.probability), 0.0), 1.0),
                slices=tuple(SliceScore(index=i, score=max(float(a), 0.0)) for i, a in enumerate(group["attention"])),
                threshold=threshold,
            )
            write_scan_json(result, out, top_k=top_k)
            if overrides.get("write_png", False):  # stores are large and hold no images: opt-in
                write_attention_png(result, out, top_k=top_k)
        except (KeyError, TypeError, ValueError) as exc:
            failures.append({"scan_id": scan_id, "stage": "result", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        results.append(result)
    write_results_csv(results, out / PREDICTIONS_FILE, top_k=top_k)
    pd.DataFrame(failures, columns=["scan_id", "stage", "reason"]).to_csv(out / FAILURES_FILE, index=False)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return PredictSummary(out, results, failures, seconds)


def _check_store_spec(metadata: Mapping[str, Any], spec_path: Path) -> None:
    """Refuse a store made with another encoder than the one the bundle's ``model.pt`` was trained on."""
    if not spec_path.is_file():
        return
    recorded = json.loads(spec_path.read_text())
    keys = ("name", "dim", "in_chans", "pooling", "weights_sha256")
    diffs = [
        f"encoder.{k}: trained with {(recorded.get('encoder') or {}).get(k)!r}, store has "
        f"{(metadata.get('encoder') or {}).get(k)!r}"
        for k in keys
        if (recorded.get("encoder") or {}).get(k) != (metadata.get("encoder") or {}).get(k)
    ]
    if diffs:
        raise PredictError(f"{spec_path}: the store's embeddings come from another encoder: " + "; ".join(diffs))


def predict_dicomweb(
    url: str,
    study_uid: str,
    output_dir: str | os.PathLike,
    *,
    stow: bool = False,
    work_dir: str | os.PathLike | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
    max_attempts: int = 3,
    **predict_kwargs: Any,
) -> PredictSummary:
    """Pull a study's CT series over DICOMweb, predict each, and optionally store the documents back.

    Args:
        url: DICOMweb base URL, e.g. ``http://127.0.0.1:8042/dicom-web``.
        study_uid: StudyInstanceUID of the study.
        output_dir: output folder (as :func:`predict`).
        stow: store each scan's ``<scan>_kos.dcm`` and ``<scan>_sc.dcm`` back into the study with STOW-RS (opt-in).
        work_dir: where the fetched series go (kept); default a temporary folder, deleted afterwards.
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``).
        timeout: ``(connect, read)`` seconds per request; default :data:`monai_ng.pacs.DEFAULT_TIMEOUT`.
        max_attempts: attempts per retrieval request.
        **predict_kwargs: ``bundle``, ``checkpoint``, ``overrides``, ``device``, ``progress``... of :func:`predict`.

    Returns:
        The :class:`PredictSummary`; ``stored`` lists the SOPInstanceUIDs stored.

    Raises:
        monai_ng.pacs.DicomWebError: unreachable server, unknown study, no CT series, a failed retrieval or a
            rejected store (subclasses say which); nothing is predicted or stored after a retrieval error.
        PredictError: as :func:`predict`.
    """
    from monai_ng.pacs import DEFAULT_TIMEOUT, fetch_ct_series, store_instances

    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix="monai-ng-dicomweb-") as tmp:
        target = Path(work_dir) if work_dir is not None else Path(tmp) / "study"
        t = time.perf_counter()
        folders = fetch_ct_series(url, study_uid, target, headers=headers, timeout=timeout, max_attempts=max_attempts)
        fetch_seconds = time.perf_counter() - t
        logger.info("fetched %d CT series of the study", len(folders))
        summary = predict([str(f) for f in folders], output_dir, **predict_kwargs)
    summary.seconds["fetch"] = fetch_seconds
    if stow:
        documents = [p for r in summary.results for k, p in summary.files(r.scan_id).items() if k in ("kos", "sc")]
        if not documents:
            logger.warning("--stow: no DICOM document was written (every scan failed, or write_dicom is off)")
            return summary
        t = time.perf_counter()
        summary.stored = store_instances(url, documents, study_uid=study_uid, headers=headers, timeout=timeout)
        summary.seconds["stow"] = time.perf_counter() - t
        logger.info("stored %d document(s) in the study", len(summary.stored))
    return summary
