"""The ``monai-ng`` command registry, the experiment/demo defaults and the dataset-adapter discovery of ``ingest``."""

from __future__ import annotations

import argparse
import importlib
from importlib.metadata import EntryPoint

import pytest

from monai_ng.cli import COMMANDS, main
from monai_ng.cli import experiment as experiment_command
from monai_ng.cli import ingest as ingest_command
from monai_ng.cli.demo import configure_parser as configure_demo
from monai_ng.cli.experiment import config_from_args
from monai_ng.data.dataset_adapter import ADAPTER_ENTRY_POINT_GROUP, DatasetAdapter
from monai_ng.experiment import ExperimentConfig, default_methods


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_follows_one_convention(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    assert module.__name__.startswith("monai_ng.cli.")
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    assert callable(module.run)


def test_experiment_list_needs_no_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "--list"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [m.name for m in default_methods()]


def test_experiment_without_data_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "--out", "x"]) == 2
    assert "--data" in capsys.readouterr().err


def test_defaults_come_from_the_config_dataclass() -> None:
    parser = argparse.ArgumentParser()
    experiment_command.configure_parser(parser)
    assert config_from_args(parser.parse_args([]), ExperimentConfig()) == ExperimentConfig()
    given = config_from_args(parser.parse_args(["--lrs", "0.5", "--epochs", "3", "--seeds", "7"]), ExperimentConfig())
    assert (list(given.lrs), given.max_epochs, list(given.seeds)) == ([0.5], 3, [7])
    assert given.ng_weights == ExperimentConfig().ng_weights
    demo = argparse.ArgumentParser()
    configure_demo(demo)
    assert config_from_args(demo.parse_args([]), ExperimentConfig.demo()) == ExperimentConfig.demo()
    assert ExperimentConfig.demo().max_epochs == 40 and list(ExperimentConfig.demo().lrs) == [0.1]


def test_dataset_choices_are_the_registered_adapters() -> None:
    assert {"ich", "pe", "abdominal"} <= set(ingest_command.adapter_entry_points())
    parser = argparse.ArgumentParser()
    ingest_command.configure_parser(parser)
    args = parser.parse_args(["--dataset", "abdominal", "--root", "r", "--out", "m.csv", "--target", "bowel"])
    adapter = ingest_command.load_dataset_adapter("abdominal")
    assert isinstance(adapter, DatasetAdapter) and adapter.options(args) == {"target": "bowel"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "nope", "--root", "r", "--out", "m.csv"])


def _register(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = {n: EntryPoint(name=n, value=v, group=ADAPTER_ENTRY_POINT_GROUP) for n, v in values.items()}
    monkeypatch.setattr(ingest_command, "adapter_entry_points", lambda: eps)


def test_missing_and_broken_adapters_give_clear_errors(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    _register(monkeypatch, broken="no_such_module_xyz:ADAPTER", wrong="argparse:ArgumentParser")
    with pytest.raises(ValueError, match="no dataset adapter 'ich'.*registered: broken, wrong"):
        ingest_command.load_dataset_adapter("ich")
    with pytest.raises(ValueError, match=r"'broken' \(no_such_module_xyz:ADAPTER\) cannot be loaded: ModuleNotFound"):
        ingest_command.load_dataset_adapter("broken")
    with pytest.raises(ValueError, match="is a ArgumentParser, not a monai_ng.data.dataset_adapter.DatasetAdapter"):
        ingest_command.load_dataset_adapter("wrong")
    rc = main(["ingest", "--dataset", "broken", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert rc == 2 and "cannot be loaded" in capsys.readouterr().err


def test_a_site_adapter_is_used_through_its_entry_point(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _register(monkeypatch, toy=f"{__name__}:TOY_ADAPTER")
    out, _, n_scans, n_failures = ingest_command.ingest("toy", tmp_path, tmp_path / "m.csv", seeds=(), progress=False)
    assert (n_scans, n_failures) == (1, 1) and out.is_file()


class _ToyAdapter(DatasetAdapter):
    name = "toy"

    def build_manifest(self, root, workers=1, progress=True):
        import pandas as pd

        row = {
            "scan_id": "s0",
            "patient_id": "p0",
            "label": 1,
            "series_uid": "1.2",
            "n_slices": 2,
            "slice_files": ["a.dcm", "b.dcm"],
            "slice_labels": [0, 1],
            "slice_sop_uids": ["1.2.1", "1.2.2"],
            "geometry_issues": [],
            "dataset": self.name,
        }
        return pd.DataFrame([row]), [("c.dcm", "unreadable")]


TOY_ADAPTER = _ToyAdapter()


@pytest.mark.parametrize(("flag", "available"), [(False, True), (True, True), (True, False)])
def test_experiment_retain_freed_memory_flag(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flag: bool, available: bool
) -> None:
    """``--retain-freed-memory`` calls the allocator setting (spied: the test process's allocator is left alone) and
    says so when the platform has no glibc ``mallopt``; without the flag nothing is called."""
    calls: list[bool] = []

    def spy() -> bool:
        calls.append(True)
        return available

    monkeypatch.setattr(experiment_command, "retain_freed_host_memory", spy)
    args = ["experiment", "--list"] + (["--retain-freed-memory"] if flag else [])
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert calls == ([True] if flag else [])
    assert ("no glibc mallopt" in caplog.text) == (flag and not available)
