"""The experiment runner (splits x grid x methods) and its command line, end to end on a small store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_easy_store

from monai_ng.cli import main
from monai_ng.data import BagDataset
from monai_ng.experiment import (
    PAPER_L1_WEIGHTS,
    PAPER_LRS,
    ExperimentConfig,
    MethodSpec,
    default_methods,
    legacy_methods,
    method_variants,
    resolve_ng_weights,
    run_experiment,
    split_indices,
)
from monai_ng.networks.checkpoint import load_mil_checkpoint


def test_splits_are_patient_disjoint(easy_store):
    from monai_ng.data import EmbeddingStore

    store = EmbeddingStore(easy_store)
    parts = split_indices(store, 1001)
    assert sum(len(v) for v in parts.values()) == len(store)
    patients = {k: {store.patient_ids[i] for i in v} for k, v in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert split_indices(store, 1001)["test"].tolist() == parts["test"].tolist()


def test_experiment_runner_and_cli(easy_store, tmp_path):
    methods = [
        MethodSpec("centre baseline", "centre_gaussian"),
        MethodSpec("ABMIL+NG", "abmil", ng=True),
        MethodSpec(
            "ceiling", "instance_ceiling", {"kernel_size": 3}, instance_weight=1.0, selection_metric="loc_auroc"
        ),
    ]
    cfg = ExperimentConfig(
        lrs=(0.1,),
        ng_weights=(0.1, 1.0),
        tune_ng_weight=True,  # lambda in the grid, selected on validation (the earlier behaviour)
        l1_weights=(0.0,),
        max_epochs=2,
        batch_size=32,
        seeds=(1001, 2001),
    )
    results = run_experiment(easy_store, tmp_path / "exp", methods, cfg)
    assert len(results) == 6
    assert results.loc[results["method"] == "ceiling", "selected_by"].tolist() == ["loc_auroc"] * 2
    csv = pd.read_csv(tmp_path / "exp" / "results.csv")
    assert {"method", "split", "scan_auroc", "loc_auroc"} <= set(csv.columns)
    grid = pd.read_csv(tmp_path / "exp" / "grid.csv")
    assert len(grid) == 2 * (1 + 2 + 1)  # centre: 1 grid point, ABMIL+NG: 2 lambdas, ceiling: 1; two splits
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| centre baseline |" in table and "| ABMIL+NG |" in table
    assert (tmp_path / "exp" / "slice_scores" / "abmil_ng_split1.csv").is_file()
    # the selected model's checkpoint rebuilds the network and scores a store from the command line
    ckpt = tmp_path / "exp" / "checkpoints" / "abmil_ng_split1.safetensors"
    net, meta = load_mil_checkpoint(ckpt)
    assert meta["network"] == "abmil" and meta["method"] == "ABMIL+NG"
    assert main(["predict", "--data", str(easy_store), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred")]) == 0
    slices = pd.read_csv(tmp_path / "pred" / "slice_scores.csv")
    assert len(slices) == int(BagDataset(easy_store).n_slices.sum())
    assert main(["predict", "--data", str(easy_store), "--checkpoint", str(tmp_path / "no.safetensors"),
                 "--out", str(tmp_path / "p2")]) == 1  # fmt: skip
    # a run does not depend on the methods run before it in the same process
    alone = run_experiment(easy_store, tmp_path / "alone", methods[1:2], cfg)
    both = results[results["method"] == "ABMIL+NG"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone[both.columns], both, check_exact=False, rtol=1e-12)
    # the same through the command line
    rc = main(
        ["experiment", "--data", str(easy_store), "--out", str(tmp_path / "cli"), "--methods", "mean pool",
         "--epochs", "1", "--seeds", "1001", "--lrs", "0.1", "--l1-weights", "0,0.001"]
    )  # fmt: skip
    assert rc == 0 and len(pd.read_csv(tmp_path / "cli" / "grid.csv")) == 2
    assert main(["experiment", "--data", str(easy_store), "--out", str(tmp_path / "x"), "--methods", "nope"]) == 2


def test_paper_defaults_and_named_earlier_settings():
    cfg = ExperimentConfig()
    assert tuple(cfg.ng_weights) == (1.0,) and not cfg.tune_ng_weight
    assert cfg.require_train_above_val and cfg.drop_last
    paper = ExperimentConfig.paper()
    assert tuple(paper.lrs) == PAPER_LRS == (1e-1, 1e-2, 1e-3, 1e-4)
    assert tuple(paper.l1_weights) == PAPER_L1_WEIGHTS == (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert tuple(paper.ng_weights) == (1.0,) and paper.require_train_above_val
    legacy = ExperimentConfig.legacy(max_epochs=3)
    assert tuple(legacy.ng_weights) == (0.1, 1.0, 10.0) and legacy.tune_ng_weight and legacy.max_epochs == 3
    assert not legacy.require_train_above_val and not legacy.drop_last
    methods = {m.name: m for m in default_methods()}
    assert methods["TransMIL"].network_kwargs == {"num_heads": 8}  # embedding-width tokens, no projection
    assert methods["max pool"].network == "max_pool"
    assert methods["centre baseline"].network_kwargs == {}
    assert methods["centre baseline (sigma=1)"].network_kwargs == {"sigma": 1.0}
    ceiling = methods["instance ceiling"]
    assert ceiling.network_kwargs == {"kernel_size": 12} and ceiling.scan_weight == 0.0 and ceiling.instance_weight == 1
    chest = {m.name: m for m in default_methods(ceiling_kernel=35, ceiling_scan_bce=True, transmil_dim=128)}
    assert (
        chest["instance ceiling"].network_kwargs == {"kernel_size": 35} and chest["instance ceiling"].scan_weight == 1
    )
    assert chest["TransMIL"].network_kwargs == {"hidden": 128, "num_heads": 8}
    old = {m.name: m for m in legacy_methods()}
    assert old["max pool"].network == "max_score_pool" and old["TransMIL"].network_kwargs["hidden"] == 128
    assert old["instance ceiling"].network_kwargs == {"kernel_size": 5} and old["instance ceiling"].scan_weight == 1
    assert "centre baseline (sigma=1)" not in old
    variants = {m.name: m for m in method_variants()}
    assert variants["max pool (slice scores)"].network == "max_score_pool"
    assert variants["SmAP (pooled smoothed)"].network_kwargs == {"pool_smoothed": True}
    assert not set(variants) & set(methods)


def test_lambda_sweep_is_an_ablation_unless_tuned():
    ng = MethodSpec("NG", "abmil", ng=True)
    fixed = MethodSpec("NG fixed", "abmil", ng=True, ng_weight=3.0)
    plain = MethodSpec("plain", "abmil")
    one = resolve_ng_weights([ng, plain], ExperimentConfig())
    assert [(m.name, m.ng_weight) for m in one] == [("NG", 1.0), ("plain", None)]
    sweep = resolve_ng_weights([ng, fixed, plain], ExperimentConfig(ng_weights=(0.1, 1.0, 10.0)))
    assert [(m.name, m.ng_weight) for m in sweep] == [
        ("NG lambda=0.1", 0.1),
        ("NG lambda=1", 1.0),
        ("NG lambda=10", 10.0),
        ("NG fixed", 3.0),
        ("plain", None),
    ]
    tuned = resolve_ng_weights([ng], ExperimentConfig(ng_weights=(0.1, 1.0), tune_ng_weight=True))
    assert [(m.name, m.ng_weight) for m in tuned] == [("NG", None)]


def test_drop_last_on_the_shuffled_train_loader_only(easy_store):
    from monai_ng.data import EmbeddingStore
    from monai_ng.experiment import _loader

    store = EmbeddingStore(easy_store)
    idx = np.arange(50)
    cfg = ExperimentConfig(batch_size=16)
    assert _loader(store, idx, cfg, True, 1).drop_last and len(_loader(store, idx, cfg, True, 1)) == 3
    assert not _loader(store, idx, cfg, False, 1).drop_last  # evaluation sees every scan
    assert not _loader(store, idx[:10], cfg, True, 1).drop_last  # fewer scans than a batch: keep them
    assert not _loader(store, idx, ExperimentConfig(batch_size=16, drop_last=False), True, 1).drop_last


def test_legacy_configuration_reproduces_the_earlier_results(tmp_path):
    """ExperimentConfig.legacy with the earlier methods, named, gives the values the committed code computed before
    the paper-faithful defaults (same store, splits, seeds; recorded when the defaults changed)."""
    store = write_easy_store(tmp_path / "store")
    methods = [
        MethodSpec("TransMIL", "transmil", {"hidden": 8, "num_heads": 2}),
        MethodSpec("max pool", "max_score_pool"),
        MethodSpec("ABMIL+NG", "abmil", ng=True),
        MethodSpec(
            "ceiling", "instance_ceiling", {"kernel_size": 3}, instance_weight=1.0, scan_weight=1.0,
            selection_metric="loc_auroc",
        ),
    ]  # fmt: skip
    cfg = ExperimentConfig.legacy(
        lrs=(0.1,), ng_weights=(0.1, 1.0), l1_weights=(0.0,), max_epochs=3, batch_size=24, seeds=(1001,)
    )
    results = run_experiment(store, tmp_path / "old", methods, cfg)
    expected = pd.DataFrame(
        {
            "method": ["TransMIL", "max pool", "ABMIL+NG", "ceiling"],
            "ng_weight": [0.0, 0.0, 0.1, 0.0],
            "best_epoch": [3, 3, 3, 3],
            "val_scan_auroc": [0.6875, 0.859375, 0.921875, 1.0],
            "scan_auroc": [0.828125, 0.984375, 1.0, 1.0],
            "loc_auroc": [0.41885212418300655, 0.9819240196078431, 0.9594818376068377, 0.9722222222222223],
        }
    )
    pd.testing.assert_frame_equal(results[list(expected.columns)], expected, check_exact=False, atol=1e-9, rtol=0)


def test_paper_defaults_run_end_to_end_with_lambda_ablation_rows(easy_store, tmp_path):
    methods = [MethodSpec("ABMIL+NG", "abmil", ng=True), *[m for m in default_methods() if m.network == "max_pool"]]
    cfg = ExperimentConfig(lrs=(0.1,), ng_weights=(0.1, 1.0), l1_weights=(0.0,), max_epochs=2, seeds=(1001,))
    results = run_experiment(easy_store, tmp_path / "exp", methods, cfg)
    assert results["method"].tolist() == ["ABMIL+NG lambda=0.1", "ABMIL+NG lambda=1", "max pool"]
    assert results["ng_weight"].tolist() == [0.1, 1.0, 0.0]
    assert (tmp_path / "exp" / "slice_scores" / "abmil_ng_lambda_0_1_split0.csv").is_file()


def test_cli_paper_grid_legacy_and_switches(easy_store, tmp_path, capsys):
    import argparse

    from monai_ng.cli.experiment import config_from_args, configure_parser, select_methods

    parser = argparse.ArgumentParser()
    configure_parser(parser)

    def parse(*argv):
        args = parser.parse_args(list(argv))
        return args, config_from_args(args, ExperimentConfig())

    args, cfg = parse()
    assert cfg == ExperimentConfig()
    assert [m.name for m in select_methods(args)] == [m.name for m in default_methods()]
    _, cfg = parse("--grid", "paper")
    assert tuple(cfg.lrs) == PAPER_LRS and tuple(cfg.l1_weights) == PAPER_L1_WEIGHTS
    _, cfg = parse("--grid", "paper", "--lrs", "0.5")
    assert list(cfg.lrs) == [0.5] and tuple(cfg.l1_weights) == PAPER_L1_WEIGHTS
    _, cfg = parse("--no-train-above-val", "--no-drop-last", "--tune-ng-weight")
    assert not cfg.require_train_above_val and not cfg.drop_last and cfg.tune_ng_weight
    args, cfg = parse("--legacy")
    assert cfg == ExperimentConfig.legacy()
    assert [m.name for m in select_methods(args)] == [m.name for m in legacy_methods()]
    args, _ = parse(
        "--ceiling-kernel", "chest", "--ceiling-scan-bce", "--methods", "instance ceiling,max pool (slice scores)"
    )
    ceiling, max_scores = select_methods(args)
    assert ceiling.network_kwargs == {"kernel_size": 35} and ceiling.scan_weight == 1.0
    assert max_scores.network == "max_score_pool"
    assert parse("--ceiling-kernel", "29")[0].ceiling_kernel == 29
    with pytest.raises(SystemExit):
        parse("--ceiling-kernel", "pelvis")
    assert "abdomen (29)" in capsys.readouterr().err


@pytest.mark.parametrize(("device", "workers", "pinned"), [("cuda", 2, True), ("cuda", 0, False), ("cpu", 2, False)])
def test_loaders_pin_batches_on_a_gpu_with_workers(easy_store, device, workers, pinned):
    from monai_ng.data import EmbeddingStore
    from monai_ng.experiment import _loader

    cfg = ExperimentConfig(batch_size=16, device=device, num_workers=workers)
    for shuffle in (True, False):  # built only: nothing is iterated, so no GPU is needed
        assert _loader(EmbeddingStore(easy_store), np.arange(50), cfg, shuffle, 1).pin_memory is pinned
