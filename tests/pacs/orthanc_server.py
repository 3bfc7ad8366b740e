"""Start and stop a real Orthanc PACS with its DICOMweb plugin on 127.0.0.1, for the tests of ``monai_ng.pacs``.

The server runs from a given folder (configuration, storage, index, log) on free ports, accepts local connections only
(``RemoteAccessAllowed`` false, DICOM listener off) and is stopped, killed if need be, when the context ends.
Binaries: ``ORTHANC_BIN`` and ``ORTHANC_DICOMWEB_PLUGIN`` override the Debian locations (packages ``orthanc`` and
``orthanc-dicomweb``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

__all__ = ["OrthancServer", "OrthancUnavailable", "find_orthanc", "free_port", "running_orthanc"]

_BIN_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
_LOG_TAIL_CHARS = 4000


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed (the reason says which and how to install it)."""


@dataclass(frozen=True)
class OrthancServer:
    """Addresses of a running test server.

    Attributes:
        url: base URL of Orthanc's REST API, ``http://127.0.0.1:PORT``.
        dicomweb_url: base URL of the DICOMweb services (QIDO-RS, WADO-RS, STOW-RS), ``{url}/dicom-web``.
        log_path: Orthanc's stdout and stderr.
    """

    url: str
    dicomweb_url: str
    log_path: Path

    def log_tail(self) -> str:
        """The last few thousand characters of the server log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError as exc:
            return f"(log unreadable: {exc})"


def find_orthanc() -> tuple[str, str]:
    """Paths of the Orthanc binary and its DICOMweb plugin.

    Raises:
        OrthancUnavailable: when either is missing.
    """
    binary = os.environ.get("ORTHANC_BIN") or shutil.which("Orthanc")
    binary = binary or next((c for c in _BIN_CANDIDATES if os.access(c, os.X_OK)), None)
    if not binary or not os.access(binary, os.X_OK):
        raise OrthancUnavailable("Orthanc is not installed (Debian package 'orthanc'; or set ORTHANC_BIN)")
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN") or next(
        (c for c in _PLUGIN_CANDIDATES if Path(c).is_file()), None
    )
    if not plugin or not Path(plugin).is_file():
        raise OrthancUnavailable(
            "Orthanc's DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb'; "
            "or set ORTHANC_DICOMWEB_PLUGIN)"
        )
    return binary, plugin


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it; the socket is closed before returning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, http_port: int, dicom_port: int, plugin: str) -> dict:
    return {
        "Name": "monai-ng-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": False,  # HTTP only: no DICOM listener is opened
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
        "HttpTimeout": 10,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }


@contextmanager
def running_orthanc(root: Path, start_timeout_s: float = 30.0, stop_timeout_s: float = 10.0) -> Iterator[OrthancServer]:
    """Run Orthanc from ``root`` until the context ends.

    Args:
        root: an empty folder for the configuration, storage, index and log.
        start_timeout_s: how long to wait for ``GET /system`` to answer.
        stop_timeout_s: how long to wait after SIGTERM (then SIGKILL).

    Raises:
        OrthancUnavailable: Orthanc or the plugin is not installed.
        RuntimeError: the server exited or did not answer in time; the message holds the log tail.
    """
    binary, plugin = find_orthanc()
    http_port = free_port()
    dicom_port = free_port()
    for _ in range(10):  # two draws can, rarely, give the same port
        if dicom_port != http_port:
            break
        dicom_port = free_port()
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(_config(root, http_port, dicom_port, plugin), indent=2))
    url = f"http://127.0.0.1:{http_port}"
    server = OrthancServer(url=url, dicomweb_url=f"{url}/dicom-web", log_path=root / "orthanc.log")
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with code {proc.returncode} while starting; log:\n{server.log_tail()}"
                )
            try:
                if requests.get(f"{url}/system", timeout=1.0).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {start_timeout_s:g} s; log:\n{server.log_tail()}")
            time.sleep(0.1)
        plugins = requests.get(f"{url}/plugins", timeout=5.0).json()
        if "dicom-web" not in plugins:
            raise RuntimeError(f"Orthanc started without its DICOMweb plugin ({plugins}); log:\n{server.log_tail()}")
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=stop_timeout_s)
