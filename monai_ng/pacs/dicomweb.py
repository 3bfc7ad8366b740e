"""Pull CT series from a PACS and push result documents back, over DICOMweb (QIDO-RS, WADO-RS, STOW-RS).

A thin layer over :class:`dicomweb_client.api.DICOMwebClient` that adds what a hospital deployment needs: bounded
timeouts and retries, errors that say what went wrong without patient identifiers (and without credentials from the
URL), files that appear in the destination folder only once a whole study has been received, and a checked STOW-RS
response. Standard: DICOM PS3.18 (Web Services), sections 10.4 (WADO-RS), 10.5 (STOW-RS) and 10.6 (QIDO-RS).

Nothing here logs or prints; error messages name the server (scheme, host, port), HTTP statuses, DICOM UIDs and
modalities, never patient or study attributes such as names, dates, ids or accession numbers.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DicomWebError",
    "NoCTSeriesError",
    "PacsUnreachableError",
    "StoreRejectedError",
    "StudyNotFoundError",
    "connect",
    "fetch_ct_series",
    "store_instances",
]

#: ``(connect, read)`` timeouts in seconds for every HTTP request; the read timeout bounds each wait for data.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 60.0)

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_CT = "CT"
_PART = ".part"


class DicomWebError(RuntimeError):
    """A DICOMweb exchange with the PACS failed (HTTP error, malformed answer, time budget spent)."""


class PacsUnreachableError(DicomWebError):
    """The DICOMweb server could not be reached (connection refused, DNS failure, timeout)."""


class StudyNotFoundError(DicomWebError):
    """The server knows no study with the requested Study Instance UID."""


class NoCTSeriesError(DicomWebError):
    """The study exists but holds no series of modality CT."""


class StoreRejectedError(DicomWebError):
    """STOW-RS did not store every instance sent.

    Attributes:
        failed: ``{SOPInstanceUID: reason}`` for each instance not stored; the reason is the server's Failure Reason
            code (PS3.18 table I.2-1, e.g. ``0xA700``) or a short explanation.
    """

    def __init__(self, message: str, failed: Mapping[str, str]) -> None:
        super().__init__(message)
        self.failed = dict(failed)


def _server_label(url: str) -> str:
    """``scheme://host:port`` of ``url``: no user, password, path or query (they may hold tokens or UIDs)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8042/dicom-web")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"url has an invalid port: {exc}") from None
    if parts.query or parts.fragment:
        raise ValueError("url must not carry a query or fragment; pass tokens through headers= or session=")
    return url.rstrip("/")


def _check_timeout(timeout: object) -> float | tuple[float, float]:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if len(values) not in (1, 2) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf") for v in values
    ):
        raise ValueError(f"timeout must be a positive number of seconds or a (connect, read) pair, got {timeout!r}")
    return (float(values[0]), float(values[1])) if len(values) == 2 else float(values[0])


def _check_uid(uid: object, what: str) -> str:
    if not isinstance(uid, str):
        raise TypeError(f"{what} must be a str, got {type(uid).__name__}")
    if len(uid) > 64 or not _UID.match(uid):
        raise ValueError(f"{what} is not a DICOM UID (digits and dots, at most 64 characters): {uid!r}")
    return uid


