"""On-disk store of per-slice embeddings, one contiguous block of rows per scan.

The store is a folder in the flat interchange layout (see ``docs/embedding_store.md``)::

    embeddings.npy      [T, D] float16 or float32, rows of scan i at offset_i .. offset_i + n_slices_i - 1,
                        in anatomical order (inferior -> superior)
    manifest.csv        the store index: scan_id, patient_id, label, offset, n_slices (+ optional extra columns)
    slice_labels.npy    optional [T] int8: 1 positive, 0 negative, -1 unknown
    store.json          optional metadata (format version, dim, dtype, encoder, preprocessing, ...)

A folder that users write by hand with the first three files is a valid store as it is; ``store.json`` is added by
:func:`import_flat_layout` (``monai-ng import-embeddings DIR``) or by :class:`EmbeddingStoreWriter`.
Embeddings are memory mapped, so a store larger than memory can be read bag by bag.

The per-scan table (``manifest.csv`` on disk, the name of the interchange format) is called the *store index* here,
to tell it from the scan manifest that ingest writes (:mod:`monai_ng.data.scan_manifest`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "STORE_INDEX_COLUMNS",
    "Bag",
    "BagBlock",
    "EmbeddingStore",
    "EmbeddingStoreWriter",
    "StoreError",
    "import_flat_layout",
]

STORE_FORMAT = "monai_ng.embedding_store"
STORE_VERSION = 1
STORE_INDEX_COLUMNS = ("scan_id", "patient_id", "label", "offset", "n_slices")
EMBEDDINGS_FILE = "embeddings.npy"
STORE_INDEX_FILE = "manifest.csv"
SLICE_LABELS_FILE = "slice_labels.npy"
METADATA_FILE = "store.json"
_ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
# fixed .npy header length so the header can be rewritten in place once the row count is known
_NPY_HEADER_BYTES = 128
_FINITE_CHECK_ROWS = 65536


class StoreError(ValueError):
    """Raised for an invalid embedding store; the message names the file (and scan) and the reason."""


@dataclass(frozen=True)
class BagBlock:
    """Several scans of a store read at once (:meth:`EmbeddingStore.read_bags`).

    Attributes:
        indices: ``[B]`` int64 store-index rows (negative ones resolved).
        scan_ids: the ``B`` scan identifiers.
        labels: ``[B]`` int64 scan labels.
        lengths: ``[B]`` int64 slices per scan.
        embeddings: ``[T, D]`` the scans' rows back to back (``T = lengths.sum()``), a fresh writable copy in the
            store's dtype.
        slice_labels: ``[T]`` int8 copy (1/0/-1 unknown), or None when the store has no slice labels.
    """

    indices: np.ndarray
    scan_ids: list[str]
    labels: np.ndarray
    lengths: np.ndarray
    embeddings: np.ndarray
    slice_labels: np.ndarray | None


@dataclass(frozen=True)
class Bag:
    """One scan of a store.

    Attributes:
        scan_id: the scan's identifier.
        patient_id: the (pseudonymous) patient identifier used for splits.
        label: scan label, 0 or 1.
        embeddings: ``[S, D]`` view into the memory-mapped embeddings, inferior -> superior.
        slice_labels: ``[S]`` int8 (1/0/-1 unknown), or None when the store has no slice labels.
    """

    scan_id: str
    patient_id: str
    label: int
    embeddings: np.ndarray
    slice_labels: np.ndarray | None


def _npy_header(shape: tuple[int, int], dtype: np.dtype) -> bytes:
    """A version-1.0 ``.npy`` header of exactly ``_NPY_HEADER_BYTES`` bytes for a C-ordered array."""
    body = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    body_bytes = body.encode("latin1")
    room = _NPY_HEADER_BYTES - 10 - 1
    if len(body_bytes) > room:
        raise StoreError(f"array shape {shape} too large for the reserved .npy header")
    body_bytes = body_bytes + b" " * (room - len(body_bytes)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body_bytes)) + body_bytes


def _read_store_index(path: Path) -> pd.DataFrame:
    """Read the store index CSV and check its columns."""
    if not path.is_file():
        raise StoreError(f"{path}: store index file is missing")
    try:
        index = pd.read_csv(path, dtype={"scan_id": str, "patient_id": str}, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise StoreError(f"{path}: cannot parse the store index CSV ({exc})") from exc
    missing = [c for c in STORE_INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise StoreError(
            f"{path}: store index lacks column(s) {missing}; required columns are {list(STORE_INDEX_COLUMNS)}, "
            f"found {list(index.columns)}"
        )
    return index


def _validate_store_index(index: pd.DataFrame, n_rows: int, where: Path) -> pd.DataFrame:
    """Check the store index against an embeddings array of ``n_rows`` rows; return it with normalised dtypes."""
    if len(index) == 0:
        raise StoreError(f"{where}: store index has no scans")
    ids = index["scan_id"].astype(str)
    empty_ids = ids.str.strip() == ""
    if empty_ids.any():
        raise StoreError(
            f"{where}: store index row {int(np.flatnonzero(empty_ids.to_numpy())[0])} has an empty scan_id"
        )
    dup = ids[ids.duplicated()]
    if len(dup):
        raise StoreError(f"{where}: scan_id {dup.iloc[0]!r} appears more than once")
    for col in ("label", "offset", "n_slices"):
        values = pd.to_numeric(index[col], errors="coerce")
        bad = values.isna() | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise StoreError(f"{where}: scan {ids.iloc[i]!r}: {col}={index[col].iloc[i]!r} is not an integer")
        index[col] = values.astype(np.int64)
    labels = index["label"].to_numpy()
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StoreError(f"{where}: scan {ids.iloc[i]!r}: label {labels[i]} is not 0 or 1")
    offsets, counts = index["offset"].to_numpy(), index["n_slices"].to_numpy()
    bad = counts < 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StoreError(f"{where}: scan {ids.iloc[i]!r} is an empty bag (n_slices={counts[i]})")
    bad = offsets < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StoreError(f"{where}: scan {ids.iloc[i]!r} has a negative offset {offsets[i]}")
    bad = offsets + counts > n_rows
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StoreError(
            f"{where}: scan {ids.iloc[i]!r} owns rows {offsets[i]}..{offsets[i] + counts[i] - 1}, "
            f"past the end of the embeddings array ({n_rows} rows)"
        )
    order = np.argsort(offsets, kind="stable")
    ends = offsets[order] + counts[order]
    overlap = offsets[order][1:] < ends[:-1]
    if overlap.any():
        k = int(np.flatnonzero(overlap)[0])
        raise StoreError(
            f"{where}: scans {ids.iloc[order[k]]!r} and {ids.iloc[order[k + 1]]!r} own overlapping embedding rows"
        )
    index["scan_id"] = ids
    index["patient_id"] = index["patient_id"].astype(str)
    return index


class EmbeddingStore:
    """Read access to an embedding store folder (memory mapped).

    Args:
        path: the store folder.
        check_finite: scan all embeddings for NaN/inf up front (reads the whole array once, chunked). Bags are also
            checked when :class:`monai_ng.data.BagDataset` loads them, so this is optional.

    Attributes:
        index: the store index (``manifest.csv``): one row per scan with ``scan_id, patient_id, label, offset,
            n_slices`` (int64 / str) and any extra columns.

    Raises:
        StoreError: naming the file (and scan) when the folder is not a valid store.
    """

    def __init__(self, path: str | os.PathLike, check_finite: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: embedding store folder does not exist")
        emb_path = self.path / EMBEDDINGS_FILE
        if not emb_path.is_file():
            raise StoreError(f"{emb_path}: embeddings file is missing")
        try:
            self.embeddings: np.ndarray = np.load(emb_path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise StoreError(f"{emb_path}: cannot read as a .npy array ({exc})") from exc
        if self.embeddings.ndim != 2:
            raise StoreError(f"{emb_path}: expected a 2-D [T, D] array, got shape {self.embeddings.shape}")
        if self.embeddings.dtype not in _ALLOWED_DTYPES:
            raise StoreError(f"{emb_path}: dtype {self.embeddings.dtype} is not float16 or float32")
        self.metadata: dict[str, Any] = self._read_metadata()
        self.index = _validate_store_index(
            _read_store_index(self.path / STORE_INDEX_FILE), self.embeddings.shape[0], self.path / STORE_INDEX_FILE
        )
        for key, found in (("n_scans", len(self.index)), ("n_slices", int(self.index["n_slices"].sum()))):
            if key in self.metadata and int(self.metadata[key]) != found:  # one of the two files was changed
                raise StoreError(
                    f"{self.path / METADATA_FILE}: metadata says {key}={self.metadata[key]} but "
                    f"{STORE_INDEX_FILE} has {found}"
                )
        self.slice_labels: np.ndarray | None = self._read_slice_labels()
        self._offsets = self.index["offset"].to_numpy()
        self._counts = self.index["n_slices"].to_numpy()
        self._ids = self.index["scan_id"].tolist()
        self._patients = self.index["patient_id"].tolist()
        self._labels = self.index["label"].to_numpy()
        if check_finite:
            self.check_finite()

    # ------------------------------------------------------------------ reading
    def _read_metadata(self) -> dict[str, Any]:
        meta_path = self.path / METADATA_FILE
        if not meta_path.is_file():
            return {}
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{meta_path}: not valid JSON ({exc})") from exc
        if meta.get("format") not in (None, STORE_FORMAT):
            raise StoreError(f"{meta_path}: format {meta.get('format')!r} is not {STORE_FORMAT!r}")
        if int(meta.get("version", STORE_VERSION)) > STORE_VERSION:
            raise StoreError(f"{meta_path}: store version {meta['version']} is newer than supported ({STORE_VERSION})")
        if "dim" in meta and int(meta["dim"]) != self.embeddings.shape[1]:
            raise StoreError(
                f"{meta_path}: metadata says dim={meta['dim']} but {EMBEDDINGS_FILE} has width {self.embeddings.shape[1]}"
            )
        return meta

    def _read_slice_labels(self) -> np.ndarray | None:
        sl_path = self.path / SLICE_LABELS_FILE
        if not sl_path.is_file():
            return None
        try:
            sl = np.load(sl_path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise StoreError(f"{sl_path}: cannot read as a .npy array ({exc})") from exc
        if sl.shape != (self.embeddings.shape[0],):
            raise StoreError(f"{sl_path}: expected shape ({self.embeddings.shape[0]},), got {sl.shape}")
        if not np.issubdtype(sl.dtype, np.integer):
            raise StoreError(f"{sl_path}: dtype {sl.dtype} is not an integer type (int8 expected)")
        bad = ~np.isin(np.asarray(sl), (-1, 0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise StoreError(f"{sl_path}: scan {self.scan_of_row(row)!r}: slice label {sl[row]} not in {{-1, 0, 1}}")
        return sl

    def scan_of_row(self, row: int) -> str:
        """The scan id that owns embedding row ``row`` (or ``'<no scan>'`` for unowned rows)."""
        offsets = self.index["offset"].to_numpy()
        counts = self.index["n_slices"].to_numpy()
        hit = np.flatnonzero((offsets <= row) & (row < offsets + counts))
        return str(self.index["scan_id"].iloc[hit[0]]) if len(hit) else "<no scan>"

    def check_finite(self) -> None:
        """Raise :class:`StoreError` naming the first scan with a NaN or infinite embedding value."""
        total = self.embeddings.shape[0]
        for start in range(0, total, _FINITE_CHECK_ROWS):
            chunk = np.asarray(self.embeddings[start : start + _FINITE_CHECK_ROWS])
            ok = np.isfinite(chunk).all(axis=1)
            if not ok.all():
                row = start + int(np.flatnonzero(~ok)[0])
                raise StoreError(
                    f"{self.path / EMBEDDINGS_FILE}: scan {self.scan_of_row(row)!r} has NaN/inf embeddings (row {row})"
                )

    def require_metadata(self, expected: Mapping[str, Any]) -> None:
        """Refuse a store whose metadata differs from ``expected`` (e.g. another encoder or preprocessing).

        Every key of ``expected`` (nested mappings compared key by key) must be present with an equal value.

        Raises:
            StoreError: naming the store and the first mismatching key.
        """

        def _walk(exp: Mapping[str, Any], got: Any, prefix: str) -> None:
            for key, value in exp.items():
                name = f"{prefix}{key}"
                if not isinstance(got, Mapping) or key not in got:
                    raise StoreError(f"{self.path}: store metadata lacks {name!r} (expected {value!r})")
                if isinstance(value, Mapping):
                    _walk(value, got[key], name + ".")
                elif got[key] != value:
                    raise StoreError(
                        f"{self.path}: configuration mismatch for {name!r}: store has {got[key]!r}, expected {value!r}"
                    )

        _walk(expected, self.metadata, "")

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.embeddings.shape[1])

    @property
    def n_slices_total(self) -> int:
        """Total number of slices T owned by scans."""
        return int(self._counts.sum())

    @property
    def scan_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def labels(self) -> np.ndarray:
        """``[n_scans]`` int64 scan labels."""
        return self._labels.copy()

    @property
    def patient_ids(self) -> list[str]:
        return list(self._patients)

    @property
    def n_slices(self) -> np.ndarray:
        """``[n_scans]`` int64 bag lengths."""
        return self._counts.copy()

    def bag(self, index: int) -> Bag:
        """Scan ``index`` (0-based store-index row) as a :class:`Bag` of memory-mapped views."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.path}: scan index {index} out of range for {len(self)} scans")
        o, n = int(self._offsets[index]), int(self._counts[index])
        sl = None if self.slice_labels is None else self.slice_labels[o : o + n]
        return Bag(self._ids[index], self._patients[index], int(self._labels[index]), self.embeddings[o : o + n], sl)

    def read_bags(self, indices: Sequence[int] | np.ndarray) -> BagBlock:
        """Several scans read at once, their rows copied back to back into one fresh array.

        One copy and one pass of Python per call instead of one per scan (a batch loader's ``__getitems__``); the
        memory map is sliced as a plain array, without ``np.memmap``'s bookkeeping per view.

        Args:
            indices: store-index rows (0-based; negative counts from the end), in any order, repeats allowed.

        Returns:
            :class:`BagBlock` with the scans in the order of ``indices``.

        Raises:
            IndexError: an index out of range (naming the store).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"{self.path}: scan index {bad} out of range for {n} scans")
        idx = idx % n if n else idx
        offsets, lengths = self._offsets[idx], self._counts[idx]
        spans = list(zip(offsets.tolist(), (offsets + lengths).tolist(), strict=True))
        raw = self.embeddings.view(np.ndarray)
        rows = np.empty((int(lengths.sum()), raw.shape[1]), dtype=raw.dtype)
        if spans:
            np.concatenate([raw[a:b] for a, b in spans], axis=0, out=rows)
        slice_labels = None
        if self.slice_labels is not None:
            raw_sl = self.slice_labels.view(np.ndarray)
            slice_labels = np.empty(rows.shape[0], dtype=np.int8)
            if spans:
                np.concatenate([raw_sl[a:b] for a, b in spans], out=slice_labels, casting="unsafe")
        return BagBlock(
            indices=idx,
            scan_ids=[self._ids[i] for i in idx.tolist()],
            labels=self._labels[idx],
            lengths=lengths,
            embeddings=rows,
            slice_labels=slice_labels,
        )

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore({str(self.path)!r}, scans={len(self)}, slices={self.n_slices_total}, dim={self.dim}, "
            f"dtype={self.embeddings.dtype}, slice_labels={self.slice_labels is not None})"
        )


class EmbeddingStoreWriter:
    """Stream scans into a new store; the folder appears only when the writer closes cleanly.

    Rows are appended to a temporary folder beside ``path``; :meth:`close` writes the store index, slice labels and
    metadata and renames the folder into place (atomic on one file system). If the ``with`` block raises, the
    temporary folder is removed and nothing is left at ``path``.

    Args:
        path: destination folder; must not exist unless ``overwrite``.
        dim: embedding width D.
        dtype: ``"float16"`` (default) or ``"float32"``.
        metadata: extra metadata stored in ``store.json`` (e.g. ``{"encoder": {...}, "preprocessing": {...}}``).
        overwrite: replace an existing store at ``path`` (only after the new one is complete).

    Example::

        with EmbeddingStoreWriter("store", dim=768) as w:
            w.add_scan("scan-1", "patient-1", 1, emb, slice_labels)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dim: int,
        dtype: str | np.dtype = "float16",
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        self.dim = int(dim)
        self.metadata = dict(metadata or {})
        for reserved in ("format", "version", "dim", "dtype", "n_scans", "n_slices"):
            self.metadata.pop(reserved, None)
        self.overwrite = overwrite
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir(parents=True)
        self._emb = open(self._tmp / EMBEDDINGS_FILE, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._emb.write(_npy_header((0, self.dim), self.dtype))
        self._rows: list[tuple[str, str, int, int, int]] = []
        self._ids: set[str] = set()
        self._slice_labels: list[np.ndarray] = []
        self._any_slice_labels = False
        self._total = 0
        self._closed = False

    def add_scan(
        self,
        scan_id: str,
        patient_id: str,
        label: int,
        embeddings: np.ndarray,
        slice_labels: np.ndarray | None = None,
    ) -> None:
        """Append one scan.

        Args:
            scan_id: unique, non-empty identifier.
            patient_id: pseudonymous patient id (used for patient-level splits).
            label: scan label, 0 or 1.
            embeddings: ``[S, D]`` array in anatomical order (inferior -> superior), finite, S >= 1.
            slice_labels: optional ``[S]`` integers in {1, 0, -1 (unknown)}.

        Raises:
            ValueError: naming the scan and the reason; nothing is appended then.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        scan_id = str(scan_id)
        if not scan_id.strip():
            raise ValueError("scan_id must be a non-empty string")
        if scan_id in self._ids:
            raise ValueError(f"scan {scan_id!r}: duplicate scan_id")
        if label not in (0, 1):
            raise ValueError(f"scan {scan_id!r}: label {label!r} is not 0 or 1")
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"scan {scan_id!r}: embeddings must be [S, D], got shape {emb.shape}")
        if emb.shape[0] < 1:
            raise ValueError(f"scan {scan_id!r}: empty bag (0 slices)")
        if emb.shape[1] != self.dim:
            raise ValueError(f"scan {scan_id!r}: embedding width {emb.shape[1]} does not match the store's {self.dim}")
        if not np.isfinite(emb).all():
            raise ValueError(f"scan {scan_id!r}: embeddings contain NaN or inf")
        n = emb.shape[0]
        if slice_labels is not None:
            sl = np.asarray(slice_labels)
            if sl.shape != (n,):
                raise ValueError(f"scan {scan_id!r}: slice_labels shape {sl.shape} != ({n},)")
            if not np.isin(sl, (-1, 0, 1)).all():
                raise ValueError(f"scan {scan_id!r}: slice labels must be 1, 0 or -1 (unknown)")
            sl = sl.astype(np.int8)
            self._any_slice_labels = True
        else:
            sl = np.full(n, -1, dtype=np.int8)
        self._emb.write(np.ascontiguousarray(emb, dtype=self.dtype).tobytes())
        self._rows.append((scan_id, str(patient_id), int(label), self._total, n))
        self._slice_labels.append(sl)
        self._ids.add(scan_id)
        self._total += n

    def close(self) -> EmbeddingStore:
        """Finalise the store and move it into place; returns it opened."""
        if self._closed:
            raise RuntimeError(f"{self.path}: writer already closed")
        if not self._rows:
            self.abort()
            raise ValueError(f"{self.path}: no scans were added; refusing to write an empty store")
        self._emb.seek(0)
        self._emb.write(_npy_header((self._total, self.dim), self.dtype))
        self._emb.flush()
        os.fsync(self._emb.fileno())
        self._emb.close()
        pd.DataFrame(self._rows, columns=list(STORE_INDEX_COLUMNS)).to_csv(self._tmp / STORE_INDEX_FILE, index=False)
        if self._any_slice_labels:
            np.save(self._tmp / SLICE_LABELS_FILE, np.concatenate(self._slice_labels))
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "dim": self.dim,
            "dtype": self.dtype.name,
            "n_scans": len(self._rows),
            "n_slices": self._total,
            "order": "inferior_to_superior",
            **self.metadata,
        }
        (self._tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._closed = True
        _move_into_place(self._tmp, self.path, self.overwrite)
        return EmbeddingStore(self.path)

    def abort(self) -> None:
        """Discard everything written so far."""
        if not self._emb.closed:
            self._emb.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> EmbeddingStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def _move_into_place(tmp: Path, dest: Path, overwrite: bool) -> None:
    if dest.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{dest}: already exists")
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def import_flat_layout(
    source: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    check_finite: bool = True,
) -> EmbeddingStore:
    """Validate a user's flat embedding folder and make it a store (adds ``store.json``).

    Args:
        source: folder with ``embeddings.npy``, ``manifest.csv`` and optionally ``slice_labels.npy``.
        dest: copy the validated files here (a new folder); None validates and annotates ``source`` in place
            (only ``store.json`` is written there; existing files are not touched).
        metadata: extra metadata for ``store.json`` (e.g. encoder name).
        check_finite: scan the embeddings for NaN/inf.

    Returns:
        The opened store.

    Raises:
        StoreError: naming the file, scan and reason for any inconsistency; nothing is written then.
    """
    store = EmbeddingStore(source, check_finite=check_finite)
    meta = {
        **store.metadata,
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "dim": store.dim,
        "dtype": store.embeddings.dtype.name,
        "n_scans": len(store),
        "n_slices": store.n_slices_total,
        "order": store.metadata.get("order", "inferior_to_superior"),
        **dict(metadata or {}),
    }
    if dest is None:
        target = Path(source)
    else:
        target = Path(dest)
        if target.exists():
            raise FileExistsError(f"{target}: already exists")
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name in (EMBEDDINGS_FILE, STORE_INDEX_FILE, SLICE_LABELS_FILE):
                if (Path(source) / name).is_file():
                    shutil.copy2(Path(source) / name, tmp / name)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, target)
        return EmbeddingStore(target)
    tmp_meta = target / f".{METADATA_FILE}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp_meta, target / METADATA_FILE)
    return EmbeddingStore(target)
