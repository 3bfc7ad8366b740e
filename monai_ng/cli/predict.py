"""``monai-ng predict``: scan probabilities and per-slice attention for CT images, a PACS study, or an embedding store.

Input (``--input``): a DICOM series folder, a folder of studies (series found by SeriesInstanceUID at any depth), NIfTI
files, a scan manifest (``monai-ng ingest``), or an embedding store (no encoder then); or ``--dicomweb URL --study UID``
to pull a study's CT series from a PACS (``--stow`` stores the results back). The model: a bundle (``--bundle``,
its ``configs/inference.json`` and ``models/model.pt``) and/or a checkpoint of ``monai-ng experiment`` / ``train_mil``
(``--checkpoint``, with the encoder options). Library: :func:`monai_ng.bundle.predict`,
:func:`monai_ng.bundle.predict_dicomweb`.

Exit status: 0 when every scan was predicted, 1 when a scan failed (see ``failures.csv``) or nothing could run (the
reason is printed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_parser", "overrides_from_args", "run"]

#: command-line option -> inference.json id
_ENCODER_OPTIONS = {
    "encoder_name": "encoder_name",
    "encoder_weights": "encoder_weights",
    "window_preset": "window_preset",
    "channels": "channels",
    "image_size": "image_size",
    "pooling": "pooling",
    "normalization": "normalization",
    "amp": "amp",
    "slice_batch_size": "slice_batch_size",
    "top_k": "top_k",
    "threshold": "threshold",
}


def _override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected ID=VALUE (an inference.json id), got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options to ``parser``."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    where = parser.add_argument_group("input (one of)")
    where.add_argument(
        "--input",
        type=Path,
        nargs="+",
        help="DICOM folder(s) (series found by UID at any depth), NIfTI file(s), a scan manifest (.csv/.parquet) "
        "or an embedding store folder",
    )
    where.add_argument("--data", type=Path, help="embedding store folder (same as --input STORE)")
    where.add_argument("--dicomweb", metavar="URL", help="DICOMweb base URL of a PACS, e.g. http://host:8042/dicom-web")
    where.add_argument("--study", metavar="UID", help="StudyInstanceUID to pull with --dicomweb")
    where.add_argument(
        "--stow", action="store_true", help="with --dicomweb: store the KOS and Secondary Capture back (STOW-RS)"
    )
    where.add_argument("--work-dir", type=Path, help="with --dicomweb: keep the fetched series here (default: temp)")
    where.add_argument("--timeout", type=float, default=None, help="with --dicomweb: read timeout in seconds")

    model = parser.add_argument_group("model (--bundle and/or --checkpoint)")
    model.add_argument("--bundle", type=Path, help="MONAI bundle folder (configs/inference.json, models/model.pt)")
    model.add_argument(
        "--checkpoint",
        type=Path,
        help="MIL checkpoint: .safetensors (monai-ng experiment) or .pt with its .json (train_mil's best_model.pt)",
    )
    model.add_argument(
        "--embedding-spec",
        type=Path,
        help="store.json / embedding.json of the embeddings the checkpoint was trained on: refuse another encoder",
    )
    enc = parser.add_argument_group("encoder and outputs (default: the bundle's inference.json)")
    enc.add_argument("--encoder-name", help="timm ViT name, e.g. vit_base_patch16_224, vit_small_patch16_224")
    enc.add_argument("--encoder-weights", help=".safetensors / torchvision .pth file; none = random init (loudly)")
    enc.add_argument("--window-preset", help="head, chest, abdomen, ... or zscore:MEAN,STD")
    enc.add_argument("--channels", type=int, choices=(1, 3))
    enc.add_argument("--image-size", type=int)
    enc.add_argument("--pooling", choices=("cls", "mean"))
    enc.add_argument("--normalization", choices=("auto", "imagenet", "inception", "none"))
    enc.add_argument("--amp", choices=("bf16", "fp16", "none"))
    enc.add_argument("--slice-batch-size", type=int)
    enc.add_argument("--top-k", type=int, help="slices flagged per scan (JSON, figure, KOS)")
    enc.add_argument("--threshold", type=float, help="scan probability at which a finding is reported")
    enc.add_argument("--no-png", action="store_true", help="do not write the attention figures")
    enc.add_argument("--no-dicom", action="store_true", help="do not write KOS / Secondary Capture documents")
    enc.add_argument(
        "--override",
        type=_override,
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="any other inference.json id (VALUE parsed as JSON when it can be), repeatable",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=64, help="bags per batch for an embedding store")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``inference.json`` overrides given on the command line."""
    out: dict[str, Any] = {}
    for option, key in _ENCODER_OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None:
            out[key] = None if option == "encoder_weights" and value.lower() in ("none", "random-init") else value
    if args.no_png:
        out["write_png"] = False
    if args.no_dicom:
        out["write_dicom"] = False
    out.update(dict(args.override))
    return out


def _usage(message: str) -> int:
    print(f"monai-ng predict: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Predict; print where the outputs are and a one-line summary."""
    sources = [args.input is not None, args.data is not None, args.dicomweb is not None]
    if sum(sources) != 1:
        return _usage("give exactly one of --input PATH, --data STORE, --dicomweb URL --study UID")
    if args.dicomweb is not None and not args.study:
        return _usage("--dicomweb needs --study UID")
    if (args.study or args.stow or args.work_dir) and args.dicomweb is None:
        return _usage("--study, --stow and --work-dir go with --dicomweb URL")
    if args.bundle is None and args.checkpoint is None:
        return _usage("give --bundle BUNDLE_DIR or --checkpoint FILE (or both)")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("ignite", "monai", "StatsHandler", "PIL", "matplotlib", "urllib3", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from monai_ng.bundle.predict import PredictError, predict, predict_dicomweb
    from monai_ng.pacs import DicomWebError

    common: dict[str, Any] = {
        "bundle": args.bundle,
        "checkpoint": args.checkpoint,
        "overrides": overrides_from_args(args),
        "embedding_spec": args.embedding_spec,
        "device": args.device,
        "progress": not args.no_progress,
        "store_batch_size": args.batch_size,
    }
    try:
        if args.dicomweb is not None:
            timeout = None if args.timeout is None else (min(5.0, args.timeout), args.timeout)
            summary = predict_dicomweb(
                args.dicomweb, args.study, args.out, stow=args.stow, work_dir=args.work_dir, timeout=timeout, **common
            )
        else:
            summary = predict(args.input if args.input is not None else args.data, args.out, **common)
    except (PredictError, DicomWebError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as exc:  # malformed argument caught by the library before any work
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in summary.seconds.items())
    print(f"{len(summary.results)} scan(s) predicted, {len(summary.failures)} failed; outputs in {summary.output_dir}")
    if summary.stored:
        print(f"stored {len(summary.stored)} document(s) (KOS, Secondary Capture) in the study on the PACS")
    print(f"time by stage: {stages}")
    if summary.failures:
        print(f"failed scans and reasons: {summary.output_dir / 'failures.csv'}", file=sys.stderr)
        return 1
    return 0
