"""LoadCTSeriesd (and its D / Dict aliases): per-item series choice, explicit arguments, Compose."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import ct_slice, save_slice
from monai.transforms import Compose

from monai_ng.io.ct_series_reader import CTSeriesReader
from monai_ng.transforms import (
    CTSliceStack,
    CTSliceStackD,
    CTSliceStackd,
    CTSliceStackDict,
    CTWindowsD,
    CTWindowsd,
    CTWindowsDict,
    HUZScoreD,
    HUZScored,
    HUZScoreDict,
    LoadCTSeries,
    LoadCTSeriesD,
    LoadCTSeriesd,
    LoadCTSeriesDict,
)
from monai_ng.transforms.forwarding import wrapped_arguments


def write_slice(path: Path, pixels: np.ndarray, *, sop: str, ipp, series: str) -> Path:
    return save_slice(ct_slice(pixels, sop=sop, series=series, ipp=ipp), path)


def test_dictionary_version(tmp_path: Path) -> None:
    for s in ("1.1", "1.2"):
        write_slice(tmp_path / f"{s}.dcm", np.eye(2, dtype=np.int16) + 7, sop=f"{s}.0", ipp=(0, 0, 0), series=s)
    t = LoadCTSeriesd(keys="image", series_uid_key="series")
    d = t({"image": str(tmp_path), "series": "1.1", "label": 1})
    assert d["label"] == 1 and d["image"].meta["series_uid"] == "1.1"
    assert t({"image": str(tmp_path), "series": "1.2"})["image"].meta["series_uid"] == "1.2"  # per item
    files = [str(tmp_path / "1.2.dcm")]
    d2 = LoadCTSeriesd(keys="image")({"image": files})
    assert d2["image"].meta["slice_sop_uids"] == ["1.2.0"]
    fixed = LoadCTSeriesd(keys="image", series_uid="1.2", on_geometry_issue="raise")({"image": str(tmp_path)})
    assert fixed["image"].meta["series_uid"] == "1.2"


def test_aliases_and_explicit_arguments() -> None:
    assert LoadCTSeriesD is LoadCTSeriesDict is LoadCTSeriesd
    assert CTWindowsD is CTWindowsDict is CTWindowsd
    assert HUZScoreD is HUZScoreDict is HUZScored
    assert CTSliceStackD is CTSliceStackDict is CTSliceStackd
    for cls in (LoadCTSeriesd, CTWindowsd, HUZScored, CTSliceStackd):
        kinds = {p.kind for p in inspect.signature(cls.__init__).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, cls.__name__
    # each wrapper takes every argument of what it wraps, with the same default
    for wrapper, wrapped in (
        (LoadCTSeries, CTSeriesReader),
        (LoadCTSeriesd, LoadCTSeries),
        (CTSliceStackd, CTSliceStack),
    ):
        outer = inspect.signature(wrapper).parameters
        for name, param in inspect.signature(wrapped).parameters.items():
            assert name in outer and outer[name].default == param.default, (wrapper.__name__, name)


def test_wrapped_arguments() -> None:
    def target(a, b=2, *args, c=3, **kwargs):
        return a, b, c

    assert wrapped_arguments(target, {"a": 1, "b": 5, "c": 7, "extra": 0}) == {"a": 1, "b": 5, "c": 7}
    with pytest.raises(TypeError, match=r"target: wrapper has no argument\(s\) \['c'\]"):
        wrapped_arguments(target, {"a": 1, "b": 5})


def test_load_stack_window_chain_in_compose(tmp_path: Path) -> None:
    for k in range(3):
        write_slice(
            tmp_path / f"{k}.dcm", np.full((4, 6), 40 * k, np.int16), sop=f"1.3.{k}", ipp=(0, 0, k), series="1.3"
        )
    pipe = Compose(
        [
            LoadCTSeriesD(keys="image", on_geometry_issue="raise"),
            CTSliceStackD(keys="image", spatial_size=8),
            CTWindowsD(keys="image", windows="brain", channel_dim=1),
        ]
    )
    out = pipe({"image": str(tmp_path)})["image"]
    assert out.shape == (3, 1, 8, 8)
    assert out.meta["slice_sop_uids"] == ["1.3.0", "1.3.1", "1.3.2"]
    np.testing.assert_allclose(out[:, 0, 4, 4].numpy(), [0.0, 0.5, 1.0])  # brain window 40/80
