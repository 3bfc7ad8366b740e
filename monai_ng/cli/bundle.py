"""``monai-ng bundle``: work with the MONAI bundles in ``bundles/``.

``monai-ng bundle package BUNDLE_DIR --out DIR`` writes ``DIR/<name>_v<version>.zip`` in the model zoo's release
layout (top folder ``<name>/``, the large files of ``large_files.yml`` included, ``large_files.yml`` left out); see
:mod:`monai_ng.bundle.package`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``bundle`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND", required=True)
    package = sub.add_parser("package", help="write <name>_v<version>.zip in the model zoo's release layout")
    package.add_argument("bundle_dir", type=Path, help="the bundle folder (holding configs/metadata.json)")
    package.add_argument("--out", type=Path, required=True, help="folder for the zip file (created)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``bundle`` sub-command; returns the exit status."""
    from monai_ng.bundle.package import PackageError, package_bundle

    if args.bundle_command == "package":
        try:
            path = package_bundle(args.bundle_dir, args.out)
        except PackageError as exc:
            print(f"monai-ng bundle package: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    print(f"monai-ng bundle: unknown sub-command {args.bundle_command!r}", file=sys.stderr)  # pragma: no cover
    return 2
