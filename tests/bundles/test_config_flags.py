"""On / off bundle config keys: :func:`monai_ng.bundle.config_flag` reads booleans and their usual spellings (what
``monai.bundle run --key false`` hands over is the text ``"false"``) and rejects anything else; every bundle config
reads each such key through it, so a lowercase ``false`` on the command line turns the setting off."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from bundles.bundle_workspace import BUNDLE_DIRS
from monai.bundle import ConfigParser

from monai_ng.bundle import config_flag

FLAG_KEYS = (
    "pin_memory",
    "non_blocking",
    "require_train_above_val",
    "retain_freed_host_memory",
    "write_png",
    "write_dicom",
    "load_pretrain",
    "progress",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (1, True),
        (0, False),
        (np.int64(0), False),
        ("true", True),
        ("false", False),
        ("True", True),
        ("FALSE", False),
        (" yes ", True),
        ("no", False),
        ("t", True),
        ("n", False),
        ("1", True),
        ("0", False),
    ],
)
def test_spellings(value, expected):
    assert config_flag(value, "write_png") is expected


@pytest.mark.parametrize("value", [None, 2, -1, np.int64(2), 1.0, 0.0, "", "maybe", "ture", "on", [], [True], {"a": 1}])
def test_anything_else_is_refused_with_the_key(value):
    with pytest.raises(ValueError, match=r"'write_dicom' must be true or false .*--write_dicom False.*got"):
        config_flag(value, "write_dicom")


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=[b.name for b in BUNDLE_DIRS])
def test_every_config_reads_its_flags_through_config_flag(bundle):
    """No config uses an on / off key bare (``@write_png``, ``if @load_pretrain``): every reference is the first
    argument of ``config_flag`` with the key's own name, and each key is declared as a boolean somewhere."""
    declared = {}
    for path in sorted((bundle / "configs").glob("*.json")):
        text = path.read_text()
        for key in FLAG_KEYS:
            for match in re.finditer(rf"@{key}\b", text):
                before = text[max(0, match.start() - len("config_flag(")) : match.start()]
                after = text[match.end() : match.end() + len(key) + 4]
                assert before == "config_flag(" and after == f", '{key}'", f"{path.name}: bare @{key}"
        top = json.loads(text)
        declared.update({k: v for k, v in top.items() if k in FLAG_KEYS} if isinstance(top, dict) else {})
    assert set(declared) == set(FLAG_KEYS)
    literal = {k: v for k, v in declared.items() if not str(v).startswith("$")}
    assert all(isinstance(v, bool) for v in literal.values()), literal


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=[b.name for b in BUNDLE_DIRS])
def test_text_from_the_command_line_switches_a_writer_off(bundle):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    writer = next(i for i, h in enumerate(parser["handlers"]) if h["_target_"].endswith("PredictionWriter"))
    parser["write_png"] = "false"  # what `--write_png false` hands over
    parser["write_dicom"] = "True"
    assert parser.get_parsed_content(f"handlers#{writer}#write_png") is False
    assert parser.get_parsed_content(f"handlers#{writer}#write_dicom") is True
    parser["write_png"] = "nope"
    with pytest.raises(RuntimeError, match="Failed to evaluate") as caught:  # MONAI's wrapper; ours is its cause
        parser.get_parsed_content(f"handlers#{writer}#write_png")
    assert isinstance(caught.value.__cause__, ValueError)
    assert "'write_png' must be true or false" in str(caught.value.__cause__)
