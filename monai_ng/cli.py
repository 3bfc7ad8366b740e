"""The ``monai-ng`` command line: one sub-command per task, each implemented in its own module.

Each target module exposes ``configure_parser(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int`` (or, when one module serves several commands, ``configure_parser_for(name,
parser)`` and ``run_for(name, args)``). Modules are imported lazily so that ``monai-ng --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("monai_ng.experiment_cli", "run the synthetic CT-like experiment end to end (small default)"),
    "experiment": ("monai_ng.experiment_cli", "splits x grid search x methods on an embedding store"),
    "predict": ("monai_ng.predict_cli", "per-scan and per-slice scores from a saved MIL checkpoint"),
    "import-embeddings": ("monai_ng.data.store_cli", "import / validate a flat embedding folder as a store"),
    "synthetic": (
        "monai_ng.data.synthetic_cli",
        "write a synthetic embedding store (ShiftedMean, CT-like, multi-lesion)",
    ),
    "phantom": ("monai_ng.data.phantom_cli", "write phantom CT series (DICOM / NIfTI) in the RSNA layouts"),
    "ingest": ("preprocessing.ingest_cli", "convert an RSNA challenge download to a scan manifest"),
    "embed": ("monai_ng.embed_cli", "encode scans with a frozen ViT into an embedding store"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; sub-parsers are configured lazily when their command is chosen."""
    parser = argparse.ArgumentParser(prog="monai-ng", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-ng`` console script."""
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
    # a module serving several commands takes the command name: configure_parser_for(name, parser), run_for(name, args)
    shared = hasattr(module, "configure_parser_for")
    if shared:
        module.configure_parser_for(name, sub)
    else:
        module.configure_parser(sub)
    args = sub.parse_args(argv[1:])
    args.command = name
    rc = module.run_for(name, args) if shared else module.run(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
