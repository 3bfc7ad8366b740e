"""The experiment runner: splits x hyper-parameter grid x methods on an embedding store, as the paper evaluates.

For each of three patient-level stratified splits (seeds 1001/2001/3001: test 1/6 of patients, validation 1/5 of the
rest) and each method, every grid point (lr x L1 alpha; NG at lambda = 1) is trained with
:func:`monai_ng.engines.train_mil`, keeping the epoch with the best validation scan AUROC among epochs whose train AUROC
exceeds the validation AUROC; the grid point with the best validation scan AUROC is evaluated on the test scans
(Harvey, Loevlie & Hughes, 2026). Only scan labels are used for training and selection; slice labels are used at test
time only, except by the instance ceiling, which is trained and selected on them by definition.

The defaults follow the paper (:class:`ExperimentConfig`, :func:`default_methods`); the settings this project used
before are kept, named: :meth:`ExperimentConfig.legacy` and :func:`legacy_methods`.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from monai_ng.data.bag_dataset import BagDataset, collate_packed_bags
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.splits import PAPER_SEEDS, patient_level_split
from monai_ng.engines.evaluation import evaluate_mil
from monai_ng.engines.training import TrainingConfig, train_mil
from monai_ng.losses.mil_objective import MILObjective
from monai_ng.networks.checkpoint import save_mil_checkpoint
from monai_ng.networks.instance_ceiling import CEILING_KERNELS
from monai_ng.networks.registry import build_mil_network

__all__ = [
    "DEFAULT_METHODS",
    "ExperimentConfig",
    "MethodSpec",
    "PAPER_L1_WEIGHTS",
    "PAPER_LRS",
    "check_store_for_experiment",
    "default_methods",
    "legacy_methods",
    "method_variants",
    "resolve_ng_weights",
    "run_experiment",
    "slice_scores_path",
    "split_indices",
    "summarise",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """One row of the results table.

    Attributes:
        name: display name.
        network: :func:`monai_ng.networks.build_mil_network` name.
        network_kwargs: extra constructor arguments.
        ng: whether Normal Guidance is used.
        ng_weight: lambda of this method; ``None`` takes it from :attr:`ExperimentConfig.ng_weights` (see
            :func:`resolve_ng_weights`).
        divergence: NG divergence.
        ng_heads: ``"each"`` (multi-head NG) or ``"mean"`` (one normal for the head-averaged attention).
        instance_weight: per-slice BCE weight (the instance-level ceiling, trained on slice labels).
        scan_weight: scan BCE weight (1 for every scan-label model; 0 for the paper's slice-BCE-only ceiling).
        selection_metric: validation metric that selects epochs and grid points. ``"scan_auroc"`` for every method
            trained on scan labels (the paper); the instance ceiling, trained on slice labels, is selected by
            ``"loc_auroc"``.
        guide: which bags NG guides and toward what (``"all"``, the paper; ``"positive"``,
            ``"positive_uniform_negative"``, ``"positive_centre_negative"``), see
            :class:`monai_ng.losses.NormalGuidanceLoss`.
        ng_reference: NG reference, ``"normal"`` (the paper) or ``"mixture"`` (a mixture of normals fitted by EM).
        ng_components: mixture components of ``ng_reference="mixture"``.
        ng_em_steps: EM steps of ``ng_reference="mixture"``.
        head_diversity_weight: weight of the mean pairwise cosine similarity of the attention heads (0 = off), see
            :class:`monai_ng.losses.MILObjective`.
    """

    name: str
    network: str
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    ng: bool = False
    divergence: str = "forward_kl"
    ng_heads: str = "each"
    instance_weight: float = 0.0
    selection_metric: str = "scan_auroc"
    scan_weight: float = 1.0
    ng_weight: float | None = None
    guide: str = "all"
    ng_reference: str = "normal"
    ng_components: int = 2
    ng_em_steps: int = 5
    head_diversity_weight: float = 0.0


def _transmil_kwargs(transmil_dim: int | None, transmil_heads: int) -> dict[str, Any]:
    if transmil_dim is None:  # the paper's: tokens are the embeddings, no input projection, no final LayerNorm
        return {"num_heads": transmil_heads}
    return {"hidden": transmil_dim, "num_heads": transmil_heads}  # Linear + ReLU projection, final LayerNorm


def _ceiling(name: str, kernel: int, scan_bce: bool) -> MethodSpec:
    return MethodSpec(
        name,
        "instance_ceiling",
        {"kernel_size": kernel},
        instance_weight=1.0,
        scan_weight=1.0 if scan_bce else 0.0,
        selection_metric="loc_auroc",
    )


def default_methods(
    transmil_dim: int | None = None,
    transmil_heads: int = 8,
    ceiling_kernel: int = CEILING_KERNELS["head"],
    ceiling_scan_bce: bool = False,
) -> list[MethodSpec]:
    """The paper's comparison: baselines, prior MIL, NG variants, and the instance-level ceiling.

    Args:
        transmil_dim: TransMIL token width; ``None`` (the paper's) uses the embeddings as tokens (768-d, no input
            projection, no final LayerNorm); an int adds a ``Linear + ReLU`` projection to that width and a final
            LayerNorm (this project's earlier 128-d TransMIL).
        transmil_heads: TransMIL attention heads (8).
        ceiling_kernel: the ceiling's depthwise kernel over slices (:data:`CEILING_KERNELS`: head 12, chest 35,
            abdomen 29).
        ceiling_scan_bce: train the ceiling on scan + slice BCE (this project's earlier ceiling) instead of the paper's
            slice BCE only.
    """
    return _method_list(
        _transmil_kwargs(transmil_dim, transmil_heads),
        centre_sigma_1=True,
        max_network="max_pool",
        ceiling=_ceiling("instance ceiling", ceiling_kernel, ceiling_scan_bce),
    )


def _method_list(tm: dict[str, Any], centre_sigma_1: bool, max_network: str, ceiling: MethodSpec) -> list[MethodSpec]:
    """The comparison's method list; :func:`default_methods` and :func:`legacy_methods` differ only in the arguments."""
    centre = [MethodSpec("centre baseline", "centre_gaussian")]
    if centre_sigma_1:
        centre.append(MethodSpec("centre baseline (sigma=1)", "centre_gaussian", {"sigma": 1.0}))
    return [
        *centre,
        MethodSpec("mean pool", "mean_pool"),
        MethodSpec("max pool", max_network),
        MethodSpec("ABMIL", "abmil"),
        MethodSpec("TransMIL", "transmil", tm),
        MethodSpec("SmAP", "smap"),
        MethodSpec("ABMIL+NG (forward KL)", "abmil", ng=True, divergence="forward_kl"),
        MethodSpec("ABMIL+NG (reverse KL)", "abmil", ng=True, divergence="reverse_kl"),
        MethodSpec("ABMIL+NG (squared error)", "abmil", ng=True, divergence="squared_error"),
        MethodSpec("TransMIL+NG (single normal)", "transmil", tm, ng=True, ng_heads="mean"),
        MethodSpec("TransMIL+NG (multi-head)", "transmil", tm, ng=True, ng_heads="each"),
        ceiling,
    ]


def method_variants(
    transmil_dim: int = 128, transmil_heads: int = 8, ceiling_kernel: int = CEILING_KERNELS["head"]
) -> list[MethodSpec]:
    """Named alternatives to the paper's methods, selectable by name (``monai-ng experiment --methods``), not run by
    default: the per-slice-score max pooling, the projected TransMIL (``transmil_dim``-d tokens, final LayerNorm),
    SmAP pooling the smoothed features (the public code's), the scan + slice BCE ceiling, and the steps past the paper
    (``docs/method.md``, "Beyond the paper"), each to be compared with plain NG on the same splits: NG on SmAP; ABMIL+NG
    guiding positive scans only, or negatives toward a uniform or centred reference; paper-width TransMIL with
    multi-head NG toward a 2-normal mixture reference, or with a head-diversity term (weight 1: the mean pairwise
    cosine similarity of the heads lies in [0, 1], the scale of the per-bag forward-KL NG penalty at lambda = 1; not
    tuned); and ``torchmil``'s ABMIL and SmABMIL with NG (needs the optional ``torchmil`` package)."""
    tm = _transmil_kwargs(transmil_dim, transmil_heads)
    paper_tm = _transmil_kwargs(None, transmil_heads)  # the past-the-paper TransMIL rows use the default TransMIL
    return [
        MethodSpec("max pool (slice scores)", "max_score_pool"),
        MethodSpec(f"TransMIL ({transmil_dim}-d projected)", "transmil", tm),
        MethodSpec(
            f"TransMIL+NG ({transmil_dim}-d projected, single normal)", "transmil", tm, ng=True, ng_heads="mean"
        ),
        MethodSpec(f"TransMIL+NG ({transmil_dim}-d projected, multi-head)", "transmil", tm, ng=True, ng_heads="each"),
        MethodSpec("SmAP (pooled smoothed)", "smap", {"pool_smoothed": True}),
        _ceiling("instance ceiling (scan+slice BCE)", ceiling_kernel, True),
        MethodSpec("SmAP+NG (forward KL)", "smap", ng=True, divergence="forward_kl"),
        MethodSpec("ABMIL+NG (positives only)", "abmil", ng=True, guide="positive"),
        MethodSpec("ABMIL+NG (uniform negatives)", "abmil", ng=True, guide="positive_uniform_negative"),
        MethodSpec("ABMIL+NG (centre negatives)", "abmil", ng=True, guide="positive_centre_negative"),
        MethodSpec(
            "TransMIL+NG (mixture, K=2)",
            "transmil",
            paper_tm,
            ng=True,
            ng_heads="each",
            ng_reference="mixture",
            ng_components=2,
            ng_em_steps=5,
        ),
        MethodSpec(
            "TransMIL+NG (multi-head, diversity)",
            "transmil",
            paper_tm,
            ng=True,
            ng_heads="each",
            head_diversity_weight=1.0,
        ),
        MethodSpec("torchmil ABMIL+NG", "torchmil", {"model": "ABMIL"}, ng=True),
        MethodSpec("torchmil SmABMIL+NG", "torchmil", {"model": "SmABMIL"}, ng=True),
    ]


def legacy_methods(transmil_dim: int = 128, transmil_heads: int = 8) -> list[MethodSpec]:
    """The method list this project ran before the paper-faithful defaults, same names and models.

    ``"max pool"`` is the per-slice-score max (now registered as ``"max_score_pool"``), TransMIL uses
    ``transmil_dim``-d projected tokens with a final LayerNorm, the centre baseline has only ``sigma = S / 4``, and the
    instance ceiling has kernel 5 and is trained on scan + slice BCE. With :meth:`ExperimentConfig.legacy` it gives
    the results of the earlier defaults (tested against values computed with the earlier code).
    """
    return _method_list(
        _transmil_kwargs(transmil_dim, transmil_heads),
        centre_sigma_1=False,
        max_network="max_score_pool",
        ceiling=_ceiling("instance ceiling", 5, True),
    )


DEFAULT_METHODS = default_methods()

#: the paper's learning-rate grid
PAPER_LRS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
#: the paper's L1 grid: alpha in {0, 1e-6, 1e-5, ..., 1}
PAPER_L1_WEIGHTS: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class ExperimentConfig:
    """Grid and training settings of an experiment; the only source of the defaults of ``monai-ng experiment``.

    Attributes:
        lrs: SGD learning rates (paper: 1e-1, 1e-2, 1e-3, 1e-4 = :data:`PAPER_LRS`, see :meth:`paper`).
        ng_weights: NG lambda (paper: 1). Several values are an ablation: each NG method is run once per lambda and
            reported as its own row (``"<method> lambda=<value>"``), unless ``tune_ng_weight``.
        tune_ng_weight: put lambda in the grid and select it on validation scan AUROC with lr and alpha (this
            project's earlier behaviour; the paper fixes lambda = 1).
        l1_weights: alpha grid of the (alpha/2) sum |theta| penalty (paper: 0 and 1e-6 ... 1 = :data:`PAPER_L1_WEIGHTS`).
        max_epochs: epochs per run (paper: up to 1000).
        batch_size: bags per batch (paper: 64).
        seeds: split seeds (paper: 1001, 2001, 3001).
        require_train_above_val: the paper's selection rule (on by default): the epoch with the best validation scan
            AUROC among epochs whose train AUROC exceeds the validation AUROC (the last epoch if none does).
        drop_last: drop the last incomplete batch of the shuffled train loader (the paper's loader), provided the
            train part holds at least one full batch.
        device: torch device.
        num_workers: DataLoader workers. On a CUDA ``device`` with workers, the loaders pin their batches in page-locked
            host memory and the trainer and evaluators copy them to the GPU without blocking.
    """

    lrs: Sequence[float] = (1e-2, 1e-1)
    ng_weights: Sequence[float] = (1.0,)
    l1_weights: Sequence[float] = (0.0, 1e-4)
    max_epochs: int = 60
    batch_size: int = 64
    seeds: Sequence[int] = PAPER_SEEDS
    require_train_above_val: bool = True
    device: str = "cpu"
    num_workers: int = 0
    tune_ng_weight: bool = False
    drop_last: bool = True

    @classmethod
    def demo(cls) -> ExperimentConfig:
        """The reduced grid of ``monai-ng demo``: one learning rate (0.1), lambda 1, no L1 penalty, 40 epochs."""
        return cls(lrs=(1e-1,), ng_weights=(1.0,), l1_weights=(0.0,), max_epochs=40)

    @classmethod
    def paper(cls, **overrides: Any) -> ExperimentConfig:
        """The paper's grid (``--grid paper``): lr in :data:`PAPER_LRS` x alpha in :data:`PAPER_L1_WEIGHTS`, lambda 1.

        The paper trained up to 1000 epochs; ``max_epochs`` keeps the default unless overridden.
        """
        return cls(**{"lrs": PAPER_LRS, "l1_weights": PAPER_L1_WEIGHTS, "ng_weights": (1.0,), **overrides})

    @classmethod
    def legacy(cls, **overrides: Any) -> ExperimentConfig:
        """This project's defaults before the paper-faithful ones: lambda tuned over (0.1, 1, 10) on validation, no
        train-above-validation rule, no ``drop_last`` (use with :func:`legacy_methods`)."""
        base = {
            "ng_weights": (0.1, 1.0, 10.0),
            "tune_ng_weight": True,
            "require_train_above_val": False,
            "drop_last": False,
        }
        return cls(**{**base, **overrides})


def resolve_ng_weights(methods: Sequence[MethodSpec], cfg: ExperimentConfig) -> list[MethodSpec]:
    """Give every NG method without its own lambda the configuration's.

    With one lambda (the paper's 1) or ``cfg.tune_ng_weight``, the methods are unchanged but for ``ng_weight`` (left
    ``None`` when tuned: the grid holds lambda). With several lambdas and no tuning (an ablation), each NG method
    becomes one method per lambda, named ``"<name> lambda=<value>"``.
    """
    out: list[MethodSpec] = []
    for m in methods:
        if not m.ng or m.ng_weight is not None or cfg.tune_ng_weight:
            out.append(m)
        elif len(cfg.ng_weights) == 1:
            out.append(replace(m, ng_weight=float(cfg.ng_weights[0])))
        else:
            out.extend(replace(m, name=f"{m.name} lambda={w:g}", ng_weight=float(w)) for w in cfg.ng_weights)
    return out


def split_indices(store: EmbeddingStore, seed: int) -> dict[str, np.ndarray]:
    """Manifest rows of the train / val / test parts of a patient-level stratified split."""
    assignment = patient_level_split(store.patient_ids, store.labels.tolist(), seed)
    parts = np.array([assignment[p] for p in store.patient_ids])
    return {k: np.flatnonzero(parts == k) for k in ("train", "val", "test")}


def check_store_for_experiment(store: EmbeddingStore, seeds: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """The train / val / test parts of every seed, after checking the store can be split and scored.

    Raises:
        ValueError: naming the store: fewer than 3 patients (no patient-level train / val / test split exists), an
            empty patient id, or scans of one class only (AUROC / AUPRC are undefined); or a split that fails, or
            whose validation or test part holds scans of one class only (the epoch selection or the reported scan
            AUROC would be undefined).
    """
    patients = store.patient_ids
    if any(not str(p).strip() for p in patients):
        raise ValueError(f"{store.path}: a scan has an empty patient_id; patient-level splits need one per scan")
    n_patients = len(set(patients))
    if n_patients < 3:
        raise ValueError(
            f"{store.path}: {n_patients} patient(s); a patient-level train / val / test split needs at least 3"
        )
    classes = sorted({int(v) for v in store.labels.tolist()})
    if classes != [0, 1]:
        raise ValueError(
            f"{store.path}: every scan has label {classes}; the experiment needs positive and negative scans "
            "(scan AUROC / AUPRC are undefined with one class)"
        )
    parts = {}
    for seed in seeds:
        try:
            parts[int(seed)] = split_indices(store, int(seed))
        except ValueError as exc:
            raise ValueError(f"{store.path}: cannot split the patients with seed {seed}: {exc}") from exc
        for part in ("val", "test"):
            labels = sorted({int(v) for v in store.labels[parts[int(seed)][part]].tolist()})
            if labels != [0, 1]:
                n = len(parts[int(seed)][part])
                raise ValueError(
                    f"{store.path}: the split with seed {seed} has {n} {part} scan(s), all with label {labels}; "
                    "scan AUROC is undefined on one class: the store needs more patients of both labels"
                )
    return parts


def _loader(store: EmbeddingStore, idx: np.ndarray, cfg: ExperimentConfig, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        BagDataset(store, idx),
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        collate_fn=collate_packed_bags,  # embeddings [T, D]: no padding written, every network takes it as is
        num_workers=cfg.num_workers,
        # page-locked batches that the trainer copies without blocking, on a GPU with loader workers (pinned by the
        # loader's own thread, beside the training loop): the configuration of the GPU epoch in docs/performance.md
        pin_memory=cfg.num_workers > 0 and torch.device(cfg.device).type == "cuda",
        generator=g if shuffle else None,
        # the shuffled train loader drops its last incomplete batch, unless that would leave no batch at all
        drop_last=shuffle and cfg.drop_last and len(idx) >= cfg.batch_size,
    )


def _grid(method: MethodSpec, cfg: ExperimentConfig) -> list[tuple[float, float, float]]:
    if not method.ng:
        ng: Sequence[float] = (0.0,)
    elif method.ng_weight is not None:
        ng = (method.ng_weight,)
    elif cfg.tune_ng_weight:
        ng = cfg.ng_weights
    else:  # not resolved by resolve_ng_weights: the configuration's first lambda
        ng = (cfg.ng_weights[0],)
    return list(itertools.product(cfg.lrs, ng, cfg.l1_weights))


def run_experiment(
    store_path: str | Path,
    out_dir: str | Path,
    methods: Sequence[MethodSpec] | None = None,
    config: ExperimentConfig | None = None,
) -> pd.DataFrame:
    """Run every method on every split with grid search; write results and return the per-split test results.

    Writes to ``out_dir``: ``grid.csv`` (every run's validation metrics), ``results.csv`` (one row per method and
    split: ``method, split, seed, lr, ng_weight, l1_weight, best_epoch, val_scan_auroc, scan_auroc, scan_auprc,
    loc_auroc, loc_auprc, pooled_loc_auroc, positive_attention_mass, loc_skipped``), ``results.md`` (mean +- std
    table), ``slice_scores/<method>_split<k>.csv`` (per-slice test attention of the selected run),
    ``checkpoints/<method>_split<k>.safetensors`` (its weights and build arguments, see
    :func:`monai_ng.networks.checkpoint.load_mil_checkpoint`) and ``config.json``.
    """
    cfg = config or ExperimentConfig()
    methods = list(DEFAULT_METHODS if methods is None else methods)
    if not methods:
        raise ValueError("no methods to run")
    if not cfg.ng_weights and any(m.ng and m.ng_weight is None for m in methods):
        raise ValueError("ng_weights is empty but NG methods need a lambda")
    methods = resolve_ng_weights(methods, cfg)
    store = EmbeddingStore(store_path, check_finite=True)
    split_parts = check_store_for_experiment(store, cfg.seeds)  # refuse before anything is written
    out = Path(out_dir)
    (out / "slice_scores").mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps(
            {"store": str(store_path), "config": asdict(cfg), "methods": [asdict(m) for m in methods]},
            indent=2,
            default=list,
        )
    )
    grid_rows: list[dict[str, Any]] = []
    result_rows: list[dict[str, Any]] = []
    for split, seed in enumerate(cfg.seeds):
        parts = split_parts[int(seed)]
        loaders = {
            "train_eval": _loader(store, parts["train"], cfg, False, seed),
            "val": _loader(store, parts["val"], cfg, False, seed),
            "test": _loader(store, parts["test"], cfg, False, seed),
        }
        logger.info("split %d (seed %d): %s", split, seed, {k: len(v) for k, v in parts.items()})
        for method in methods:
            best: tuple[float, dict[str, Any], dict[str, torch.Tensor]] | None = None
            for lr, ng_weight, l1_weight in _grid(method, cfg):
                torch.manual_seed(seed)
                network = build_mil_network(method.network, store.dim, **method.network_kwargs)
                objective = MILObjective(
                    ng_weight=ng_weight,
                    divergence=method.divergence,
                    ng_heads=method.ng_heads,
                    l1_weight=l1_weight,
                    network=network if l1_weight > 0 else None,
                    instance_weight=method.instance_weight,
                    scan_weight=method.scan_weight,
                    guide=method.guide,
                    reference=method.ng_reference,
                    components=method.ng_components,
                    em_steps=method.ng_em_steps,
                    head_diversity_weight=method.head_diversity_weight,
                )
                t0 = time.perf_counter()
                result = train_mil(
                    network,
                    objective,
                    # a fresh shuffle generator per run: a run's batches must not depend on the runs before it
                    _loader(store, parts["train"], cfg, True, seed),
                    loaders["val"],
                    TrainingConfig(
                        lr=lr,
                        max_epochs=cfg.max_epochs,
                        require_train_above_val=cfg.require_train_above_val,
                        seed=seed,
                        selection_metric=method.selection_metric,
                    ),
                    device=cfg.device,
                    train_eval_loader=loaders["train_eval"],
                )
                row = {
                    "method": method.name,
                    "split": split,
                    "seed": seed,
                    "lr": lr,
                    "ng_weight": ng_weight,
                    "l1_weight": l1_weight,
                    "best_epoch": result.best_epoch,
                    "val_scan_auroc": result.best_metrics.get("scan_auroc", float("nan")),
                    "val_loc_auroc": result.best_metrics.get("loc_auroc", float("nan")),
                    "selected_by": method.selection_metric,
                    "seconds": time.perf_counter() - t0,
                }
                grid_rows.append(row)
                val_score = result.best_metrics.get(method.selection_metric, float("nan"))
                score = val_score if np.isfinite(val_score) else -np.inf
                if best is None or score > best[0]:
                    best = (score, row, {k: v.clone() for k, v in network.state_dict().items()})
            assert best is not None
            _, row, state = best
            network = build_mil_network(method.network, store.dim, **method.network_kwargs)
            network.load_state_dict(state)
            save_mil_checkpoint(
                network,
                out / "checkpoints" / f"{_slug(method.name)}_split{split}.safetensors",
                metadata={"method": method.name},
            )
            metrics, _, slices = evaluate_mil(network, loaders["test"], cfg.device)
            slices.to_csv(slice_scores_path(out, method.name, split), index=False)
            result_rows.append(
                {
                    **{
                        k: row[k]
                        for k in (
                            "method",
                            "split",
                            "seed",
                            "lr",
                            "ng_weight",
                            "l1_weight",
                            "best_epoch",
                            "selected_by",
                        )
                    },
                    "val_scan_auroc": row["val_scan_auroc"],
                    "scan_auroc": metrics.get("scan_auroc"),
                    "scan_auprc": metrics.get("scan_auprc"),
                    "loc_auroc": metrics.get("loc_auroc"),
                    "loc_auprc": metrics.get("loc_auprc"),
                    "pooled_loc_auroc": metrics.get("pooled_loc_auroc"),
                    "positive_attention_mass": metrics.get("positive_attention_mass"),
                    "loc_skipped": metrics.get("loc_auroc_skipped"),
                }
            )
            logger.info(
                "split %d %-28s scan AUROC %.3f loc AUROC %.3f",
                split,
                method.name,
                result_rows[-1]["scan_auroc"],
                result_rows[-1]["loc_auroc"],
            )
            pd.DataFrame(grid_rows).to_csv(out / "grid.csv", index=False)
            pd.DataFrame(result_rows).to_csv(out / "results.csv", index=False)
    results = pd.DataFrame(result_rows)
    (out / "results.md").write_text(summarise(results, [m.name for m in methods]))
    return results


def _slug(name: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name).strip("_").lower()


def slice_scores_path(out_dir: str | Path, method: str, split: int) -> Path:
    """Where :func:`run_experiment` writes the per-slice test attention of ``method``'s selected run on ``split``.

    The CSV has one row per test slice: ``scan_id, slice, attention, slice_label`` (slices inferior -> superior).
    """
    return Path(out_dir) / "slice_scores" / f"{_slug(method)}_split{int(split)}.csv"


def summarise(results: pd.DataFrame, order: Sequence[str] | None = None) -> str:
    """A markdown table of mean +- std over splits of scan AUROC and localization AUROC/AUPRC per method."""
    cols = [("scan_auroc", "scan AUROC"), ("loc_auroc", "loc. AUROC"), ("loc_auprc", "loc. AUPRC")]
    lines = [
        "| method | " + " | ".join(label for _, label in cols) + " | splits |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    names = list(order) if order is not None else list(dict.fromkeys(results["method"]))
    for name in names:
        part = results[results["method"] == name]
        if part.empty:
            continue
        cells = []
        for col, _ in cols:
            values = part[col].astype(float)
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.3f} ± {sd:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(part)} |")
    return "\n".join(lines) + "\n"
