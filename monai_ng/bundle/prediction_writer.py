"""``PredictionWriter``: an ignite handler writing each scan's inference outputs as the evaluator produces them.

Per scan (:mod:`monai_ng.reporting` does the writing, atomically): ``<output_dir>/<scan_id>.json`` (scan probability,
per-slice scores inferior -> superior with index, z in mm and, for DICOM, SOPInstanceUID; top-k), ``<scan_id>.png``
(attention over slice position with the fitted Normal Guidance reference and the top-k slices as thumbnails in the
bundle's first window) and, for DICOM input with valid UIDs, ``<scan_id>_kos.dcm`` (Key Object Selection flagging the
top-k slices) and ``<scan_id>_sc.dcm`` (the figure as a Secondary Capture). When the run completes:
``predictions.csv`` (one row per slice of every scan) and ``failures.csv`` (``scan_id, stage, reason``).

A scan that fails (load, inference or writing) is recorded in ``failures.csv`` and the run goes on. No patient
identifier is written: scan ids are pseudonymous (:mod:`monai_ng.bundle.scan_inputs`) and the reasons name files by
path only. (The DICOM documents copy the source study's patient and study modules, as the standard requires.)
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_ng.networks.mil_network import unpack_mil_output
from monai_ng.reporting import (
    ScanResult,
    SliceScore,
    write_atomic,
    write_attention_png,
    write_dicom_documents,
    write_results_csv,
    write_scan_json,
)

__all__ = ["FAILURES_FILE", "PREDICTIONS_FILE", "PredictionWriter", "split_network_output"]

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
FAILURES_FILE = "failures.csv"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _valid_uid(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


def split_network_output(pred: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B], head-averaged attention [B, N])`` from a MIL network's output.

    Accepts a :class:`~monai_ng.networks.MILOutput` (attention ``[B, N, H]``) or the tensor form ``[B, 1 + N]``
    (column 0 the scan logit, columns 1..N the head-averaged attention).
    """
    if isinstance(pred, torch.Tensor):
        if pred.ndim != 2 or pred.shape[1] < 2:
            raise ValueError(f"a tensor network output must be [B, 1 + N], got {tuple(pred.shape)}")
        return pred[:, 0], pred[:, 1:]
    logits, attention, _ = unpack_mil_output(pred)
    if attention.ndim == 3:
        attention = attention.mean(dim=-1)
    return logits.reshape(-1), attention


