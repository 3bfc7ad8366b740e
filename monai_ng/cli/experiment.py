"""``monai-ng experiment``: run the method comparison (splits x grid x methods) on an embedding store.

Runs on any store (``--data``), e.g. one written by ``monai-ng embed`` or ``monai-ng synthetic``. Every default
comes from :class:`monai_ng.experiment.ExperimentConfig` and :func:`monai_ng.experiment.default_methods` (the paper's
settings); ``monai-ng experiment --list`` prints the method names, ``--legacy`` runs this project's earlier defaults.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from monai_ng.cli._arguments import dataclass_defaults, float_list, int_list, show_default
from monai_ng.data.embedding_store import StoreError
from monai_ng.engines.host_memory import retain_freed_host_memory
from monai_ng.experiment import (
    PAPER_L1_WEIGHTS,
    PAPER_LRS,
    ExperimentConfig,
    MethodSpec,
    default_methods,
    legacy_methods,
    method_variants,
    run_experiment,
)
from monai_ng.networks.instance_ceiling import CEILING_KERNELS

__all__ = [
    "add_grid_arguments",
    "ceiling_kernel",
    "config_from_args",
    "configure_parser",
    "invalid_config",
    "prepare",
    "run",
    "run_methods",
    "select_methods",
]

#: TransMIL token width used when ``--transmil-dim`` is not given (the default of :func:`default_methods`: None, the
#: embedding width without an input projection).
TRANSMIL_DIM = inspect.signature(default_methods).parameters["transmil_dim"].default
#: the ceiling's kernel when ``--ceiling-kernel`` is not given (the default of :func:`default_methods`).
CEILING_KERNEL = inspect.signature(default_methods).parameters["ceiling_kernel"].default
#: the settings ``--legacy`` takes from :meth:`ExperimentConfig.legacy`
_LEGACY_FIELDS = ("ng_weights", "tune_ng_weight", "require_train_above_val", "drop_last")


def ceiling_kernel(text: str) -> int:
    """``--ceiling-kernel``: a positive integer or a region of :data:`CEILING_KERNELS` (``head``, ``chest``,
    ``abdomen``)."""
    if text.strip().lower() in CEILING_KERNELS:
        return CEILING_KERNELS[text.strip().lower()]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or one of {', '.join(f'{k} ({v})' for k, v in CEILING_KERNELS.items())}, "
            f"got {text!r}"
        )
    return value


def add_grid_arguments(parser: argparse.ArgumentParser, defaults: ExperimentConfig) -> None:
    """The method, grid and training options shared by ``experiment`` and ``demo``; unset options stay None.

    Args:
        parser: the command's parser.
        defaults: the configuration whose values unset options take (shown in the help).
    """
    d = dataclass_defaults(defaults)
    variants = ", ".join(repr(m.name) for m in method_variants())
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names (default: all of --list); also selectable: " + variants,
    )
    parser.add_argument("--list", action="store_true", help="list the method names and exit")
    parser.add_argument(
        "--lrs", type=float_list, default=None, help=f"learning rates (default: {show_default(d['lrs'])})"
    )
    parser.add_argument(
        "--ng-weights",
        type=float_list,
        default=None,
        help=f"NG lambdas (default and paper: {show_default(d['ng_weights'])}); several are an ablation, one result "
        "row per lambda, unless --tune-ng-weight",
    )
    parser.add_argument(
        "--tune-ng-weight",
        action="store_true",
        help="select lambda on validation scan AUROC with lr and alpha (the earlier behaviour; the paper fixes it)",
    )
    parser.add_argument(
        "--grid",
        choices=("default", "paper"),
        default="default",
        help=f"lr x alpha grid: 'paper' = lr {show_default(PAPER_LRS)} x alpha {show_default(PAPER_L1_WEIGHTS)} "
        "(--lrs / --l1-weights override it; default: %(default)s)",
    )
    parser.add_argument(
        "--l1-weights", type=float_list, default=None, help=f"L1 alphas (default: {show_default(d['l1_weights'])})"
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per run (default: {d['max_epochs']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"bags per batch (default: {d['batch_size']})")
    parser.add_argument(
        "--seeds",
        type=int_list,
        default=None,
        help=f"split seeds (default and paper: {show_default(d['seeds'])})",
    )
    parser.add_argument(
        "--transmil-dim",
        type=int,
        default=TRANSMIL_DIM,
        help="TransMIL token width behind a Linear+ReLU projection with a final LayerNorm (default: none, the "
        "paper's: the embeddings are the tokens)",
    )
    parser.add_argument(
        "--ceiling-kernel",
        type=ceiling_kernel,
        default=CEILING_KERNEL,
        help="instance ceiling's kernel over slices, an integer or head (12), chest (35), abdomen (29) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--ceiling-scan-bce",
        action="store_true",
        help="train the instance ceiling on scan + slice BCE (the earlier objective) instead of slice BCE only",
    )
    parser.add_argument(
        "--train-above-val",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="select only epochs whose train AUROC exceeds val AUROC (the paper's rule; "
        f"default: {'on' if d['require_train_above_val'] else 'off'})",
    )
    parser.add_argument(
        "--drop-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"drop the shuffled train loader's last incomplete batch (default: {'on' if d['drop_last'] else 'off'})",
    )
    parser.add_argument(
        "--legacy",
        action="store_true",
        help="this project's earlier defaults: lambda tuned over 0.1,1,10, no train-above-val rule, no drop-last, "
        "the earlier method list (per-slice-score max pool, 128-d TransMIL, kernel-5 scan+slice BCE ceiling)",
    )
    parser.add_argument("--device", default=None, help=f"torch device (default: {d['device']})")
    parser.add_argument(
        "--workers", type=int, default=None, help=f"DataLoader worker processes (default: {d['num_workers']})"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (1 is fastest on a busy 2-core machine)"
    )
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="keep freed host memory for reuse (glibc mallopt): large CPU tensors stop page-faulting every step, "
        "TransMIL trained 1.2-1.26x faster on 100-300-slice bags here; the process keeps its peak memory (docs/performance.md)",
    )


def config_from_args(args: argparse.Namespace, defaults: ExperimentConfig) -> ExperimentConfig:
    """``defaults`` with the options given on the command line replacing its values."""

    def pick(value, default):
        return default if value is None else value

    if getattr(args, "legacy", False):
        legacy = ExperimentConfig.legacy()
        defaults = replace(defaults, **{name: getattr(legacy, name) for name in _LEGACY_FIELDS})
    if getattr(args, "grid", "default") == "paper":
        defaults = replace(defaults, lrs=PAPER_LRS, l1_weights=PAPER_L1_WEIGHTS)
    return ExperimentConfig(
        lrs=pick(args.lrs, defaults.lrs),
        ng_weights=pick(args.ng_weights, defaults.ng_weights),
        l1_weights=pick(args.l1_weights, defaults.l1_weights),
        max_epochs=pick(args.epochs, defaults.max_epochs),
        batch_size=pick(args.batch_size, defaults.batch_size),
        seeds=pick(args.seeds, defaults.seeds),
        require_train_above_val=pick(args.train_above_val, defaults.require_train_above_val),
        device=pick(args.device, defaults.device),
        num_workers=pick(args.workers, defaults.num_workers),
        tune_ng_weight=getattr(args, "tune_ng_weight", False) or defaults.tune_ng_weight,
        drop_last=pick(getattr(args, "drop_last", None), defaults.drop_last),
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``experiment`` options to ``parser``."""
    parser.add_argument("--data", type=Path, default=None, help="embedding store folder (required unless --list)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (required unless --list)")
    add_grid_arguments(parser, ExperimentConfig())


