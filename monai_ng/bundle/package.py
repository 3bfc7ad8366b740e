"""Package a bundle as the MONAI model zoo releases it: ``<name>_v<version>.zip`` with one top folder ``<name>/``.

As the model zoo's release script does, the large files listed in ``large_files.yml`` are put into the archive at
their ``path`` (taken from the bundle folder when present, else fetched from ``url``; ``file://`` URLs and local paths
are copied) and checked against ``hash_val`` / ``hash_type`` when given; ``large_files.yml`` itself is left out.
Run outputs (``eval/``, ``logs/``, ``mlruns/``, caches) are never packaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["LARGE_FILES_NAMES", "PackageError", "package_bundle", "read_large_files"]

LARGE_FILES_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
_SKIP_DIRS = {"eval", "logs", "mlruns", "runs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


class PackageError(ValueError):
    """The bundle cannot be packaged; the message names the file and the reason."""


def read_large_files(bundle_dir: str | os.PathLike) -> tuple[Path | None, list[dict[str, Any]]]:
    """The bundle's large-file list: ``(its file or None, [{"path", "url", "hash_val"?, "hash_type"?}, ...])``."""
    bundle = Path(bundle_dir)
    for name in LARGE_FILES_NAMES:
        path = bundle / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            import yaml

            data = yaml.safe_load(text)
        except ImportError:  # the file is written as JSON, which is valid YAML
            data = json.loads(text)
        except Exception as exc:
            raise PackageError(f"{path}: cannot parse ({exc})") from exc
        entries = (data or {}).get("large_files", []) if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
            raise PackageError(f"{path}: expected 'large_files: [{{path, url, hash_val, hash_type}}, ...]'")
        return path, entries
    return None, []


def _digest(path: Path, hash_type: str) -> str:
    try:
        h = hashlib.new(hash_type)
    except ValueError as exc:
        raise PackageError(f"unknown hash_type {hash_type!r}") from exc
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(entry: dict[str, Any], bundle: Path, work: Path) -> Path:
    """The large file of ``entry``: in the bundle, else copied / downloaded into ``work``."""
    rel = str(entry["path"])
    target = (bundle / rel).resolve()
    if not str(target).startswith(str(bundle.resolve()) + os.sep):
        raise PackageError(f"large file path {rel!r} leaves the bundle folder")
    if target.is_file():
        return target
    url = str(entry.get("url") or "")
    if not url:
        raise PackageError(f"large file {rel}: not in the bundle and no url to fetch it from")
    local = work / rel
    local.parent.mkdir(parents=True, exist_ok=True)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)
        if not source.is_absolute():
            source = bundle / source
        if not source.is_file():
            raise PackageError(f"large file {rel}: {source} does not exist")
        shutil.copyfile(source, local)
        return local
    try:
        from monai.apps import download_url

        download_url(url=url, filepath=str(local), progress=False)
    except Exception as exc:
        raise PackageError(
            f"large file {rel}: cannot download {url} ({type(exc).__name__}: {exc}); put the file at {target} and "
            "package again"
        ) from exc
    return local


def package_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<name>_v<version>.zip`` (top folder ``<name>/``, large files resolved) and return its path.

    ``name`` is the bundle's folder name (the model zoo's ``models/<name>``), ``version`` the ``version`` of
    ``configs/metadata.json``.

    Raises:
        PackageError: naming the file and reason (no metadata, no version, ``version`` not in ``changelog``, no
            ``LICENSE``, a large file that cannot be fetched or whose hash differs).
    """
    bundle = Path(bundle_dir).resolve()
    meta_path = bundle / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise PackageError(f"{meta_path}: not found; {bundle} is not a MONAI bundle")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PackageError(f"{meta_path}: not valid JSON ({exc})") from exc
    version = meta.get("version")
    if not version:
        raise PackageError(f"{meta_path}: no 'version'")
    if version not in (meta.get("changelog") or {}):
        raise PackageError(f"{meta_path}: version {version} is not a key of 'changelog'")
    if not (bundle / "LICENSE").is_file():
        raise PackageError(f"{bundle / 'LICENSE'}: missing (the model zoo requires it)")
    large_file, entries = read_large_files(bundle)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{bundle.name}_v{version}.zip"
    top = bundle.name

    with tempfile.TemporaryDirectory(prefix="bundle-package-") as tmp:
        work = Path(tmp)
        large: dict[str, Path] = {}
        for entry in entries:
            path = _fetch(entry, bundle, work)
            hash_val = str(entry.get("hash_val") or "")
            if hash_val:
                got = _digest(path, str(entry.get("hash_type") or "md5").lower())
                if got.lower() != hash_val.lower():
                    raise PackageError(f"large file {entry['path']}: hash {got} does not match hash_val {hash_val}")
            large[Path(str(entry["path"])).as_posix()] = path
        partial = zip_path.with_name(f".{zip_path.name}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(bundle.rglob("*")):
                rel = path.relative_to(bundle)
                if any(part in _SKIP_DIRS for part in rel.parts) or not path.is_file():
                    continue
                if path.suffix in _SKIP_SUFFIXES or path == large_file or rel.as_posix() in large:
                    continue
                archive.write(path, f"{top}/{rel.as_posix()}")
            for rel, path in sorted(large.items()):
                archive.write(path, f"{top}/{rel}")
        os.replace(partial, zip_path)
    return zip_path
