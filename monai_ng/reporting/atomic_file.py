"""Write a file all at once: to a temporary file beside it, then rename it into place.

An interrupted or failed run therefore leaves either the previous file or the complete new one, never a half-written
file. The rename is :func:`os.replace`, atomic on POSIX and Windows when both paths are on one file system, which
holds because the temporary file is created in the target's own folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def _default_mode() -> int:
    """``0o666`` less the process umask: the mode :func:`open` would give a new file (mkstemp gives ``0o600``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Args:
        path: the file to create or replace; its folder must exist.
        data: the complete file content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``data`` is not bytes.
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is an existing folder.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {folder} does not exist")
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a folder")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if hasattr(os, "fchmod"):  # POSIX; on Windows the mode bits do not apply
                os.fchmod(handle.fileno(), _FILE_MODE)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return target