def connect(
    url: str,
    *,
    session: requests.Session | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_attempts: int = 3,
) -> DICOMwebClient:
    """A DICOMweb client with bounded timeouts and retries.

    Args:
        url: base URL of the DICOMweb service, e.g. ``http://127.0.0.1:8042/dicom-web`` (Orthanc) or
            ``https://pacs.example.org/dicomweb``.
        session: a :class:`requests.Session` carrying authentication (token, client certificate, proxies). Its
            headers are modified by ``dicomweb_client``; pass one dedicated to this server.
        headers: extra HTTP headers for every request, e.g. ``{"Authorization": "Bearer ..."}``.
        timeout: seconds to wait for a connection and for each piece of an answer; a number or ``(connect, read)``.
        max_attempts: attempts per request, in all; ``dicomweb_client`` retries a request that failed to connect,
            timed out, or got 408, 429, 503 or 504, after 0.5 s, 1 s, 2 s, ... So a dead server costs at most
            ``max_attempts`` connect timeouts plus the back-off.

    Returns:
        The client (``dicomweb_client.api.DICOMwebClient``).

    Raises:
        TypeError, ValueError: on a malformed argument.
    """
    url = _check_url(url)
    timeout = _check_timeout(timeout)
    if session is not None and not isinstance(session, requests.Session):
        raise TypeError(f"session must be a requests.Session, got {type(session).__name__}")
    if headers is not None and (
        not isinstance(headers, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise TypeError("headers must be a mapping of str to str")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be an int in [1, 5], got {max_attempts!r}")
    client = DICOMwebClient(url, session=session, headers=dict(headers) if headers else None, timeout=timeout)
    client.set_http_retry_params(retry=max_attempts > 1, max_attempts=max_attempts, wait_exponential_multiplier=250)
    return client


@contextmanager
def _http_errors(client: DICOMwebClient, action: str, not_found: type[DicomWebError] | None = None) -> Iterator[None]:
    """Turn ``requests`` failures during ``action`` into :class:`DicomWebError` subclasses with identifier-free text."""
    server = _server_label(client.base_url)
    try:
        yield
    except requests.Timeout as exc:
        raise PacsUnreachableError(
            f"DICOMweb server {server} did not answer in time during {action} ({type(exc).__name__})"
        ) from exc
    except requests.ConnectionError as exc:
        raise PacsUnreachableError(
            f"cannot reach DICOMweb server {server} during {action} (connection refused, reset or host unknown)"
        ) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404 and not_found is not None:
            raise not_found(f"DICOMweb server {server} answered 404 Not Found to {action}") from exc
        hint = " (check the credentials passed through headers= or session=)" if status in (401, 403) else ""
        raise DicomWebError(f"DICOMweb server {server} answered HTTP {status} to {action}{hint}") from exc
    except requests.RequestException as exc:
        raise DicomWebError(f"{action} on DICOMweb server {server} failed ({type(exc).__name__})") from exc
    except (ValueError, InvalidDicomError) as exc:  # undecodable multipart / JSON / DICOM in the answer
        raise DicomWebError(
            f"DICOMweb server {server} sent a malformed answer to {action} ({type(exc).__name__})"
        ) from exc


def _server_uid(value: object, what: str) -> str:
    """``value`` when it is a DICOM UID, else :class:`DicomWebError` (the server, not the caller, is at fault)."""
    if not isinstance(value, str) or len(value) > 64 or not _UID.match(value):
        raise DicomWebError(f"the DICOMweb server sent an invalid {what}: {str(value)[:80]!r}")
    return value


def _first(item: Mapping, tag: str) -> str | None:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON object (PS3.18 F.2), or ``None``."""
    values = item.get(tag, {}).get("Value") or [None]
    return values[0] if isinstance(values[0], (str, int, float)) else None


def fetch_ct_series(
    url: str,
    study_uid: str,
    dest_dir: str | os.PathLike,
    *,
    session: requests.Session | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_attempts: int = 3,
    transfer_syntax: str = "*",
    max_seconds: float = 3600.0,
    max_instances: int = 10_000,
) -> list[Path]:
    """Download every CT series of a study: ``dest_dir/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

    QIDO-RS lists the study's series, those of modality ``CT`` are retrieved instance by instance with WADO-RS
    (streamed), and the files are first written to a hidden staging folder inside ``dest_dir``. Only when every CT
    series has arrived complete (as many instances as QIDO-RS announced, when it announced a number) are the files
    moved into place, each with an atomic rename; on any error the staging folder is deleted and ``dest_dir`` is left
    as it was (a ``dest_dir`` created by this call is removed again). Files already in a series folder are replaced
    by the newly received ones of the same SOP Instance UID.

    Args:
        url: base URL of the DICOMweb service (see :func:`connect`).
        study_uid: StudyInstanceUID of the study to pull.
        dest_dir: folder that receives one sub-folder per CT series; created when absent.
        session: optional :class:`requests.Session` with authentication (see :func:`connect`).
        headers: optional extra HTTP headers, e.g. an ``Authorization`` token.
        timeout: connect / read timeout in seconds for each request.
        max_attempts: attempts per request (see :func:`connect`).
        transfer_syntax: transfer syntax UID asked of WADO-RS; ``"*"`` (default) keeps the one the PACS stored, so
            pixel data arrive as they were archived (compressed ones are decoded by ``pydicom`` plug-ins on read).
        max_seconds: time budget for the whole study; exceeding it is an error (nothing is written).
        max_instances: most instances accepted over all CT series, a guard against runaway answers.

    Returns:
        The series folders written, in the order QIDO-RS listed them.

    Raises:
        PacsUnreachableError: the server cannot be reached or does not answer within ``timeout``.
        StudyNotFoundError: the server knows no such study (empty QIDO-RS answer or 404).
        NoCTSeriesError: the study holds no CT series; the message lists the modalities found.
        DicomWebError: any other failure (HTTP error, incomplete or inconsistent series, time budget spent).
        TypeError, ValueError: on a malformed argument, before any request.
    """
    study_uid = _check_uid(study_uid, "study_uid")
    if not isinstance(dest_dir, (str, os.PathLike)):
        raise TypeError(f"dest_dir must be a str or path, got {type(dest_dir).__name__}")
    dest = Path(dest_dir)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"dest_dir exists and is not a folder: {dest}")
    if transfer_syntax != "*":
        _check_uid(transfer_syntax, "transfer_syntax")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not 0 < max_seconds < 1e9:
        raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
    if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"max_instances must be a positive int, got {max_instances!r}")
    client = connect(url, session=session, headers=headers, timeout=timeout, max_attempts=max_attempts)
    deadline = time.monotonic() + float(max_seconds)

    with _http_errors(client, "the series search (QIDO-RS)", not_found=StudyNotFoundError):
        found = client.search_for_series(
            study_instance_uid=study_uid, fields=["Modality", "NumberOfSeriesRelatedInstances"]
        )
    found = [s for s in found if _first(s, "0020000D") in (None, study_uid)]  # a server may ignore the study filter
    if not found:
        raise StudyNotFoundError(f"study {study_uid} is not on DICOMweb server {_server_label(client.base_url)}")
    ct = [s for s in found if _first(s, "00080060") == _CT]
    if not ct:
        modalities = sorted({str(_first(s, "00080060") or "unknown") for s in found})
        raise NoCTSeriesError(
            f"study {study_uid} has no CT series ({len(found)} series of modality {', '.join(modalities)})"
        )
    plan: list[tuple[str, int | None]] = []
    for s in ct:
        series_uid = _server_uid(_first(s, "0020000E"), "SeriesInstanceUID in the QIDO-RS answer")
        count = _first(s, "00201209")
        try:
            expected = int(count) if count is not None else None
        except ValueError:
            raise DicomWebError(
                f"the QIDO-RS answer gives an invalid instance count for CT series {series_uid}"
            ) from None
        plan.append((series_uid, expected))
    if len({uid for uid, _ in plan}) != len(plan):
        raise DicomWebError("the QIDO-RS answer lists a CT series twice")

    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dicomweb-fetch-", dir=dest))
    try:
        total = 0
        for series_uid, expected in plan:
            folder = staging / series_uid
            folder.mkdir()
            received = 0
            action = f"the retrieval (WADO-RS) of CT series {series_uid}"
            with _http_errors(client, action):
                instances = client.iter_series(
                    study_uid, series_uid, media_types=(("application/dicom", transfer_syntax),)
                )
                for ds in instances:
                    if time.monotonic() > deadline:
                        raise DicomWebError(f"fetching the study took longer than max_seconds={max_seconds:g}")
                    total += 1
                    if total > max_instances:
                        raise DicomWebError(f"the study's CT series hold more than max_instances={max_instances}")
                    _write_instance(ds, folder, study_uid, series_uid)
                    received += 1
            if received == 0 or (expected is not None and received != expected):
                raise DicomWebError(
                    f"CT series {series_uid} arrived incomplete: {received} instances, "
                    f"the series search announced {expected if expected is not None else 'at least one'}"
                )
        out = []
        for series_uid, _ in plan:
            target = dest / series_uid
            target.mkdir(exist_ok=True)
            for f in sorted((staging / series_uid).iterdir()):
                os.replace(f, target / f.name)
            out.append(target)
        return out
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_instance(ds: Dataset, folder: Path, study_uid: str, series_uid: str) -> None:
    """Write one retrieved instance as ``folder/<SOPInstanceUID>.dcm`` after checking it belongs where it was asked."""
    sop = _server_uid(getattr(ds, "SOPInstanceUID", None), "SOPInstanceUID in a retrieved instance")
    if getattr(ds, "StudyInstanceUID", None) != study_uid or getattr(ds, "SeriesInstanceUID", None) != series_uid:
        raise DicomWebError(f"instance {sop} retrieved for CT series {series_uid} belongs to another study or series")
    path = folder / f"{sop}.dcm"
    if path.exists():
        raise DicomWebError(f"CT series {series_uid} returned instance {sop} twice")
    tmp = path.with_name(path.name + _PART)
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def _as_part10(item: object, index: int) -> Dataset:
    """A dataset with a preamble and file meta information, read back from its Part 10 encoding."""
    if isinstance(item, Dataset):
        buf = BytesIO()
        try:
            item.save_as(buf, enforce_file_format=True)
        except Exception as exc:  # pydicom raises several types for an unencodable dataset
            raise ValueError(f"instances[{index}] cannot be encoded as a DICOM file ({type(exc).__name__})") from exc
        buf.seek(0)
        return dcmread(buf)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"instances[{index}]: no such file: {path}")
        try:
            ds = dcmread(path)
        except Exception as exc:  # pydicom raises several types on a non-DICOM file
            raise ValueError(f"instances[{index}]: {path} is not a DICOM file ({type(exc).__name__})") from exc
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
            return _as_part10(ds, index)
        return ds
    raise TypeError(f"instances[{index}] must be a pydicom Dataset or a file path, got {type(item).__name__}")


def store_instances(
    url: str,
    instances: Iterable[Dataset | str | os.PathLike],
    *,
    study_uid: str | None = None,
    session: requests.Session | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_instances: int = 1000,
) -> list[str]:
    """Store DICOM instances (e.g. KOS, SR and Secondary Capture results) on the PACS with one STOW-RS request.

    The response is checked: every SOP Instance UID sent must come back in its Referenced SOP Sequence and none in
    its Failed SOP Sequence (PS3.18 10.5.3). A server that rejects the request with 409 and a Failed SOP Sequence
    (as Orthanc does when some instances fail) is reported the same way. The request is sent once (no retry).

    Args:
        url: base URL of the DICOMweb service (see :func:`connect`).
        instances: datasets or paths of DICOM files; each needs SOPClassUID, SOPInstanceUID and StudyInstanceUID.
        study_uid: when given, the request goes to ``/studies/{study_uid}`` and the server fails every instance of
            another study (the safe choice for results that must file with their source study); otherwise to
            ``/studies``.
        session: optional :class:`requests.Session` with authentication (see :func:`connect`).
        headers: optional extra HTTP headers, e.g. an ``Authorization`` token.
        timeout: connect / read timeout in seconds for the request.
        max_instances: most instances accepted in one call.

    Returns:
        The SOP Instance UIDs stored, in the order given.

    Raises:
        StoreRejectedError: the server did not store some instances; ``.failed`` maps their SOP Instance UIDs to
            the reason.
        PacsUnreachableError: the server cannot be reached or does not answer within ``timeout``.
        DicomWebError: any other HTTP failure (e.g. 400 for an instance the server cannot parse).
        TypeError, ValueError, FileNotFoundError: on a malformed argument or file, before any request.
    """
    if isinstance(instances, (str, os.PathLike, Dataset)) or not isinstance(instances, Iterable):
        raise TypeError("instances must be an iterable of pydicom Datasets or file paths")
    if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"max_instances must be a positive int, got {max_instances!r}")
    if study_uid is not None:
        _check_uid(study_uid, "study_uid")
    datasets: list[Dataset] = []
    for i, item in enumerate(instances):
        if i >= max_instances:
            raise ValueError(f"more than max_instances={max_instances} instances given")
        datasets.append(_as_part10(item, i))
    if not datasets:
        raise ValueError("instances is empty: nothing to store")
    sent: list[str] = []
    for i, ds in enumerate(datasets):
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
            _check_uid(str(getattr(ds, keyword, "")), f"{keyword} of instances[{i}]")
        sent.append(str(ds.SOPInstanceUID))
    if len(set(sent)) != len(sent):
        raise ValueError("instances holds the same SOPInstanceUID twice")
    client = connect(url, session=session, headers=headers, timeout=timeout, max_attempts=1)
    server = _server_label(client.base_url)
    try:
        with _http_errors(client, "the storage request (STOW-RS)"):
            answer = client.store_instances(datasets, study_instance_uid=study_uid)
    except DicomWebError as exc:
        answer = _failure_answer(exc.__cause__)
        if answer is None:
            raise
    failed = {
        str(getattr(item, "ReferencedSOPInstanceUID", "?")): _reason(item)
        for item in getattr(answer, "FailedSOPSequence", [])
    }
    stored = {
        str(getattr(item, "ReferencedSOPInstanceUID", "")) for item in getattr(answer, "ReferencedSOPSequence", [])
    }
    for uid in sent:
        if uid not in stored and uid not in failed:
            failed[uid] = "not confirmed in the STOW-RS response"
    if failed:
        listing = "; ".join(f"{uid}: {reason}" for uid, reason in failed.items())
        raise StoreRejectedError(
            f"DICOMweb server {server} did not store {len(failed)} of {len(sent)} instances ({listing})", failed
        )
    return sent


def _reason(item: Dataset) -> str:
    code = getattr(item, "FailureReason", None)
    return f"failure reason 0x{int(code):04X}" if code is not None else "no failure reason given"


def _failure_answer(exc: BaseException | None) -> Dataset | None:
    """The STOW-RS response dataset carried by an HTTP error, when it holds a Failed SOP Sequence."""
    response = getattr(exc, "response", None)
    if not isinstance(exc, requests.HTTPError) or response is None or not response.content:
        return None
    try:
        answer = Dataset.from_json(response.json())
    except Exception:  # any malformed body: fall back to the HTTP error
        return None
    return answer if "FailedSOPSequence" in answer else None
