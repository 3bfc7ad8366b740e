"""Tests of the report functions of benchmarks/results.py (tables, settings, the computed paragraph, figures)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_ng.experiment import slice_scores_path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results.py"
_spec = importlib.util.spec_from_file_location("benchmark_results", _PATH)
results_mod = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_results"] = results_mod
_spec.loader.exec_module(results_mod)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results() -> pd.DataFrame:
    rows = []
    per_method = {
        "centre baseline": ([0.7, 0.8, 0.9], [0.6, 0.6, 0.6]),
        "ABMIL": ([0.6, 0.65, 0.7], [0.8, 0.9, 1.0]),
        "ABMIL+NG (forward KL)": ([0.85, 0.9, 0.95], [0.7, 0.8, 0.9]),
        "instance ceiling": ([0.99, 0.99, 0.99], [0.5, 0.5, 0.5]),
    }
    for method, (loc, scan) in per_method.items():
        for split in range(3):
            rows.append(
                {
                    "method": method,
                    "split": split,
                    "scan_auroc": scan[split],
                    "loc_auroc": loc[split],
                    "loc_auprc": loc[split] / 2,
                }
            )
    return pd.DataFrame(rows)


def test_table_is_mean_and_sample_std_per_method_in_order():
    table = results_mod.results_table(_results()).splitlines()
    assert table[0] == "| method | scan AUROC | loc. AUROC | loc. AUPRC | splits |"
    assert table[2] == "| centre baseline | 0.600 ± 0.000 | 0.800 ± 0.100 | 0.400 ± 0.050 | 3 |"
    assert table[3] == "| ABMIL | 0.900 ± 0.100 | 0.650 ± 0.050 | 0.325 ± 0.025 | 3 |"
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| centre baseline",
        "| ABMIL",
        "| ABMIL+NG (forward KL)",
        "| instance ceiling",
    ]


def test_what_came_out_is_computed_from_the_numbers():
    text = results_mod.what_came_out(_results())
    # the ceiling (0.99) is trained on slice labels and is not "the best" weakly supervised method
    assert "best localization among the methods trained on scan labels is **ABMIL+NG (forward KL)**" in text
    assert "(loc. AUROC 0.900 ± 0.050), +0.100 against the centre baseline (0.800 ± 0.100)" in text
    assert "the difference is within one split standard deviation" in text  # 0.100 <= max(0.05, 0.1)
    assert "ABMIL+NG (forward KL) vs ABMIL: loc. AUROC +0.250, scan AUROC -0.100." in text
    assert "Best scan AUROC: ABMIL (0.900 ± 0.100)." in text
    assert "instance ceiling (trained on slice labels) reaches loc. AUROC 0.990 ± 0.000" in text
    wider = _results()
    wider.loc[wider["method"] == "ABMIL+NG (forward KL)", "loc_auroc"] = [0.95, 0.95, 0.96]
    assert "larger than one split standard deviation" in results_mod.what_came_out(wider)


def test_settings_block_records_data_sizes_grid_and_command():
    settings = {
        "about": "phantom head CT.",
        "data": {"generator": "g", "seconds": {"dicom": 1.0, "ingest": 2.0, "embed": 4.0}},
        "sizes": {
            "scans": 10,
            "positive_scans": 5,
            "patients": 8,
            "slices": 400,
            "slices_per_scan": [30, 50],
            "dim": 192,
        },
        "grid": {"lrs": [0.1], "l1_weights": [0.0], "ng_weight": [1.0]},
        "training": {"epochs": 15, "batch_size": 64, "train_above_val": True, "drop_last": True, "ceiling_kernel": 12},
        "splits": [1001, 2001, 3001],
        "threads": 2,
        "command": "python benchmarks/results.py --out X",
        "profile": "full",
        "date": "2026-01-01",
        "machine": "2 x cpu",
    }
    block = results_mod.settings_block(settings)
    assert "10 scans (5 positive) from 8 patients; 400 slices (30-50 per scan), 192-d embeddings" in block
    assert "embed 4.0 s (100 slices/s)" in block
    assert "lr [0.1], L1 alpha [0.0], lambda [1.0]; 15 epochs, batch 64" in block
    assert "ceiling kernel 12; splits [1001, 2001, 3001]; 2 torch threads" in block
    assert "`python benchmarks/results.py --out X` (profile `full`), 2026-01-01, 2 x cpu" in block
    assert '`{"generator": "g"}`' in block  # timings are listed separately, not in the data settings


def _write_slice_scores(folder: Path, methods: list[str]) -> None:
    rng = np.random.default_rng(0)
    (folder / "slice_scores").mkdir(parents=True)
    rows = []
    labels = {"a": [0, 1, 1, 0, 0, 0], "b": [0, 1, 0, 0, 1, 0], "c": [0] * 6, "d": [1, 1, 0, 0, 0, 0]}
    for scan, lab in labels.items():
        rows += [{"scan_id": scan, "slice": i, "slice_label": v} for i, v in enumerate(lab)]
    frame = pd.DataFrame(rows)
    for m in methods:
        frame.assign(attention=rng.random(len(frame))).to_csv(slice_scores_path(folder, m, 0), index=False)


def test_pick_scans_prefers_more_lesion_blocks_and_skips_negatives(tmp_path):
    _write_slice_scores(tmp_path, ["ABMIL"])
    frame = pd.read_csv(slice_scores_path(tmp_path, "ABMIL", 0), dtype={"scan_id": str})
    assert results_mod.pick_scans(frame, 4) == ["b", "a", "d"]
    assert results_mod.pick_scans(frame, 1) == ["b"]


def test_figures_are_written_as_png(tmp_path):
    results = _results()
    loc = results_mod.plot_loc_auroc(results, tmp_path / "fig" / "loc.png", "test")
    assert loc.read_bytes()[:8] == PNG_MAGIC
    _write_slice_scores(tmp_path / "exp", ["ABMIL", "instance ceiling"])
    att = results_mod.plot_attention_curves(tmp_path / "exp", ["ABMIL", "instance ceiling"], tmp_path / "att.png", "t")
    assert att is not None and att.read_bytes()[:8] == PNG_MAGIC
    assert results_mod.plot_attention_curves(tmp_path / "none", ["ABMIL"], tmp_path / "x.png", "t") is None


def test_report_lists_only_finished_datasets(tmp_path):
    folder = tmp_path / "ct_regime_head"
    (folder / "experiment").mkdir(parents=True)
    _results().to_csv(folder / "experiment" / "results.csv", index=False)
    settings = {"title": "CT regime, head", "finished": False, "about": "x"}
    (folder / "settings.json").write_text(json.dumps(settings))
    text = results_mod.render_report(tmp_path, tmp_path / "figures", "cmd")
    assert "No data set has finished" in text and "<!-- generated file" in text
    (folder / "settings.json").write_text(json.dumps({**settings, "finished": True}))
    text = results_mod.render_report(tmp_path, tmp_path / "figures", "cmd")
    assert "## CT regime, head (`ct_regime_head`)" in text
    assert "![localization AUROC](figures/ct_regime_head_loc_auroc.png)" in text
    assert (tmp_path / "figures" / "ct_regime_head_loc_auroc.png").exists()
    assert "| ABMIL+NG (forward KL) | 0.800 ± 0.100 | 0.900 ± 0.050 |" in text


def test_every_profile_sizes_every_dataset():
    for name, profile in results_mod.PROFILES.items():
        assert set(profile.scans) == set(results_mod.DATASETS), name
    from monai_ng.networks.instance_ceiling import CEILING_KERNELS

    assert results_mod.REGION_KERNELS == CEILING_KERNELS


def test_unknown_dataset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        results_mod.main(["--out", str(tmp_path), "--datasets", "nope"])
    assert "unknown data set(s) ['nope']" in capsys.readouterr().err


def _beyond() -> pd.DataFrame:
    # variant loc AUROC per split; compared methods (from _results): ABMIL+NG 0.85/0.9/0.95, ABMIL 0.6/0.65/0.7
    per_method = {
        "ABMIL+NG (centre negatives)": ([0.95, 0.95, 1.0], [0.7, 0.8, 0.9]),  # +0.10, +0.05, +0.05 vs ABMIL+NG
        "ABMIL+NG (positives only)": ([0.85, 0.8, 0.95], [0.7, 0.8, 0.9]),  # 0, -0.1, 0 vs ABMIL+NG
    }
    rows = [
        {"method": m, "split": k, "scan_auroc": scan[k], "loc_auroc": loc[k], "loc_auprc": 0.5}
        for m, (loc, scan) in per_method.items()
        for k in range(3)
    ]
    return pd.DataFrame(rows)


def test_beyond_table_pairs_each_variant_with_the_methods_it_refines_split_by_split():
    lines = results_mod.beyond_table(_results(), _beyond()).splitlines()
    assert lines[0].startswith("| variant | compared with | loc. AUROC (variant) |")
    # paired differences vs ABMIL+NG: 0.10, 0.05, 0.05 -> mean 0.0667, sample sd 0.0289; scan: 0, 0, 0
    assert lines[2] == (
        "| ABMIL+NG (centre negatives) | ABMIL+NG (forward KL) | 0.967 ± 0.029 | 0.900 ± 0.050 | +0.067 ± 0.029 "
        "| +0.000 ± 0.000 | 3 |"
    )
    # vs ABMIL: 0.35, 0.30, 0.30 -> mean 0.3167, sd 0.0289; scan 0.7-0.8, 0.8-0.9, 0.9-1.0 = -0.1 each
    assert lines[3] == (
        "| ABMIL+NG (centre negatives) | ABMIL | 0.967 ± 0.029 | 0.650 ± 0.050 | +0.317 ± 0.029 | -0.100 ± 0.000 | 3 |"
    )
    assert [line.split(" | ")[1] for line in lines[4:]] == ["ABMIL+NG (forward KL)", "ABMIL"]


def test_beyond_verdicts_are_computed_from_paired_differences():
    text = results_mod.beyond_came_out(_results(), _beyond())
    # centre negatives: +0.067 > sd 0.029 vs ABMIL+NG and +0.317 > 0.029 vs ABMIL -> better than both
    assert "(paired difference above one split sd): ABMIL+NG (centre negatives)." in text
    # positives only: vs ABMIL+NG diffs 0, -0.1, 0 -> mean -0.033, sd 0.058 (within); vs ABMIL +0.25, +0.15, +0.25
    assert "Worse than at least one of them: none." in text
    assert "Within one sd of them: ABMIL+NG (positives only)." in text


def test_selected_epochs_sentence():
    frame = pd.DataFrame({"best_epoch": [3, 15, 15, 7]})
    assert results_mod.selected_epochs(frame, 15) == (
        "Selected epochs: median 11, range 3-15 of 15; 50% of the 4 runs chose the last epoch."
    )
    assert results_mod.selected_epochs(pd.DataFrame({"method": ["a"]}), 15) == ""


def test_what_came_out_says_when_the_scan_label_was_barely_learned():
    assert "barely learned" not in results_mod.what_came_out(_results())  # best scan AUROC 0.9
    weak = _results()
    weak["scan_auroc"] = 0.55
    assert "No method trained on scan labels reaches a scan AUROC of 0.6" in results_mod.what_came_out(weak)
