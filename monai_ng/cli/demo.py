"""``monai-ng demo``: write a small synthetic CT-like store and run a reduced method comparison on it.

Needs no data. The grid is :meth:`monai_ng.experiment.ExperimentConfig.demo`; every option of ``monai-ng
experiment`` except ``--data`` is accepted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_ng.cli.experiment import (
    add_grid_arguments,
    config_from_args,
    invalid_config,
    prepare,
    run_methods,
    select_methods,
)
from monai_ng.data.synthetic import SYNTHETIC_KINDS
from monai_ng.experiment import ExperimentConfig

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--n-bags", type=int, default=400, help="synthetic scans to generate (default: %(default)s)")
    parser.add_argument("--kind", default="ct_like", choices=list(SYNTHETIC_KINDS))
    parser.add_argument("--dim", type=int, default=64, help="synthetic embedding width (default: %(default)s)")
    add_grid_arguments(parser, ExperimentConfig.demo())


def run(args: argparse.Namespace) -> int:
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
        write_synthetic_store(args.kind, data, n_bags=args.n_bags, seed=0, dim=args.dim, overwrite=True)
    return run_methods(data, out, methods, cfg)