def select_methods(args: argparse.Namespace) -> list[MethodSpec] | None:
    """The methods named by ``--methods`` (all of :func:`_listed_methods` by default, any of them or of
    :func:`method_variants` by name); prints the error and returns None for unknown names."""
    methods = _listed_methods(args)
    if not args.methods:
        return methods
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = method_variants(transmil_dim=args.transmil_dim or 128, ceiling_kernel=args.ceiling_kernel)
    known = {m.name: m for m in [*variants, *methods]}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        print(f"unknown method(s) {unknown}; known: {list(known)}", file=sys.stderr)
        return None
    return [known[w] for w in wanted]


def _listed_methods(args: argparse.Namespace) -> list[MethodSpec]:
    """The methods run when ``--methods`` is not given: :func:`default_methods`, or with ``--legacy``
    :func:`legacy_methods`."""
    if getattr(args, "legacy", False):
        return legacy_methods(transmil_dim=args.transmil_dim or 128)
    return default_methods(
        transmil_dim=args.transmil_dim, ceiling_kernel=args.ceiling_kernel, ceiling_scan_bce=args.ceiling_scan_bce
    )


def prepare(args: argparse.Namespace) -> int | None:
    """Logging, ``--threads`` and ``--list``: an exit status when the command is done (or failed), else None."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("ignite", "monai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.threads is not None:
        if args.threads < 1:
            print("--threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if getattr(args, "retain_freed_memory", False) and not retain_freed_host_memory():
        logging.getLogger(__name__).warning("--retain-freed-memory: no glibc mallopt here; allocator unchanged")
    if args.list:
        print("\n".join(m.name for m in _listed_methods(args)))
        return 0
    return None


def invalid_config(cfg: ExperimentConfig) -> bool:
    """Print the error and return True when ``--epochs`` or ``--batch-size`` is below 1."""
    if cfg.max_epochs < 1 or cfg.batch_size < 1:
        print("--epochs and --batch-size must be >= 1", file=sys.stderr)
        return True
    return False


def run_methods(data: Path, out: Path, methods: list[MethodSpec], cfg: ExperimentConfig) -> int:
    """Run the experiment and print the results table; returns the exit status."""
    t0 = time.perf_counter()
    try:
        results = run_experiment(data, out, methods, cfg)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a store the experiment cannot use (too few patients, one class)
        print(f"monai-ng experiment: error: {exc}", file=sys.stderr)
        return 2
    print((out / "results.md").read_text())
    print(f"{len(results)} method x split results in {time.perf_counter() - t0:.0f} s; written to {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the experiment described by ``args``; prints the results table."""
    status = prepare(args)
    if status is not None:
        return status
    missing = [flag for flag, value in (("--data", args.data), ("--out", args.out)) if value is None]
    if missing:
        print(
            f"monai-ng experiment: error: the following arguments are required: {', '.join(missing)}", file=sys.stderr
        )
        return 2
    methods = select_methods(args)
    if methods is None:
        return 2
    cfg = config_from_args(args, ExperimentConfig())
    if invalid_config(cfg):
        return 2
    return run_methods(args.data, Path(args.out), methods, cfg)
