"""``monai-ng synthetic`` and ``monai-ng phantom``: flags, outputs and the ShiftedMean Bayes ceiling."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monai_ng.cli import main as cli_main
from monai_ng.cli import phantom as phantom_cli
from monai_ng.cli.synthetic import _ceiling
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.synthetic import bayes_scan_posterior, bayes_slice_posterior, write_synthetic_store


def test_cli_writes_store(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(
        ["synthetic", "--kind", "multi_lesion", "--out", str(out), "--n-bags", "12", "--dim", "8", "--seed", "4"]
        + ["--r", "2:4", "--lesions", "2", "--anatomy-rank", "2", "--dtype", "float16"]
    )
    assert rc == 0
    store = EmbeddingStore(out)
    meta = store.metadata["synthetic"]
    assert (meta["r"], meta["lesions"], meta["seed"], meta["kind"]) == ([2, 4], [2, 2], 4, "multi_lesion")
    assert store.embeddings.dtype == np.float16 and len(store) == 12
    assert "scans=12" in capsys.readouterr().out
    rc = cli_main(
        ["synthetic", "--kind", "shifted_mean", "--out", str(tmp_path / "sm"), "--n-bags", "20"] + ["--dim", "8"]
    )
    assert rc == 0 and "Bayes ceiling: scan AUROC" in capsys.readouterr().out
    rc = cli_main(["synthetic", "--kind", "shifted_mean", "--out", str(tmp_path / "x"), "--lesions", "2"])
    assert rc == 2 and "lesions" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        cli_main(["synthetic", "--kind", "shifted_mean", "--out", str(tmp_path / "y"), "--r", "1:2:3"])


def test_ceiling_equals_scikit_learn(tmp_path):
    store = write_synthetic_store("shifted_mean", tmp_path / "sm", 30, seed=2, dim=8)
    scan, slices = bayes_scan_posterior(store), bayes_slice_posterior(store)
    loc = []
    for i in np.flatnonzero(store.labels):
        o, n = int(store.index["offset"].iloc[i]), int(store.n_slices[i])
        sl = np.asarray(store.bag(int(i)).slice_labels)
        if 0 < sl.sum() < n:
            loc.append(roc_auc_score(sl, slices[o : o + n]))
    auroc, mean_loc = _ceiling(store)
    assert auroc == pytest.approx(roc_auc_score(store.labels, scan), abs=1e-12)
    assert mean_loc == pytest.approx(float(np.mean(loc)), abs=1e-12)


def test_cli_writes_series_and_summary(tmp_path):
    parser = argparse.ArgumentParser()
    phantom_cli.configure_parser(parser)
    args = parser.parse_args(
        ["--layout", "series", "--region", "chest", "--n", "5", "--size", "16", "--out", str(tmp_path)]
    )
    assert phantom_cli.run(args) == 0
    summary = json.loads((tmp_path / "ground_truth.json").read_text())
    assert summary["n_slices"] == 5 and len(list(tmp_path.glob("*.dcm"))) == 5
    args = parser.parse_args(
        ["--layout", "nifti", "--n", "1", "--slices", "4", "--size", "16", "--out", str(tmp_path / "n")]
    )
    assert phantom_cli.run(args) == 0 and len(list((tmp_path / "n").glob("*.nii.gz"))) == 1
