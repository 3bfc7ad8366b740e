"""The identifier-marker chain (used by ``test_identifier_markers.py`` and ``reliability_figures.py``).

No identifier leaves the raw data: marker strings in every identifying tag never reach an output file or a log line.

Phantom DICOM (RSNA ICH layout) gets a marker in PatientName, PatientID, PatientBirthDate, AccessionNumber,
InstitutionName, ReferringPhysicianName and StudyID, plus one file whose SOPClassUID length runs over those elements
(its failure reason must not quote them); then ingest (with ``--pseudonymize-key-file``) -> embed -> experiment ->
predict run in this process, and every file they write and every captured stdout / stderr / log line is searched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import pydicom
import torch

from monai_ng.cli import main

#: One marker per identifying tag (PatientID gets the marker as a prefix, so patients stay distinct).
MARKERS = {
    "PatientName": "MRKNAMEQZX^ZQX",
    "PatientID": "MRKPIDQZX",
    "PatientBirthDate": "19020304",
    "AccessionNumber": "MRKACCQZX",
    "InstitutionName": "MRKINSTQZX",
    "ReferringPhysicianName": "MRKREFQZX",
    "StudyID": "MRKSTDQZX",
}


def mark_identifiers(root: Path) -> list[Path]:
    """Put the markers into every DICOM file under ``root``; returns the files."""
    files = sorted(root.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        for tag, marker in MARKERS.items():
            setattr(ds, tag, marker + "_" + str(ds.PatientID) if tag == "PatientID" else marker)
        ds.save_as(path)
    return files


def swallow_identifiers(path: Path) -> None:
    """Make the SOPClassUID length of ``path`` run over the elements after it (the identifying ones)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x08\x00\x16\x00UI")
    data[at + 6 : at + 8] = (0x0400).to_bytes(2, "little")
    path.write_bytes(bytes(data))


def run_logged(argv: list[str], lines: list[str]) -> int:
    """``monai-ng ARGV`` in this process; stdout, stderr and warnings are appended to ``lines``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rc = main(argv)
    lines += out.getvalue().splitlines() + err.getvalue().splitlines() + [str(x.message) for x in w]
    return rc


def find_markers(folder: Path, skip: tuple[Path, ...]) -> list[str]:
    """``"file: marker"`` for every marker (as bytes) found in a file under ``folder`` (``skip``: input folders)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(path.is_relative_to(s) for s in skip):
            continue
        data = path.read_bytes()
        found += [f"{path}: {m}" for m in MARKERS.values() if m.encode() in data or m.encode("utf-16-le") in data]
    return found


def run_marked_chain(folder: Path) -> tuple[list[str], list[str]]:
    """Phantom -> markers -> ingest (pseudonymised) -> embed -> experiment -> predict in ``folder`` (the cwd).

    Returns ``(captured lines, markers found in output files)``; a root logger handler captures every log record.
    """
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_logged(["phantom", "--layout", "ich", "--out", "ich", "--n", "12", "--seed", "3"], lines) == 0
        files = mark_identifiers(folder / "ich")
        swallow_identifiers(files[0])
        (folder / "secret").mkdir()
        (folder / "secret" / "pseudonym.key").write_text("0123456789abcdef0123456789abcdef\n")
        ingest = ["ingest", "--dataset", "ich", "--root", "ich", "--out", "manifest.csv", "--no-progress"]
        assert run_logged([*ingest, "--pseudonymize-key-file", "secret/pseudonym.key"], lines) == 0
        assert "MRKPIDQZX" not in Path("manifest.csv").read_text()
        assert files[0].name in Path("failures.csv").read_text()  # the swallowing file failed, by name
        # without a key PatientID is the split key as is (docs/reliability.md says so): the chain does carry it
        assert run_logged([*ingest[:-2], "plain.csv", "--failures", "plain_failures.csv", "--no-progress"], lines) == 0
        assert "MRKPIDQZX" in Path("plain.csv").read_text()
        Path("plain.csv").unlink()
        embed = ["embed", "--manifest", "manifest.csv", "--out", "store", "--encoder", "vit_tiny_patch16_224",
                 "--weights", "random-init", "--image-size", "32", "--batch-size", "16", "--workers", "0",
                 "--no-progress"]  # fmt: skip
        assert run_logged(embed, lines) == 0
        experiment = ["experiment", "--data", "store", "--out", "exp", "--methods", "ABMIL", "--epochs", "1",
                      "--lrs", "0.1", "--seeds", "1001", "--threads", "1"]  # fmt: skip
        assert run_logged(experiment, lines) == 0
        checkpoint = next((folder / "exp" / "checkpoints").glob("*.safetensors"))
        assert run_logged(["predict", "--data", "store", "--checkpoint", str(checkpoint), "--out", "pred"], lines) == 0
    finally:
        torch.set_num_threads(threads)
        root.removeHandler(handler)
        root.setLevel(previous_level)
    lines += [r.getMessage() for r in records]
    leaked_lines = [line for line in lines if any(m in line for m in MARKERS.values())]
    return lines, leaked_lines + find_markers(folder, skip=(folder / "ich", folder / "secret"))
