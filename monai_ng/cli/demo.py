"""``monai-ng demo``: the real pipeline, end to end and offline, on phantom head CT (``--synthetic``: embeddings).

Default (the README's first command, ``make demo``): every step the head CT bundle
(``bundles/head_ct_hemorrhage_localization``) runs on real data, on a phantom download instead:

1. phantom head CT DICOM in the RSNA intracranial hemorrhage 2019 layout (``stage_2_train/*.dcm`` +
   ``stage_2_train.csv``), hemorrhages of varied size, contrast and position, plus a few held-out series;
2. ``monai-ng ingest --dataset ich`` -> scan manifest;
3. the bundle's ``embed.json`` -> embedding store (frozen ViT; randomly initialised unless ``--encoder-weights``);
4. ``train.json`` then ``train.json + evaluate.json`` for each method (centre baseline, ABMIL, ABMIL+NG by default)
   on each patient-level split (seeds 1001 / 2001 / 3001);
5. ``inference.json`` on the held-out series with one trained model: per-scan JSON, one CSV, attention figures (PNG)
   and DICOM Key Object Selection + Secondary Capture documents;
6. a results table (scan AUROC, localization AUROC/AUPRC, mean +- std over the splits) and where to look.

Every bundle step runs through MONAI's ``ConfigWorkflow`` with the same overrides the printed
``python -m monai.bundle run`` commands pass. ``--synthetic`` runs the earlier demo instead: a synthetic CT-like
*embedding* store and the reduced method comparison of ``monai-ng experiment`` (:meth:`ExperimentConfig.demo`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monai_ng.cli.experiment import (
    add_grid_arguments,
    config_from_args,
    invalid_config,
    prepare,
    run_methods,
    select_methods,
)
from monai_ng.data.synthetic import SYNTHETIC_KINDS
from monai_ng.experiment import ExperimentConfig, MethodSpec, default_methods

__all__ = ["CT_DEFAULTS", "DEFAULT_METHODS", "PhantomSettings", "configure_parser", "run", "run_ct_demo"]

BUNDLE_NAME = "head_ct_hemorrhage_localization"

#: methods of the CT demo when ``--methods`` is not given (names of :func:`monai_ng.experiment.default_methods`)
DEFAULT_METHODS = ("centre baseline", "ABMIL", "ABMIL+NG (forward KL)")

#: training defaults of the CT demo (``--lrs``, ``--ng-weights``, ``--epochs``, ... override them)
CT_DEFAULTS = ExperimentConfig(
    lrs=(0.01,),
    ng_weights=(1.0,),
    l1_weights=(0.0,),
    max_epochs=30,
    batch_size=16,
    seeds=(1001, 2001, 3001),
    device="cpu",
    num_workers=0,
)


@dataclass(frozen=True)
class PhantomSettings:
    """The phantom download of the CT demo (fixed before any result was seen; recorded in ``data/phantom.json``)."""

    scans: int = 240
    heldout: int = 6
    slices: tuple[int, int] = (24, 32)
    size: int = 64
    lesion_hu: tuple[float, float] = (50.0, 90.0)
    lesion_scale: tuple[float, float] = (0.75, 2.0)
    positive_rate: float = 0.5
    seed: int = 0


@dataclass
class _Encoder:
    name: str = "vit_tiny_patch16_224"
    image_size: int = 64
    weights: str | None = None

    def overrides(self) -> dict[str, Any]:
        return {"encoder_name": self.name, "image_size": self.image_size}


@dataclass
class _Timings:
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------------
# command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    d = PhantomSettings()
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="run the synthetic-embedding demo instead (a CT-like embedding store + monai-ng experiment's comparison)",
    )
    ct = parser.add_argument_group("phantom CT demo (the default)")
    ct.add_argument("--scans", type=int, default=d.scans, help="phantom series to train on (default: %(default)s)")
    ct.add_argument(
        "--heldout", type=int, default=d.heldout, help="held-out series for inference (default: %(default)s)"
    )
    ct.add_argument(
        "--slices",
        type=int,
        nargs=2,
        default=list(d.slices),
        metavar=("MIN", "MAX"),
        help=f"slices per series (default: {d.slices[0]} {d.slices[1]})",
    )
    ct.add_argument("--size", type=int, default=d.size, help="phantom slice size in pixels (default: %(default)s)")
    ct.add_argument("--data-seed", type=int, default=d.seed, help="phantom seed (default: %(default)s)")
    ct.add_argument(
        "--encoder", default=_Encoder.name, help="timm ViT name of the frozen slice encoder (default: %(default)s)"
    )
    ct.add_argument(
        "--image-size", type=int, default=_Encoder.image_size, help="encoder input size (default: %(default)s)"
    )
    ct.add_argument(
        "--encoder-weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="encoder weights (.safetensors timm layout, or torchvision vit_b_16 .pth with --encoder "
        "vit_base_patch16_224); without it the encoder is RANDOMLY INITIALISED",
    )
    ct.add_argument(
        "--infer-method", default=None, help="method whose split-1 model runs inference (default: the last method)"
    )
    ct.add_argument("--top-k", type=int, default=5, help="slices flagged per held-out scan (default: %(default)s)")
    ct.add_argument("--bundle", type=Path, default=None, help=f"bundle folder (default: bundles/{BUNDLE_NAME})")
    ct.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    synthetic = parser.add_argument_group("--synthetic demo")
    synthetic.add_argument("--n-bags", type=int, default=400, help="synthetic scans to generate (default: 400)")
    synthetic.add_argument("--kind", default="ct_like", choices=list(SYNTHETIC_KINDS))
    synthetic.add_argument("--dim", type=int, default=64, help="synthetic embedding width (default: %(default)s)")
    grid = parser.add_argument_group(
        "training (both demos)",
        "defaults shown are --synthetic's; the CT demo's are --lrs 0.01 --epochs 30 --batch-size 16 "
        "--methods 'centre baseline,ABMIL,ABMIL+NG (forward KL)' --threads 1 (one value each for --lrs, --ng-weights "
        "and --l1-weights; --workers: DataLoader workers of the embedding step, default 1, training uses none)",
    )
    add_grid_arguments(grid, ExperimentConfig.demo())


def run(args: argparse.Namespace) -> int:
    """``--synthetic``: the synthetic-embedding experiment; otherwise the phantom CT pipeline (:func:`run_ct_demo`)."""
    if args.synthetic:
        return _run_synthetic(args)
    return run_ct_demo(args)


def _run_synthetic(args: argparse.Namespace) -> int:
    """Write the synthetic store (once) under ``OUT/data`` and run the experiment on it."""
    status = prepare(args)
    if status is not None:
        return status
    methods = select_methods(args)
    if methods is None:
        return 2
    cfg = config_from_args(args, ExperimentConfig.demo())
    if invalid_config(cfg):
        return 2
    from monai_ng.data.synthetic import write_synthetic_store

    out = Path(args.out)
    data = out / "data"
    if not (data / "store.json").is_file():
        print(f"writing a synthetic {args.kind} store with {args.n_bags} scans to {data}")
        try:
            write_synthetic_store(args.kind, data, n_bags=args.n_bags, seed=0, dim=args.dim, overwrite=True)
        except ValueError as exc:  # invalid generator settings (e.g. --dim 0): a usage error, not a traceback
            return _error(str(exc))
    return run_methods(data, out, methods, cfg)


def _error(message: str) -> int:
    print(f"monai-ng demo: error: {message}", file=sys.stderr)
    return 2


def _ct_methods(args: argparse.Namespace) -> list[MethodSpec] | None:
    known = {m.name: m for m in default_methods(transmil_dim=args.transmil_dim) if m.instance_weight == 0}
    if args.list:
        print("\n".join(known))
        return []
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(DEFAULT_METHODS)
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        _error(f"unknown method(s) {unknown}; the CT demo knows: {list(known)}")
        return None
    return [known[w] for w in dict.fromkeys(wanted)]


def _validate(args: argparse.Namespace, cfg: ExperimentConfig) -> str | None:
    if args.scans < 12:
        return "--scans must be >= 12 (a patient-level split needs train, validation and test patients of both labels)"
    if args.heldout < 1:
        return "--heldout must be >= 1"
    if not 1 <= args.slices[0] <= args.slices[1]:
        return "--slices MIN MAX needs 1 <= MIN <= MAX"
    if args.size < 16 or args.image_size < 16:
        return "--size and --image-size must be >= 16"
    if len(cfg.lrs) != 1 or len(cfg.ng_weights) != 1 or len(cfg.l1_weights) != 1:
        return (
            "the CT demo trains one configuration per method: give one value each to --lrs, --ng-weights, --l1-weights"
        )
    if args.top_k < 1:
        return "--top-k must be >= 1"
    if args.workers is not None and args.workers < 0:
        return "--workers must be >= 0"
    if args.encoder_weights is not None and not Path(args.encoder_weights).is_file():
        return f"--encoder-weights {args.encoder_weights}: file does not exist"
    return None


def _find_bundle(given: Path | None) -> Path | None:
    candidates = [given] if given is not None else [Path(__file__).resolve().parents[2] / "bundles" / BUNDLE_NAME]
    if given is None:
        candidates.append(Path.cwd() / "bundles" / BUNDLE_NAME)
    for path in candidates:
        if (path / "configs" / "train.json").is_file():
            return path.resolve()
    return None


# ---------------------------------------------------------------------------------------------------------------------
# the phantom CT demo


def run_ct_demo(args: argparse.Namespace) -> int:
    """Phantom RSNA ICH download -> ingest -> embed -> train / evaluate x methods x splits -> inference -> table."""
    t0 = time.perf_counter()
    if args.threads is not None and args.threads < 1:
        return _error("--threads must be >= 1")
    methods = _ct_methods(args)
    if methods is None:
        return 2
    if not methods:  # --list
        return 0
    cfg = config_from_args(args, CT_DEFAULTS)
    if invalid_config(cfg):
        return 2
    problem = _validate(args, cfg)
    if problem:
        return _error(problem)
    bundle = _find_bundle(args.bundle)
    if bundle is None:
        return _error(f"bundle {args.bundle or 'bundles/' + BUNDLE_NAME} not found (pass --bundle DIR)")
    infer_name = args.infer_method or methods[-1].name
    if infer_name not in [m.name for m in methods]:
        return _error(f"--infer-method {infer_name!r} is not among the methods run: {[m.name for m in methods]}")

    settings = PhantomSettings(
        scans=args.scans, heldout=args.heldout, slices=tuple(args.slices), size=args.size, seed=args.data_seed
    )
    weights = str(Path(args.encoder_weights).resolve()) if args.encoder_weights else None
    encoder = _Encoder(args.encoder, args.image_size, weights)
    out = Path(args.out).resolve()
    progress = not args.no_progress
    timings = _Timings()
    _print_header(out, bundle, settings, encoder, methods, cfg)

    embed_workers = 1 if args.workers is None else args.workers
    previous_threads = _set_threads(args.threads or 1)
    previous_disable = logging.root.manager.disable
    logging.disable(logging.INFO)  # the workflows' per-epoch INFO lines; warnings (RANDOM-INIT ENCODER) still show
    try:
        with timings.stage("phantom data + ingest"):
            truth, heldout_truth = _prepare_data(out / "data", settings, progress)
        store = out / "data" / _store_name(encoder)
        with timings.stage("embed"):
            _embed(bundle, out / "data" / "scans.csv", store, encoder, embed_workers, progress)
        with timings.stage("train + evaluate"):
            results = _train_and_evaluate(bundle, store, out / "runs", methods, cfg, encoder, progress)
        infer = next(m for m in methods if m.name == infer_name)
        predictions = out / "predictions"
        with timings.stage("inference"):
            _infer(bundle, out / "data" / "heldout", predictions, out / "runs", infer, cfg, encoder, args, progress)
    except Exception as exc:  # a step failed: say which and why, without a traceback through the config machinery
        print(f"monai-ng demo: error: {_explain(exc)}", file=sys.stderr)
        if encoder.weights:
            print(
                f"  (with --encoder-weights, --encoder must name the weights' architecture: now {encoder.name})",
                file=sys.stderr,
            )
        return 1
    finally:
        logging.disable(previous_disable)
        _set_threads(previous_threads)

    table = _write_results(out, results, methods)
    heldout_table = _heldout_table(predictions, heldout_truth, args.top_k)
    total = time.perf_counter() - t0
    _print_summary(out, table, heldout_table, infer, cfg, encoder, timings, total, len(truth))
    return 0


def _explain(exc: BaseException) -> str:
    """The exception and its causes in one line (MONAI wraps a failing config item in its own errors)."""
    parts = []
    while exc is not None and len(parts) < 4:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if text not in parts:
            parts.append(text)
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def _print_header(out, bundle, settings, encoder, methods, cfg) -> None:
    print("monai-ng demo: the head CT bundle end to end on phantom CT (offline; nothing is downloaded)")
    print(f"  bundle:   {bundle}")
    print(f"  output:   {out}")
    print(
        f"  data:     {settings.scans} phantom head CT series (RSNA ICH 2019 layout, {settings.slices[0]}-"
        f"{settings.slices[1]} slices of {settings.size}x{settings.size}) + {settings.heldout} held-out series"
    )
    print(
        f"  encoder:  {encoder.name} at {encoder.image_size}x{encoder.image_size}, "
        + (f"weights {encoder.weights}" if encoder.weights else "RANDOMLY INITIALISED (no --encoder-weights FILE)")
    )
    print(
        f"  training: {', '.join(m.name for m in methods)}; splits {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.max_epochs} epochs, batch {cfg.batch_size}, lr {cfg.lrs[0]}"
    )
    if not encoder.weights:
        print(
            "\n  NOTE: the slice encoder is randomly initialised, so its embeddings carry no learned features and the\n"
            "  numbers below test the pipeline, not the method. Give ImageNet weights offline with\n"
            "  --encoder-weights FILE (see docs/getting_started.md).\n"
        )


def _store_name(encoder: _Encoder) -> str:
    weights = Path(encoder.weights).stem if encoder.weights else "random-init"
    return f"embeddings_{encoder.name}_{encoder.image_size}px_{weights}"


def _bundle_workflow(bundle: Path, configs: Sequence[str], workflow_type: str | None, **override: Any):
    from monai.bundle import ConfigWorkflow

    folder = bundle / "configs"
    files = [str(folder / name) for name in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        workflow_type=workflow_type,
        **{"bundle_root": str(bundle), **override},
    )


def _run_workflow(wf, before_run=None) -> None:
    wf.initialize()
    if before_run is not None:
        before_run(wf)
    wf.run()
    wf.finalize()


def _prepare_data(data: Path, settings: PhantomSettings, progress: bool):
    """Write the phantom download and the held-out series and ingest the download (reused when unchanged)."""
    import pandas as pd

    from monai_ng.cli import main as cli_main
    from monai_ng.data.phantom import write_rsna_ich

    record = data / "phantom.json"
    wanted = json.loads(json.dumps(asdict(settings)))
    files = [data / "truth.json", data / "heldout_truth.json", data / "scans.csv"]
    if record.is_file() and json.loads(record.read_text()) == wanted and all(f.is_file() for f in files):
        print(f"\n[1/5] phantom data: reusing {data} (same settings)")
        return pd.read_json(files[0]), pd.read_json(files[1])
    print(f"\n[1/5] phantom data -> {data}")
    for stale in [data / "download", data / "heldout", *data.glob("embeddings_*")]:
        shutil.rmtree(stale, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    common = {
        "size": settings.size,
        "slices": settings.slices,
        "positive_rate": settings.positive_rate,
        "lesion_hu": settings.lesion_hu,
        "lesion_scale": settings.lesion_scale,
        "progress": progress,
    }
    truth = write_rsna_ich(data / "download", n_scans=settings.scans, seed=settings.seed, **common)
    # held-out series: other patients, and valid DICOM UIDs so that the KOS documents can reference them
    heldout = write_rsna_ich(
        data / "heldout", n_scans=settings.heldout, seed=settings.seed + 1, kaggle_uids=False, **common
    )
    truth.to_json(files[0])
    heldout.to_json(files[1])
    command = ["ingest", "--dataset", "ich", "--root", str(data / "download"), "--out", str(files[2])]
    print("\n[2/5] monai-ng " + " ".join(command))
    rc = cli_main(command + ([] if progress else ["--no-progress"]))
    if rc != 0:
        raise RuntimeError(f"monai-ng ingest failed with status {rc}")
    record.write_text(json.dumps(wanted, indent=2) + "\n")
    return truth, heldout


def _embed(bundle: Path, manifest: Path, store: Path, encoder: _Encoder, workers: int, progress: bool) -> None:
    print(f"\n[3/5] embed.json: slices -> frozen {encoder.name} -> embedding store {store}")
    print(
        f"      python -m monai.bundle run --config_file {bundle}/configs/embed.json --bundle_root {bundle} "
        f"--manifest_file {manifest} --dataset_dir {store} --encoder_name {encoder.name} "
        f"--image_size {encoder.image_size}" + (f" --encoder_weights {encoder.weights}" if encoder.weights else "")
    )
    wf = _bundle_workflow(
        bundle,
        ["embed.json"],
        None,
        manifest_file=str(manifest),
        dataset_dir=str(store),
        encoder_weights=encoder.weights,
        num_workers=int(workers),
        amp="none",
        progress=progress,
        **encoder.overrides(),
    )
    _run_workflow(wf)


def _set_threads(threads: int) -> int:
    """Set torch's intra-op threads; returns the previous number.

    The demo uses 1 thread unless ``--threads`` says otherwise, and one DataLoader worker for the slice loading of the
    embedding step: on a 2-core machine that keeps both cores busy without OpenMP fork/join waits, which make the
    small ops of MIL training several times slower with 2 threads (docs/performance.md, "Threads" and "Demo").
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    return before


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def _method_overrides(method: MethodSpec, cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "network_name": method.network,
        "network_kwargs": dict(method.network_kwargs),
        "ng_weight": float(cfg.ng_weights[0]) if method.ng else 0.0,
        "divergence": method.divergence,
        "ng_heads": method.ng_heads,
        "l1_weight": float(cfg.l1_weights[0]),
        "learning_rate": float(cfg.lrs[0]),
        "batch_size": int(cfg.batch_size),
        "max_epochs": int(cfg.max_epochs),
        "require_train_above_val": bool(cfg.require_train_above_val),
    }


