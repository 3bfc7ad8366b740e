"""The ``monai-ng`` command line: one sub-command per task, each implemented in its own module of this package.

Every command module exposes ``configure_parser(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. Modules are imported lazily so that ``monai-ng --help`` stays fast.
``python -m monai_ng`` and ``python -m monai_ng.cli`` (e.g. ``torchrun -m monai_ng.cli embed ...``) are the same.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "monai_ng.cli.demo",
        "the head CT bundle end to end on phantom CT, offline (--synthetic: the synthetic-embedding experiment)",
    ),
    "experiment": ("monai_ng.cli.experiment", "splits x grid search x methods on an embedding store"),
    "predict": (
        "monai_ng.cli.predict",
        "scan probability + slice attention for DICOM/NIfTI/manifest/store input or a DICOMweb study",
    ),
    "import-embeddings": ("monai_ng.cli.import_embeddings", "import / validate a flat embedding folder as a store"),
    "synthetic": ("monai_ng.cli.synthetic", "write a synthetic embedding store (ShiftedMean, CT-like, multi-lesion)"),
    "phantom": ("monai_ng.cli.phantom", "write phantom CT series (DICOM / NIfTI) in the RSNA layouts"),
    "ingest": ("monai_ng.cli.ingest", "convert a dataset download (RSNA or a registered adapter) to a scan manifest"),
    "embed": ("monai_ng.cli.embed", "encode scans with a frozen ViT into an embedding store"),
    "bundle": (
        "monai_ng.cli.bundle",
        "MONAI bundles: `bundle package BUNDLE --out DIR` writes the model zoo's release zip",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; sub-parsers are configured lazily when their command is chosen."""
    parser = argparse.ArgumentParser(prog="monai-ng", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-ng`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"monai-ng {name}", description=COMMANDS[name][1])
    module.configure_parser(sub)
    args = sub.parse_args(argv[1:])
    args.command = name
    return int(module.run(args) or 0)
