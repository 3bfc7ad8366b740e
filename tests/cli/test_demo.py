"""``monai-ng demo``: the phantom CT pipeline end to end at tiny sizes (phantom RSNA ICH -> ingest -> embed.json ->
train.json / evaluate.json x methods -> inference.json -> table), its argument checks, and the ``--synthetic`` mode."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from monai_ng.cli import main
from monai_ng.reporting import read_results_csv, read_scan_json

# tiny phantom and encoder: 24 series of 6-8 slices at 32 x 32, vit_tiny on 32 x 32, one split, one epoch
TINY = [
    "--scans", "24", "--heldout", "2", "--slices", "6", "8", "--size", "32", "--image-size", "32",
    "--epochs", "1", "--batch-size", "8", "--seeds", "1001", "--top-k", "3", "--workers", "0", "--no-progress",
]  # fmt: skip


def _referenced_sops(kos: pydicom.Dataset) -> set[str]:
    found = set()
    for study in kos.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            found |= {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedSOPSequence}
    return found


def test_ct_demo_runs_the_bundle_pipeline_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "RANDOMLY INITIALISED" in text and "RANDOM-INIT ENCODER" in text
    assert "Where to look" in text and str(out / "predictions") in text

    # the table: one row per default method, mean +- std over the (one) split
    table = (out / "results.md").read_text()
    for name in ("centre baseline", "ABMIL", "ABMIL+NG (forward KL)"):
        assert f"| {name} | " in table and f"| {name} | " in text
    results = pd.read_csv(out / "results.csv")
    assert list(results["method"]) == ["centre baseline", "ABMIL", "ABMIL+NG (forward KL)"]
    assert results["scan_auroc"].between(0, 1).all() and results["loc_auroc"].between(0, 1).all()
    for slug in ("centre_baseline", "abmil", "abmil_ng__forward_kl"):
        assert (out / "runs" / slug / "split1001" / "models" / "model.pt").is_file()
        assert (out / "runs" / slug / "split1001" / "eval" / "metrics.csv").is_file()

    # inference on the held-out series: JSON / CSV / PNG / KOS + SC, references resolve to the input instances
    truth = pd.read_json(out / "data" / "heldout_truth.json")
    sops = {sop for row in truth["sop_uids"] for sop in row}
    predictions = out / "predictions"
    rows = read_results_csv(predictions / "predictions.csv")
    assert len(rows) == len(truth) == 2 and pd.read_csv(predictions / "failures.csv").empty
    for result in rows:
        scan = read_scan_json(predictions / f"{result.scan_id}.json")
        assert {s.sop_instance_uid for s in scan.slices} <= sops
        assert (predictions / f"{result.scan_id}.png").stat().st_size > 0
        kos = pydicom.dcmread(predictions / f"{result.scan_id}_kos.dcm")
        assert _referenced_sops(kos) <= sops | {
            pydicom.dcmread(predictions / f"{result.scan_id}_sc.dcm").SOPInstanceUID
        }
    assert "lesion slices" in text and "flagged" in text

    # a second run reuses the phantom data and the finished store; another method list and inference model
    assert main(["demo", "--out", str(out), *TINY, "--methods", "ABMIL", "--infer-method", "ABMIL"]) == 0
    again = capsys.readouterr().out
    assert "reusing" in again
    assert list(pd.read_csv(out / "results.csv")["method"]) == ["ABMIL"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scans", "5"], "--scans"),
        (["--lrs", "0.1,0.01"], "one value each"),
        (["--methods", "instance ceiling"], "unknown method"),
        (["--encoder-weights", "no/such/file.pth"], "does not exist"),
        (["--infer-method", "SmAP"], "--infer-method"),
        (["--slices", "9", "3"], "--slices"),
    ],
)
def test_ct_demo_refuses_bad_arguments(tmp_path, capsys, extra, message) -> None:
    assert main(["demo", "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written


def test_ct_demo_reports_a_failing_step(tmp_path, capsys) -> None:
    """Weights of another architecture than --encoder: exit 1 with the reason, no traceback."""
    import timm
    from safetensors.torch import save_file

    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1)
    weights = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(weights))
    argv = ["demo", "--out", str(tmp_path / "d"), *TINY, "--scans", "12", "--encoder-weights", str(weights)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "monai-ng demo: error:" in err and "--encoder must name the weights' architecture" in err


def test_ct_demo_list_names_the_bundle_methods(capsys) -> None:
    assert main(["demo", "--list"]) == 0
    names = capsys.readouterr().out.split("\n")
    assert {"centre baseline", "ABMIL", "ABMIL+NG (forward KL)", "TransMIL"} <= set(names)
    assert "instance ceiling" not in names  # needs slice labels, which the bundle's training does not use


def test_synthetic_demo_stays_available(tmp_path, capsys) -> None:
    out = tmp_path / "synthetic"
    argv = ["demo", "--synthetic", "--out", str(out), "--n-bags", "60", "--epochs", "1", "--seeds", "1001"]
    assert main([*argv, "--methods", "ABMIL,ABMIL+NG (forward KL)"]) == 0
    assert (out / "data" / "store.json").is_file() and (out / "results.md").is_file()
    assert "ABMIL+NG (forward KL)" in capsys.readouterr().out


def test_synthetic_demo_bad_generator_setting_is_a_usage_error(tmp_path, capsys) -> None:
    out = tmp_path / "synthetic"
    assert main(["demo", "--synthetic", "--out", str(out), "--dim", "0", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "monai-ng demo: error:" in err and "dim must be >= 1, got 0" in err
    assert not (out / "results.md").exists()