def _read_metrics(path: Path) -> dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(",")
        if value:
            values[name.strip()] = float(value)
    return values


def _train_and_evaluate(bundle, store, runs, methods, cfg, encoder, progress) -> list[dict[str, Any]]:
    """train.json then train.json + evaluate.json for every split x method; one row of test metrics each."""
    from ignite.engine import Events
    from tqdm.auto import tqdm

    print(f"\n[4/5] train.json + evaluate.json: {len(methods)} methods x {len(cfg.seeds)} splits -> {runs}")
    example = methods[-1]
    print(
        f"      python -m monai.bundle run --config_file {bundle}/configs/train.json --bundle_root {bundle} "
        f"--dataset_dir {store} --ckpt_dir {runs}/{_slug(example.name)}/split{cfg.seeds[0]}/models "
        f"--network_name {example.network} --ng_weight {cfg.ng_weights[0] if example.ng else 0.0} "
        f"--split_seed {cfg.seeds[0]} --max_epochs {cfg.max_epochs} --batch_size {cfg.batch_size} ..."
    )
    shutil.rmtree(runs, ignore_errors=True)
    rows = []
    total = len(methods) * len(cfg.seeds) * cfg.max_epochs
    with tqdm(total=total, desc="train", unit="epoch", disable=not progress) as bar:
        for seed in cfg.seeds:
            for method in methods:
                run_dir = runs / _slug(method.name) / f"split{seed}"
                override = {
                    "dataset_dir": str(store),
                    "ckpt_dir": str(run_dir / "models"),
                    "output_dir": str(run_dir / "eval"),
                    "split_seed": int(seed),
                    "device": cfg.device,
                    "num_workers": 0,  # bags of small embeddings: a worker process costs more than it saves
                    **encoder.overrides(),
                    **_method_overrides(method, cfg),
                }
                bar.set_postfix_str(f"{method.name}, split {seed}")
                start = bar.n

                def attach(wf, bar=bar):
                    trainer = wf.parser.get_parsed_content("train#trainer")
                    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: bar.update(1))

                _run_workflow(_bundle_workflow(bundle, ["train.json"], "train", **override), attach)
                bar.update(start + cfg.max_epochs - bar.n)  # early stopping leaves epochs out
                _run_workflow(_bundle_workflow(bundle, ["train.json", "evaluate.json"], "train", **override))
                metrics = _read_metrics(run_dir / "eval" / "metrics.csv")
                rows.append({"method": method.name, "split_seed": int(seed), **metrics})
    return rows


