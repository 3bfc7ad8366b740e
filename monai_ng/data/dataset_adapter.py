"""The dataset-adapter contract: how ``monai-ng ingest`` turns a dataset download into a scan manifest.

An adapter is an object registered under the Python entry-point group ``monai_ng.dataset_adapters``; the entry
point's name is the ``--dataset`` value. The three RSNA adapters of this repository are registered in
``pyproject.toml``::

    [project.entry-points."monai_ng.dataset_adapters"]
    ich = "preprocessing.rsna_ich:ADAPTER"

A hospital registers its own adapter the same way from its own package (see ``docs/ingest.md``); ``monai_ng`` never
imports an adapter module by name: ``monai-ng ingest`` discovers them (:mod:`monai_ng.cli.ingest`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import pandas as pd

__all__ = ["ADAPTER_ENTRY_POINT_GROUP", "DatasetAdapter"]

#: Entry-point group of dataset adapters.
ADAPTER_ENTRY_POINT_GROUP = "monai_ng.dataset_adapters"


class DatasetAdapter:
    """Base class of a dataset adapter (subclass it and override :meth:`build_manifest`).

    Attributes:
        name: the dataset's name, written to the manifest's ``dataset`` column.
        description: one line shown by ``monai-ng ingest --help``.
    """

    name: str = ""
    description: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add the adapter's own ``monai-ng ingest`` options (none by default)."""

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        """The keyword arguments of :meth:`build_manifest` taken from the parsed options (none by default)."""
        return {}

    def build_manifest(
        self, root: str | os.PathLike, workers: int = 1, progress: bool = True, **options: Any
    ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        """Read a download into ``(scan manifest, failures)``.

        Args:
            root: the download folder.
            workers: header-reading processes.
            progress: show a progress bar.
            options: adapter-specific options (see :meth:`options`).

        Returns:
            ``(manifest, failures)``: one row per scan (schema ``monai_ng.data.scan_manifest.SCAN_MANIFEST_COLUMNS``,
            without split columns) and ``(file or scan, reason)`` rows for whatever could not be ingested.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement build_manifest")