class PredictionWriter:
    """Write the outputs of every scan an inference evaluator processes (see module docstring).

    Args:
        output_dir: folder for the outputs (created).
        top_k: slices flagged per scan (JSON ``top_k``, figure, KOS).
        threshold: ``finding`` when the scan probability is at least this.
        write_png: write the attention figure.
        write_dicom: write KOS + Secondary Capture for DICOM input whose UIDs are valid DICOM UIDs.
        thumbnail_channel: which input channel (window) the figure's thumbnails show.

    Attributes:
        results: the :class:`ScanResult` of every scan written so far.
        failures: ``{"scan_id", "stage", "reason"}`` per failed scan.
        seconds: wall-clock seconds spent writing so far (stage timings).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        top_k: int = 5,
        threshold: float = 0.5,
        write_png: bool = True,
        write_dicom: bool = True,
        thumbnail_channel: int = 0,
    ) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.output_dir = Path(output_dir)
        self.top_k = top_k
        self.threshold = float(threshold)
        self.write_png = bool(write_png)
        self.write_dicom = bool(write_dicom)
        self.thumbnail_channel = int(thumbnail_channel)
        self.results: list[ScanResult] = []
        self.failures: list[dict[str, str]] = []
        self.seconds = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def _started(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.results, self.failures = [], []

    def _fail(self, scan_id: str, stage: str, reason: str) -> None:
        logger.warning("scan %s failed at %s: %s", scan_id, stage, reason)
        self.failures.append({"scan_id": scan_id, "stage": stage, "reason": reason})

    def __call__(self, engine: Engine) -> None:
        start = time.perf_counter()
        try:
            self._write_batch(engine)
        finally:
            self.seconds += time.perf_counter() - start

    def _write_batch(self, engine: Engine) -> None:
        batch = engine.state.batch
        output = engine.state.output or {}
        scan_ids = list(batch.get("scan_id") or [])
        errors = list(batch.get("error") or [None] * len(scan_ids))
        metas = list(batch.get("slice_meta") or [None] * len(scan_ids))
        pred = output.get("pred") if isinstance(output, Mapping) else None
        if any(errors) or pred is None:
            for scan_id, error in zip(scan_ids, errors, strict=True):
                self._fail(scan_id, "load", error or "the batch held a scan that failed to load; use batch_size 1")
            return
        logits, attention = split_network_output(pred)
        probabilities = torch.sigmoid(logits.detach().float()).cpu().numpy()
        attention = attention.detach().float().cpu().numpy()
        images = output.get("image")
        for b, scan_id in enumerate(scan_ids):
            try:
                result = self._result(scan_id, float(probabilities[b]), attention[b], metas[b])
            except (ValueError, TypeError) as exc:
                self._fail(scan_id, "result", f"{type(exc).__name__}: {exc}")
                continue
            try:
                self._write(result, images[b] if isinstance(images, torch.Tensor) else None, metas[b])
            except Exception as exc:  # a scan whose files cannot be written is recorded, the run goes on
                self._fail(scan_id, "write", f"{type(exc).__name__}: {exc}")
                continue
            self.results.append(result)

    def _result(self, scan_id: str, probability: float, attention: np.ndarray, meta: Mapping | None) -> ScanResult:
        meta = meta or {}
        n = int(attention.shape[0])
        z = meta.get("z_mm")
        z = z if z is not None and len(z) == n else None
        uids = meta.get("sop_instance_uids")
        uids_ok = uids is not None and len(uids) == n and all(_valid_uid(u) for u in uids)
        classes = meta.get("sop_class_uids")
        classes_ok = uids_ok and classes is not None and len(classes) == n and all(_valid_uid(c) for c in classes)
        scores = np.clip(attention, 0.0, None)
        slices = tuple(
            SliceScore(
                index=i,
                score=float(scores[i]),
                z_mm=None if z is None else float(z[i]),
                sop_instance_uid=str(uids[i]) if uids_ok else None,
                sop_class_uid=str(classes[i]) if classes_ok else None,
            )
            for i in range(n)
        )
        study, series = meta.get("study_uid"), meta.get("series_uid")
        return ScanResult(
            scan_id=scan_id,
            scan_probability=min(max(probability, 0.0), 1.0),
            slices=slices,
            threshold=self.threshold,
            study_instance_uid=study if uids_ok and _valid_uid(study) else None,
            series_instance_uid=series if uids_ok and _valid_uid(series) else None,
        )

    def _thumbnails(self, result: ScanResult, image: torch.Tensor | None) -> dict[int, np.ndarray] | None:
        if image is None or image.ndim != 4 or image.shape[0] != result.num_slices:
            return None
        channel = min(self.thumbnail_channel, int(image.shape[1]) - 1)
        thumbs = {}
        for s in result.top_k(self.top_k):
            plane = image[s.index, channel].detach().float().cpu().numpy()
            lo, hi = float(plane.min()), float(plane.max())
            if lo < 0.0 or hi > 1.0:  # z-scored input: rescale for display only
                plane = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
            thumbs[s.index] = plane
        return thumbs

    def _write(self, result: ScanResult, image: torch.Tensor | None, meta: Mapping | None) -> None:
        write_scan_json(result, self.output_dir, top_k=self.top_k)
        rgb = None
        if self.write_png:
            _, rgb = write_attention_png(
                result, self.output_dir, top_k=self.top_k, thumbnails=self._thumbnails(result, image)
            )
        files = (meta or {}).get("files")
        if self.write_dicom and files and result.slices[0].sop_instance_uid is not None:
            import pydicom

            sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
            write_dicom_documents(sources, result, self.output_dir, rgb=rgb, top_k=self.top_k)

    def finish(self, engine: Engine | None = None) -> None:
        """Write ``predictions.csv`` (all scans) and ``failures.csv``; log a one-line summary."""
        start = time.perf_counter()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_results_csv(self.results, self.output_dir / PREDICTIONS_FILE, top_k=self.top_k)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["scan_id", "stage", "reason"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.failures)
        write_atomic(self.output_dir / FAILURES_FILE, text.getvalue().encode("utf-8"))
        logger.info(
            "inference outputs in %s: %d scan(s) written, %d failed (see %s)",
            self.output_dir,
            len(self.results),
            len(self.failures),
            FAILURES_FILE,
        )
        self.seconds += time.perf_counter() - start