def _infer(bundle, heldout, predictions, runs, method, cfg, encoder, args, progress) -> None:
    from ignite.engine import Events
    from tqdm.auto import tqdm

    ckpt = runs / _slug(method.name) / f"split{cfg.seeds[0]}" / "models"
    print(f"\n[5/5] inference.json: {method.name} (split {cfg.seeds[0]}) on the held-out series -> {predictions}")
    print(
        f"      python -m monai.bundle run --config_file {bundle}/configs/inference.json --bundle_root {bundle} "
        f"--ckpt_dir {ckpt} --dataset_dir {heldout} --output_dir {predictions} --network_name {method.network} "
        f"--encoder_name {encoder.name} --image_size {encoder.image_size}"
        + (f" --encoder_weights {encoder.weights}" if encoder.weights else "")
    )
    shutil.rmtree(predictions, ignore_errors=True)
    wf = _bundle_workflow(
        bundle,
        ["inference.json"],
        "infer",
        ckpt_dir=str(ckpt),
        dataset_dir=str(heldout),
        output_dir=str(predictions),
        encoder_weights=encoder.weights,
        network_name=method.network,
        network_kwargs=dict(method.network_kwargs),
        top_k=int(args.top_k),
        amp="none",
        device=cfg.device,
        **encoder.overrides(),
    )
    bars = []

    def attach(wf) -> None:
        n_scans = len(wf.parser.get_parsed_content("scans"))
        bar = tqdm(total=n_scans, desc="inference", unit="scan", disable=not progress)
        bars.append(bar)
        wf.parser.get_parsed_content("evaluator").add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update())

    try:
        _run_workflow(wf, attach)
    finally:
        for bar in bars:
            bar.close()


