"""The one-pass reader and the pydicom path read every file alike: same header and HU as pydicom, or a clear refusal.

Property-based (hypothesis): valid CT files are mutated (byte flips, truncation, length / VR corruption, elements
repeated after or before PixelData, trailing bytes, malformed numbers, UIDs with spaces); each mutant must be read
exactly as pydicom reads it, or refused with a ``ValueError`` naming the file and quoting no identifying value. The
minimal files behind issue 11's findings are kept in ``tests/io/corpus`` (regenerate with
``python tests/reliability/dicom_mutants.py tests/io/corpus``).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.dicom_mutants import (
    IDENTIFYING_MARKERS,
    compare_with_pydicom,
    corpus_cases,
    draw_mutation,
    mutate,
    seed_files,
)

from monai_ng.io import CTSeriesReader, read_slice_header
from monai_ng.io._native_dicom import read_native_header, read_native_slice

CORPUS = Path(__file__).parent / "corpus"
SEEDS = seed_files()


def test_seeds_take_the_fast_path_and_agree(tmp_path: Path) -> None:
    for k, data in enumerate(SEEDS):
        path = tmp_path / f"seed{k}.dcm"
        path.write_bytes(data)
        assert read_native_slice(path) is not None and read_native_header(path) is not None
        assert compare_with_pydicom(path) == ("agree", "")


@st.composite
def mutations(draw: st.DrawFn) -> tuple[int, ...]:
    return draw_mutation(lambda lo, hi: draw(st.integers(lo, hi)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations())
def test_mutants_agree_with_pydicom_or_are_refused_by_name(mutation: tuple[int, ...]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.dcm"
        path.write_bytes(mutate(SEEDS, mutation))
        outcome, detail = compare_with_pydicom(path)
    assert outcome in ("agree", "refused"), (mutation, outcome, detail)


def test_corpus_is_current() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.dcm")) == sorted(corpus_cases())


@pytest.mark.parametrize("name", sorted(corpus_cases()))
def test_corpus_file(name: str) -> None:
    path = CORPUS / f"{name}.dcm"
    outcome, detail = compare_with_pydicom(path)
    assert outcome == corpus_cases()[name][1], detail
    if outcome == "refused":
        assert str(path) in detail and not any(m in detail for m in IDENTIFYING_MARKERS.values())


def test_element_after_pixel_data_wins_as_in_pydicom() -> None:
    # issue 11: an appended RescaleIntercept "0" was ignored by the fast path (mean HU -1024 + x instead of x)
    path = CORPUS / "appended_rescale_intercept.dcm"
    assert read_native_slice(path) is None and read_native_header(path) is None  # handed to pydicom
    header = read_slice_header(path)
    assert header.rescale_intercept == 0.0 == float(pydicom.dcmread(path).RescaleIntercept)
    moved = read_slice_header(CORPUS / "appended_position.dcm")
    assert moved.image_position == (5.0, 5.0, 50.0)


def test_uid_spaces_are_stripped_as_pydicom_does() -> None:
    uids = {
        read_slice_header(CORPUS / f"{n}.dcm").series_instance_uid for n in ("uid_leading_space", "uid_trailing_spaces")
    }
    assert uids == {str(pydicom.dcmread(CORPUS / "uid_leading_space.dcm").SeriesInstanceUID)}
    assert uids == {"1.2.826.0.1.3680043.10.999.3"}


def test_malformed_informative_tags_do_not_stop_a_load() -> None:
    for name in ("window_center_abc", "instance_number_1A"):
        header = read_slice_header(CORPUS / f"{name}.dcm")
        assert header.window_center is None or header.instance_number is None
    with pytest.raises(ValueError, match=r"rescale_intercept_comma\.dcm: RescaleIntercept is not a number \('1,5'\)"):
        read_slice_header(CORPUS / "rescale_intercept_comma.dcm")


def test_skip_unreadable_names_every_bad_file(tmp_path: Path) -> None:
    # issue 11: a str BitsStored (TypeError), an unknown VR (NotImplementedError) and truncated pixels passed through
    for k in range(3):
        ds = pydicom.dcmread(io.BytesIO(SEEDS[0]))
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.SOPInstanceUID = f"1.2.3.{k}"
        ds.save_as(tmp_path / f"ok{k}.dcm", enforce_file_format=True)
    bad = ("bits_stored_vr_ui", "pixel_data_unknown_vr", "truncated_pixel_data", "rescale_slope_zero")
    for name in bad:
        (tmp_path / f"{name}.dcm").write_bytes((CORPUS / f"{name}.dcm").read_bytes())
    reader = CTSeriesReader(skip_unreadable=True, on_geometry_issue="ignore")
    volume, meta = reader.get_data(reader.read(tmp_path))
    assert volume.shape[-1] == 3
    skipped = sorted(Path(s.split(":")[0]).stem for s in meta["skipped_files"])
    assert skipped == sorted(bad)


def test_constant_and_non_finite_volumes_are_refused(tmp_path: Path) -> None:
    seed = SEEDS[0]
    flat = seed.replace(seed[-128:], np.full(64, 7, np.int16).tobytes())
    (tmp_path / "flat.dcm").write_bytes(flat)
    with pytest.raises(ValueError, match=r"flat\.dcm: every voxel has the same HU value 7"):
        CTSeriesReader().get_data(CTSeriesReader().read(tmp_path / "flat.dcm"))
