"""The past-the-paper method variants (issue 10, section 3): their settings reach MILObjective and each one trains
and is evaluated end to end by run_experiment (one epoch on a small store)."""

from __future__ import annotations

import importlib.util
import math

import pytest

import monai_ng.experiment as experiment
from monai_ng.experiment import ExperimentConfig, method_variants, run_experiment
from monai_ng.losses import MILObjective

PAST_THE_PAPER = {
    # name: (network, MILObjective keyword arguments that must reach the objective)
    "SmAP+NG (forward KL)": ("smap", {"divergence": "forward_kl", "guide": "all"}),
    "ABMIL+NG (positives only)": ("abmil", {"guide": "positive"}),
    "ABMIL+NG (uniform negatives)": ("abmil", {"guide": "positive_uniform_negative"}),
    "ABMIL+NG (centre negatives)": ("abmil", {"guide": "positive_centre_negative"}),
    "TransMIL+NG (mixture, K=2)": (
        "transmil",
        {"ng_heads": "each", "reference": "mixture", "components": 2, "em_steps": 5, "head_diversity_weight": 0.0},
    ),
    "TransMIL+NG (multi-head, diversity)": (
        "transmil",
        {"ng_heads": "each", "reference": "normal", "head_diversity_weight": 1.0},
    ),
    "torchmil ABMIL+NG": ("torchmil", {"guide": "all"}),
    "torchmil SmABMIL+NG": ("torchmil", {"guide": "all"}),
}


def test_variants_are_named_and_set():
    variants = {m.name: m for m in method_variants(transmil_heads=4)}
    for name, (network, _) in PAST_THE_PAPER.items():
        assert variants[name].network == network and variants[name].ng
    # the past-the-paper TransMIL rows use the default (paper-width) TransMIL, not the projected one
    assert variants["TransMIL+NG (mixture, K=2)"].network_kwargs == {"num_heads": 4}
    assert variants["torchmil SmABMIL+NG"].network_kwargs == {"model": "SmABMIL"}


def test_each_variant_trains_one_epoch_with_its_objective(easy_store, tmp_path, monkeypatch):
    names = [n for n in PAST_THE_PAPER if importlib.util.find_spec("torchmil") or not n.startswith("torchmil")]
    methods = [m for m in method_variants(transmil_heads=2) if m.name in names]
    assert [m.name for m in methods] == names
    built: list[dict] = []

    class RecordingObjective(MILObjective):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(experiment, "MILObjective", RecordingObjective)
    cfg = ExperimentConfig(lrs=(0.1,), l1_weights=(0.0,), max_epochs=1, batch_size=32, seeds=(1001,))
    results = run_experiment(easy_store, tmp_path / "exp", methods, cfg)
    assert results["method"].tolist() == names
    assert all(math.isfinite(v) for v in results["scan_auroc"]) and all(math.isfinite(v) for v in results["loc_auroc"])
    assert len(built) == len(names)
    for kwargs, name in zip(built, names, strict=True):
        assert kwargs["ng_weight"] == 1.0
        for key, value in PAST_THE_PAPER[name][1].items():
            assert kwargs[key] == value, (name, key)


def test_unknown_settings_are_refused_when_the_objective_is_built():
    with pytest.raises(ValueError, match="guide must be one of"):
        MILObjective(guide="negative")
    with pytest.raises(ValueError, match="reference must be one of"):
        MILObjective(reference="mixtures")