def _mean_std(values: Sequence[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def _write_results(out: Path, rows: list[dict[str, Any]], methods: list[MethodSpec]) -> str:
    """``results.csv`` (one row per method x split) and ``results.md`` (mean +- std per method); returns the table."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    cols = [("scan_auroc", "scan AUROC"), ("loc_auroc", "loc. AUROC"), ("loc_auprc", "loc. AUPRC")]
    lines = ["| method | " + " | ".join(label for _, label in cols) + " | splits |", "|---|" + "---|" * (len(cols) + 1)]
    for method in methods:
        part = frame[frame["method"] == method.name]
        cells = [_mean_std(part[col].astype(float).tolist()) if col in part else "n/a" for col, _ in cols]
        lines.append(f"| {method.name} | " + " | ".join(cells) + f" | {len(part)} |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    return table


def _heldout_table(predictions: Path, truth, top_k: int) -> str:
    """One line per held-out scan: true label, P(hemorrhage), flagged slices and the true lesion slices."""
    from monai_ng.bundle import dicom_scan_id
    from monai_ng.reporting import read_scan_json

    facts = {dicom_scan_id(str(row.series_uid)): row for row in truth.itertuples()}
    lines = [
        "| scan | truth | P(hemorrhage) | top-k slices (best first) | lesion slices | lesion HU / radius mm |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(predictions.glob("series-*.json")):
        result = read_scan_json(path)
        row = facts.get(result.scan_id)
        flagged = [s.index for s in result.top_k(min(top_k, result.num_slices))]
        if row is None:
            lines.append(f"| {result.scan_id} | ? | {result.scan_probability:.3f} | {flagged} | ? | ? |")
            continue
        lesion = [i for i, v in enumerate(row.slice_labels) if v]
        hits = len(set(flagged) & set(lesion))
        span = f"{lesion[0]}-{lesion[-1]} ({hits}/{len(flagged)} flagged)" if lesion else "none"
        size = f"{row.lesion_hu:.0f} / {row.lesion_radius_mm:.1f}" if lesion else "-"
        label = "hemorrhage" if row.label else "none"
        lines.append(f"| {result.scan_id} | {label} | {result.scan_probability:.3f} | {flagged} | {span} | {size} |")
    return "\n".join(lines) + "\n"


def _print_summary(out, table, heldout_table, infer, cfg, encoder, timings, total, n_scans) -> None:
    print(f"\nResults on the test part of each patient-level split ({n_scans} phantom series; mean ± std over splits):")
    print(table)
    print(f"Held-out series, {infer.name} (split {cfg.seeds[0]} model):")
    print(heldout_table)
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.stages.items())
    print(f"Done in {total:.0f} s ({stages}).")
    if not encoder.weights:
        print(
            "The encoder was RANDOMLY INITIALISED: these numbers test the pipeline, not the method. "
            "Rerun with --encoder-weights FILE (docs/getting_started.md)."
        )
    print("\nWhere to look:")
    print(f"  {out / 'results.md'}  the table above; results.csv: every metric per method and split")
    print(f"  {out / 'runs'}/<method>/split<seed>/  models/model.pt, eval/metrics.csv, scan_scores.csv, TensorBoard")
    print(f"  {out / 'predictions'}/  held-out scans: <scan>.json (slice scores), predictions.csv,")
    print("      <scan>.png (attention over slices + the fitted normal + top slices), <scan>_kos.dcm (Key Object")
    print("      Selection flagging the top slices), <scan>_sc.dcm (the figure as a DICOM Secondary Capture)")
    print(f"  {out / 'data'}/  the phantom download (download/), held-out series (heldout/), scans.csv, embeddings")
