"""Regenerate every table and figure of ``docs/results.md``: all default methods x 3 splits on every benchmark data set.

Data sets (issue 10 §2), each built, run and kept in ``OUT/<name>/``:

* ``ct_regime_head``, ``ct_regime_chest``, ``ct_regime_abdomen``: the ``ct_regime`` generator at its region presets
  (AR(rho) nuisance along slices, anatomical distractors, region scan lengths; ``docs/synthetic.md`` (d)).
* ``ct_regime_head_multi``: the head preset with 2-3 disjoint lesions per positive scan (the ``multi_lesion`` kind's
  block settings: extent 2-6 slices, centre sd 0.25 S).
* ``phantom_head``, ``phantom_head_multi``: phantom head CT with one / 2-3 lesions of varied size, contrast and
  position (:func:`monai_ng.data.phantom.write_lesion_benchmark`) written as DICOM, then ``monai-ng ingest --dataset
  folder`` -> ``monai-ng embed`` with a random-init ``vit_tiny_patch16_224`` (no weights are available offline) ->
  embedding store. The DICOM files are deleted once the store is written.

Every data set runs :func:`monai_ng.experiment.run_experiment` with :func:`~monai_ng.experiment.default_methods` (the
instance ceiling's kernel set per region: head 12, chest 35, abdomen 29) on the splits with seeds 1001/2001/3001.
``OUT/<name>/settings.json`` records the data parameters, sizes, grid, epochs, threads, the command, the date, the
machine and the timings. A data set whose ``settings.json`` says it finished is skipped on a rerun (``--rerun``
repeats it), so a long run can be done in chunks (``--datasets a,b``). The report (``OUT/results.md``, with figures in
``OUT/figures/``) is rebuilt from whatever finished data sets ``OUT`` holds; ``--write-docs`` also writes it to
``docs/results.md`` and ``docs/figures/``.

Usage::

    python benchmarks/results.py --out runs/results --profile quick             # smoke test, < 2 min on 2 cores
    python benchmarks/results.py --out runs/results --profile full --write-docs  # ~2 h of process time on 2 cores
    python benchmarks/results.py --out runs/results --profile full --datasets phantom_head --write-docs
    python benchmarks/results.py --out runs/results --report-only --write-docs   # docs from OUT, no training
    python benchmarks/results.py --out runs/results --profile full --beyond --write-docs  # + the variants (§3)

``--beyond`` also runs the steps past the paper (:data:`BEYOND`: NG on SmAP, negative-scan guidance, the mixture
reference, the head-diversity term, torchmil models with NG) on the head-length data sets, after their main run, and
reports each against the methods it refines, paired split by split.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from machine_info import cpu_model  # noqa: E402

#: split seeds (the paper's)
SEEDS: tuple[int, ...] = (1001, 2001, 3001)
#: the data seed of every data set (the synthetic stores' ``seed``, the phantom writer's and the encoder's)
DATA_SEED = 7
REGION_KERNELS = {"head": 12, "chest": 35, "abdomen": 29}  # = monai_ng.networks.instance_ceiling.CEILING_KERNELS
BASELINE = "centre baseline"
#: below this best scan AUROC the summary says the scan label was barely learned (a stated, fixed threshold)
WEAK_SCAN_AUROC = 0.6
CEILING = "instance ceiling"
#: the steps past the paper (issue 10 §3, :func:`monai_ng.experiment.method_variants`) run with ``--beyond`` on the
#: head-length data sets (chest/abdomen TransMIL epochs cost 10-40x more), each compared with the methods of the main
#: run it refines, on the same splits (same store, seeds and training settings)
BEYOND_DATASETS: tuple[str, ...] = ("ct_regime_head", "ct_regime_head_multi", "phantom_head", "phantom_head_multi")
BEYOND: dict[str, tuple[str, ...]] = {
    "SmAP+NG (forward KL)": ("SmAP", "ABMIL+NG (forward KL)"),
    "ABMIL+NG (positives only)": ("ABMIL+NG (forward KL)", "ABMIL"),
    "ABMIL+NG (uniform negatives)": ("ABMIL+NG (forward KL)", "ABMIL"),
    "ABMIL+NG (centre negatives)": ("ABMIL+NG (forward KL)", "ABMIL"),
    "TransMIL+NG (mixture, K=2)": ("TransMIL+NG (multi-head)", "TransMIL+NG (single normal)", "TransMIL"),
    "TransMIL+NG (multi-head, diversity)": ("TransMIL+NG (multi-head)", "TransMIL+NG (single normal)", "TransMIL"),
    "torchmil ABMIL+NG": ("ABMIL+NG (forward KL)",),
    "torchmil SmABMIL+NG": ("SmAP", "ABMIL+NG (forward KL)"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark data set.

    Attributes:
        name: folder name under ``OUT`` and ``--datasets`` key.
        title: section heading.
        source: ``"ct_regime"`` (synthetic store) or ``"phantom"`` (phantom DICOM -> encoder -> store).
        region: body region (ceiling kernel, scan lengths).
        params: generator overrides (``ct_regime``) or ``"multi"`` for the phantom's lesion ranges.
        about: one sentence on what the data are.
    """

    name: str
    title: str
    source: str
    region: str
    params: dict[str, Any] = field(default_factory=dict)
    about: str = ""


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec(
            "ct_regime_head",
            "CT regime, head",
            "ct_regime",
            "head",
            {"region": "head"},
            "synthetic embeddings, `ct_regime` head preset: 24-45 slices, AR(0.8) nuisance, 3 distractor sites, "
            "one lesion of 3-14 slices near the middle.",
        ),
        DatasetSpec(
            "ct_regime_chest",
            "CT regime, chest",
            "ct_regime",
            "chest",
            {"region": "chest"},
            "synthetic embeddings, `ct_regime` chest preset: 150-342 slices, AR(0.95) nuisance, 3 distractor sites, "
            "one lesion of 10-60 slices near the middle.",
        ),
        DatasetSpec(
            "ct_regime_abdomen",
            "CT regime, abdomen",
            "ct_regime",
            "abdomen",
            {"region": "abdomen"},
            "synthetic embeddings, `ct_regime` abdomen preset: 200-437 slices, AR(0.95) nuisance, 3 distractor "
            "sites, one lesion of 8-50 slices.",
        ),
        DatasetSpec(
            "ct_regime_head_multi",
            "CT regime, head, 2-3 lesions",
            "ct_regime",
            "head",
            {"region": "head", "lesions": [2, 3], "r": [2, 6], "centre_sd_frac": 0.25},
            "synthetic embeddings, `ct_regime` head preset with 2-3 disjoint lesions of 2-6 slices per positive scan "
            "(the `multi_lesion` kind's block settings).",
        ),
        DatasetSpec(
            "phantom_head",
            "Phantom head CT, one lesion",
            "phantom",
            "head",
            {"lesions": "single"},
            "phantom head CT (DICOM) with one lesion per positive scan: 3-14 slices, 50-90 HU, radius 5-20 mm, "
            "block centre ~ N(S/2, 0.125 S), in-plane position uniform in the brain; embedded by a random-init "
            "vit_tiny (192-d CLS).",
        ),
        DatasetSpec(
            "phantom_head_multi",
            "Phantom head CT, 2-3 lesions",
            "phantom",
            "head",
            {"lesions": "multi"},
            "phantom head CT (DICOM) with 2-3 disjoint lesions per positive scan: 2-7 slices each, 50-90 HU, "
            "radius 5-20 mm, placed uniformly; embedded by a random-init vit_tiny (192-d CLS).",
        ),
    )
}


@dataclass(frozen=True)
class Profile:
    """Sizes and training budget of one run.

    Attributes:
        scans: scans per data set (by name).
        dim: embedding width of the synthetic stores (the phantom store's width is the encoder's, 192).
        image_size: phantom in-plane pixels = encoder input size.
        epochs: epochs per training run.
        lrs: learning-rate grid.
        l1_weights: L1 alpha grid (lambda is the paper's 1).
        threads: torch intra-op threads.
    """

    scans: dict[str, int]
    dim: int
    image_size: int
    epochs: int
    lrs: tuple[float, ...] = (0.1,)
    l1_weights: tuple[float, ...] = (0.0,)
    threads: int = 2


PROFILES: dict[str, Profile] = {
    # smoke test: every data set and method, 3 splits, 1 epoch
    "quick": Profile(
        scans={name: 24 for name in DATASETS},
        dim=32,
        image_size=32,
        epochs=1,
    ),
    # the documented run (docs/synthetic.md, "Benchmark sizes"): ~2 h of process time on 2 cores (measured)
    "full": Profile(
        scans={
            "ct_regime_head": 600,
            "ct_regime_head_multi": 600,
            "ct_regime_chest": 200,
            "ct_regime_abdomen": 160,
            "phantom_head": 300,
            "phantom_head_multi": 300,
        },
        dim=256,
        image_size=64,
        epochs=15,
    ),
}


# --------------------------------------------------------------------------------------------------- building
def _machine() -> str:
    return f"{os.cpu_count()} x {cpu_model()}, {platform.system()} {platform.release()}"


def _finished_settings(path: Path, profile_name: str | None = None) -> dict[str, Any] | None:
    """The ``settings.json`` at ``path`` if its run finished (with ``profile_name``, when given), else None."""
    if not path.exists():
        return None
    settings = json.loads(path.read_text())
    if not settings.get("finished") or (profile_name is not None and settings.get("profile") != profile_name):
        return None
    return settings


def _start_run(path: Path, settings: dict[str, Any], command: str) -> dict[str, Any]:
    """Record a run as started in ``path``: ``settings`` plus command, date, machine, load average, unfinished."""
    settings = {
        **settings,
        "command": command,
        "date": _dt.date.today().isoformat(),
        "machine": _machine(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "finished": False,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))
    return settings


def _finish_run(path: Path, settings: dict[str, Any], started: float) -> dict[str, Any]:
    """Record the run in ``path`` as finished: its experiment time since ``started`` and the end load average."""
    settings["experiment_seconds"] = round(time.perf_counter() - started, 1)
    settings["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    settings["finished"] = True
    path.write_text(json.dumps(settings, indent=1))
    return settings


def _store_facts(store: Any) -> dict[str, Any]:
    n = np.asarray(store.n_slices)
    labels = np.asarray(store.labels)
    return {
        "scans": int(len(labels)),
        "positive_scans": int(labels.sum()),
        "patients": int(len(set(store.patient_ids))),
        "slices": int(n.sum()),
        "slices_per_scan": [int(n.min()), int(n.max())],
        "dim": int(store.dim),
    }


def _build_phantom(spec: DatasetSpec, folder: Path, profile: Profile) -> dict[str, Any]:
    from monai_ng.cli import main as cli_main
    from monai_ng.data.phantom import MULTI_LESION, SINGLE_LESION, write_lesion_benchmark

    ranges = MULTI_LESION if spec.params["lesions"] == "multi" else SINGLE_LESION
    dicom, manifest, store = folder / "dicom", folder / "manifest.csv", folder / "store"
    t0 = time.perf_counter()
    write_lesion_benchmark(dicom, profile.scans[spec.name], DATA_SEED, lesions=ranges, size=profile.image_size)
    t1 = time.perf_counter()
    ingest = ["ingest", "--dataset", "folder", "--root", str(dicom), "--labels", str(dicom / "labels.csv")]
    if cli_main([*ingest, "--out", str(manifest), "--no-progress"]):
        raise RuntimeError(f"{spec.name}: monai-ng ingest failed")
    t2 = time.perf_counter()
    embed = ["embed", "--manifest", str(manifest), "--out", str(store), "--encoder", "vit_tiny_patch16_224"]
    embed += ["--weights", "random-init", "--image-size", str(profile.image_size), "--device", "cpu"]
    embed += ["--workers", "0", "--seed", str(DATA_SEED), "--no-progress"]
    if cli_main(embed):
        raise RuntimeError(f"{spec.name}: monai-ng embed failed")
    t3 = time.perf_counter()
    shutil.copy(dicom / "truth.json", folder / "truth.json")
    shutil.rmtree(dicom)  # the store holds everything the experiment needs
    return {
        "generator": "monai_ng.data.phantom.write_lesion_benchmark",
        "lesions": asdict(ranges),
        "image_size": profile.image_size,
        "encoder": "vit_tiny_patch16_224, random-init (seed 7), CLS token",
        "seconds": {"dicom": round(t1 - t0, 1), "ingest": round(t2 - t1, 1), "embed": round(t3 - t2, 1)},
    }


def build_store(spec: DatasetSpec, folder: Path, profile: Profile) -> dict[str, Any]:
    """Write ``folder/store`` for ``spec`` (replacing a partial one) and return its data settings and sizes."""
    from monai_ng.data.embedding_store import EmbeddingStore
    from monai_ng.data.synthetic import write_synthetic_store

    store_path = folder / "store"
    for stale in (store_path, folder / "dicom"):
        if stale.exists():
            shutil.rmtree(stale)
    t0 = time.perf_counter()
    if spec.source == "ct_regime":
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.params.items()}
        write_synthetic_store("ct_regime", store_path, profile.scans[spec.name], DATA_SEED, dim=profile.dim, **params)
        data = {"generator": "ct_regime", "seed": DATA_SEED, **spec.params}
    elif spec.source == "phantom":
        data = _build_phantom(spec, folder, profile)
    else:
        raise ValueError(f"{spec.name}: unknown source {spec.source!r}")
    store = EmbeddingStore(store_path)
    facts = _store_facts(store)
    if spec.source == "ct_regime":
        meta = json.loads((store_path / "store.json").read_text()).get("synthetic", {})
        data["parameters"] = meta
    return {"data": data, "sizes": facts, "build_seconds": round(time.perf_counter() - t0, 1)}


def run_dataset(name: str, out: Path, profile_name: str, command: str, rerun: bool = False) -> dict[str, Any]:
    """Build the store and run the experiment of one data set into ``out/name``; returns its ``settings.json``."""
    import torch

    from monai_ng.experiment import default_methods, run_experiment

    spec, profile = DATASETS[name], PROFILES[profile_name]
    folder = out / name
    settings_path = folder / "settings.json"
    done = None if rerun else _finished_settings(settings_path, profile_name)
    if done is not None:
        logging.info("%s: finished earlier, skipped (--rerun repeats it)", name)
        return done
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(profile.threads)
    t0 = time.perf_counter()
    built = build_store(spec, folder, profile)
    cfg = experiment_config(profile)
    methods = default_methods(ceiling_kernel=REGION_KERNELS[spec.region])
    settings = {
        "dataset": name,
        "title": spec.title,
        "about": spec.about,
        "profile": profile_name,
        **built,
        "grid": {"lrs": list(cfg.lrs), "l1_weights": list(cfg.l1_weights), "ng_weight": list(cfg.ng_weights)},
        "training": {
            "epochs": cfg.max_epochs,
            "batch_size": cfg.batch_size,
            "train_above_val": cfg.require_train_above_val,
            "drop_last": cfg.drop_last,
            "ceiling_kernel": REGION_KERNELS[spec.region],
        },
        "splits": list(SEEDS),
        "threads": profile.threads,
    }
    settings = _start_run(settings_path, settings, command)
    t1 = time.perf_counter()
    run_experiment(folder / "store", folder / "experiment", methods, cfg)
    settings["total_seconds"] = round(time.perf_counter() - t0, 1)
    return _finish_run(settings_path, settings, t1)


def experiment_config(profile: Profile) -> Any:
    """The :class:`~monai_ng.experiment.ExperimentConfig` of a profile (the main and the ``--beyond`` runs share it)."""
    from monai_ng.experiment import ExperimentConfig

    return ExperimentConfig(lrs=profile.lrs, l1_weights=profile.l1_weights, max_epochs=profile.epochs, seeds=SEEDS)


def beyond_methods(region: str) -> tuple[list[Any], list[str]]:
    """The :data:`BEYOND` variants of :func:`~monai_ng.experiment.method_variants`, and the names left out because
    the optional ``torchmil`` package is not installed."""
    import importlib.util

    from monai_ng.experiment import method_variants

    have_torchmil = importlib.util.find_spec("torchmil") is not None
    variants = {m.name: m for m in method_variants(ceiling_kernel=REGION_KERNELS[region])}
    missing = [n for n in BEYOND if n not in variants]
    if missing:
        raise KeyError(f"method_variants() has no {missing}")
    chosen = [variants[n] for n in BEYOND if have_torchmil or variants[n].network != "torchmil"]
    skipped = [n for n in BEYOND if not have_torchmil and variants[n].network == "torchmil"]
    return chosen, skipped


def run_beyond(
    name: str, out: Path, profile_name: str, command: str, rerun: bool = False, threads: int | None = None
) -> dict[str, Any] | None:
    """Run the :data:`BEYOND` variants on a data set whose main run has finished, into ``out/name/beyond``; same
    store, splits and training settings as the main run. Returns the run's ``settings.json`` (None: not applicable)."""
    import torch

    from monai_ng.experiment import run_experiment

    if name not in BEYOND_DATASETS:
        return None
    folder = out / name
    if _finished_settings(folder / "settings.json", profile_name) is None:
        raise RuntimeError(f"{name}: run the main comparison (profile {profile_name}) before --beyond")
    settings_path = folder / "beyond" / "settings.json"
    earlier = None if rerun else _finished_settings(settings_path, profile_name)
    if earlier is not None:
        logging.info("%s: beyond-the-paper run finished earlier, skipped (--rerun repeats it)", name)
        return earlier
    profile = PROFILES[profile_name]
    threads = threads or profile.threads
    torch.set_num_threads(threads)
    methods, skipped = beyond_methods(DATASETS[name].region)
    settings = {
        "dataset": name,
        "profile": profile_name,
        "threads": threads,
        "methods": [m.name for m in methods],
        "skipped": skipped,
    }
    settings = _start_run(settings_path, settings, command)
    t0 = time.perf_counter()
    run_experiment(folder / "store", folder / "beyond", methods, experiment_config(profile))
    return _finish_run(settings_path, settings, t0)


# --------------------------------------------------------------------------------------------------- reporting
def _mean_sd(values: pd.Series) -> tuple[float, float]:
    v = values.astype(float).to_numpy()
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def results_table(results: pd.DataFrame) -> str:
    """The markdown table: ``method | scan AUROC | loc. AUROC | loc. AUPRC | splits`` (mean ± sample std over splits),
    methods in the order they first appear in ``results``."""
    from monai_ng.experiment import summarise

    return summarise(results, list(dict.fromkeys(results["method"])))


def settings_block(settings: dict[str, Any]) -> str:
    """A markdown list of the settings a table was made with (data, sizes, grid, training, command, date, machine)."""
    s = settings.get("sizes", {})
    data = dict(settings.get("data", {}))
    secs = data.pop("seconds", None)
    params = data.pop("parameters", None)
    lines = [f"- **Data.** {settings.get('about', '')}"]
    if s:
        lines.append(
            f"- **Sizes.** {s['scans']} scans ({s['positive_scans']} positive) from {s['patients']} patients; "
            f"{s['slices']:,} slices ({s['slices_per_scan'][0]}-{s['slices_per_scan'][1]} per scan), "
            f"{s['dim']}-d embeddings."
        )
    lines.append(f"- **Data settings.** `{json.dumps(data, separators=(', ', ': '))}`")
    if params:
        lines.append(f"- **Generator parameters (store.json).** `{json.dumps(params, separators=(', ', ': '))}`")
    if secs:
        lines.append(
            f"- **Pipeline time.** DICOM {secs['dicom']} s, ingest {secs['ingest']} s, embed {secs['embed']} s"
            + (f" ({s['slices'] / secs['embed']:.0f} slices/s)" if s and secs["embed"] else "")
            + "."
        )
    g, t = settings.get("grid", {}), settings.get("training", {})
    lines.append(
        f"- **Grid and training.** lr {g.get('lrs')}, L1 alpha {g.get('l1_weights')}, lambda {g.get('ng_weight')}; "
        f"{t.get('epochs')} epochs, batch {t.get('batch_size')}, train-above-validation rule "
        f"{'on' if t.get('train_above_val') else 'off'}, drop-last {'on' if t.get('drop_last') else 'off'}, "
        f"ceiling kernel {t.get('ceiling_kernel')}; splits {settings.get('splits')}; "
        f"{settings.get('threads')} torch threads."
    )
    timing = f"; store {settings.get('build_seconds')} s, experiment {settings.get('experiment_seconds')} s"
    lines.append(
        f"- **Run.** `{settings.get('command')}` (profile `{settings.get('profile')}`), {settings.get('date')}, "
        f"{settings.get('machine')}, load average {settings.get('loadavg_start')} -> {settings.get('loadavg_end')}"
        f"{timing}."
    )
    return "\n".join(lines) + "\n"


def what_came_out(results: pd.DataFrame) -> str:
    """A factual paragraph computed from the per-split results: the best weakly supervised method on localization
    against the centre baseline, NG against its base model, the best scan AUROC and the instance ceiling."""
    stats = {m: (_mean_sd(p["loc_auroc"]), _mean_sd(p["scan_auroc"])) for m, p in results.groupby("method", sort=False)}
    weak = {m: v for m, v in stats.items() if m != CEILING}
    if not weak:
        return "No weakly supervised method finished.\n"
    n = int(results.groupby("method").size().min())
    best = max(weak, key=lambda m: weak[m][0][0])
    (bm, bs), _ = weak[best]
    parts = [f"Over {n} split(s), the best localization among the methods trained on scan labels is **{best}**"]
    parts[0] += f" (loc. AUROC {bm:.3f} ± {bs:.3f})"
    if BASELINE in stats and best != BASELINE:
        (cm, cs), _ = stats[BASELINE]
        d = bm - cm
        within = round(abs(d), 3) <= round(max(bs, cs), 3)  # as printed
        parts[0] += (
            f", {d:+.3f} against the centre baseline ({cm:.3f} ± {cs:.3f}); the difference is "
            f"{'within' if within else 'larger than'} one split standard deviation"
        )
    parts[0] += "."
    for ng, base in (("ABMIL+NG (forward KL)", "ABMIL"), ("TransMIL+NG (single normal)", "TransMIL")):
        if ng in stats and base in stats:
            d = stats[ng][0][0] - stats[base][0][0]
            ds = stats[ng][1][0] - stats[base][1][0]
            parts.append(f"{ng} vs {base}: loc. AUROC {d:+.3f}, scan AUROC {ds:+.3f}.")
    if "SmAP" in stats and BASELINE in stats:
        parts.append(f"SmAP vs centre baseline: loc. AUROC {stats['SmAP'][0][0] - stats[BASELINE][0][0]:+.3f}.")
    top_scan = max(weak, key=lambda m: weak[m][1][0])
    parts.append(f"Best scan AUROC: {top_scan} ({weak[top_scan][1][0]:.3f} ± {weak[top_scan][1][1]:.3f}).")
    if weak[top_scan][1][0] < WEAK_SCAN_AUROC:
        parts.append(
            f"No method trained on scan labels reaches a scan AUROC of {WEAK_SCAN_AUROC}: the scan label was barely "
            "learned here, so the localization differences reflect the shape of the attention (e.g. NG's pull toward "
            "one bump) more than learned lesion content."
        )
    if CEILING in stats:
        (em, es), _ = stats[CEILING]
        parts.append(f"The instance ceiling (trained on slice labels) reaches loc. AUROC {em:.3f} ± {es:.3f}.")
    return " ".join(parts) + "\n"


def selected_epochs(results: pd.DataFrame, epochs: int | None) -> str:
    """One sentence on the epochs the selection rule chose (median, range, share at the last epoch): whether the
    epoch budget was enough is read from it."""
    if "best_epoch" not in results:
        return ""
    chosen = pd.to_numeric(results["best_epoch"], errors="coerce").dropna()
    if chosen.empty:
        return ""
    text = f"Selected epochs: median {chosen.median():g}, range {chosen.min():g}-{chosen.max():g}"
    if epochs:
        last = float((chosen >= epochs).mean())  # best_epoch is 1-based (ignite epochs)
        text += f" of {epochs}; {100 * last:.0f}% of the {len(chosen)} runs chose the last epoch"
    return text + "."


def beyond_table(main: pd.DataFrame, beyond: pd.DataFrame) -> str:
    """Each variant against each method it refines, paired over the splits both ran.

    Columns: ``variant | compared with | loc. AUROC (variant) | loc. AUROC (compared) | Δ loc. AUROC | Δ scan AUROC
    | splits``; the deltas are the mean ± sample std over splits of the per-split differences (variant minus
    compared)."""
    both = pd.concat([main, beyond], ignore_index=True)
    lines = [
        "| variant | compared with | loc. AUROC (variant) | loc. AUROC (compared) | Δ loc. AUROC | Δ scan AUROC "
        "| splits |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(beyond["method"]):
        for ref in BEYOND.get(variant, ()):
            a = both[both["method"] == variant].set_index("split")
            b = both[both["method"] == ref].set_index("split")
            common = a.index.intersection(b.index)
            if common.empty:
                continue
            a, b = a.loc[common], b.loc[common]
            (am, asd), (bm, bsd) = _mean_sd(a["loc_auroc"]), _mean_sd(b["loc_auroc"])
            dm, dsd = _mean_sd(a["loc_auroc"] - b["loc_auroc"])
            sm, ssd = _mean_sd(a["scan_auroc"] - b["scan_auroc"])
            lines.append(
                f"| {variant} | {ref} | {am:.3f} ± {asd:.3f} | {bm:.3f} ± {bsd:.3f} | {dm:+.3f} ± {dsd:.3f} "
                f"| {sm:+.3f} ± {ssd:.3f} | {len(common)} |"
            )
    return "\n".join(lines) + "\n"


def beyond_came_out(main: pd.DataFrame, beyond: pd.DataFrame) -> str:
    """Which variants beat every method they refine on localization by more than one standard deviation of the
    paired differences, which fall behind, and the rest; computed from the numbers."""
    both = pd.concat([main, beyond], ignore_index=True)
    better, worse, neither = [], [], []
    for variant in dict.fromkeys(beyond["method"]):
        verdicts = []
        for ref in BEYOND.get(variant, ()):
            a = both[both["method"] == variant].set_index("split")["loc_auroc"]
            b = both[both["method"] == ref].set_index("split")["loc_auroc"]
            common = a.index.intersection(b.index)
            if common.empty:
                continue
            dm, dsd = _mean_sd(a.loc[common] - b.loc[common])
            verdicts.append(1 if round(dm, 3) > round(dsd, 3) else -1 if round(-dm, 3) > round(dsd, 3) else 0)
        if verdicts and all(v == 1 for v in verdicts):
            better.append(variant)
        elif any(v == -1 for v in verdicts):
            worse.append(variant)
        elif verdicts:
            neither.append(variant)
    parts = [
        "Better localization than every method it refines (paired difference above one split sd): "
        + (", ".join(better) if better else "none")
        + ".",
        "Worse than at least one of them: " + (", ".join(worse) if worse else "none") + ".",
    ]
    if neither:
        parts.append("Within one sd of them: " + ", ".join(neither) + ".")
    return " ".join(parts) + "\n"


def beyond_section(name: str, folder: Path) -> str | None:
    """The beyond-the-paper table of one data set, or None when its ``--beyond`` run has not finished."""
    beyond_path = folder / "beyond" / "results.csv"
    main_path = folder / "experiment" / "results.csv"
    settings = _finished_settings(folder / "beyond" / "settings.json")
    if settings is None or not (beyond_path.exists() and main_path.exists()):
        return None
    main, beyond = pd.read_csv(main_path), pd.read_csv(beyond_path)
    title = json.loads((folder / "settings.json").read_text()).get("title", name)
    lines = [
        f"### {title} (`{name}`)",
        "",
        beyond_table(main, beyond),
        "**What came out.** " + beyond_came_out(main, beyond),
    ]
    lines.append(
        f"Run: `{settings.get('command')}`, {settings.get('date')}, load average {settings.get('loadavg_start')} -> "
        f"{settings.get('loadavg_end')}, {settings.get('threads', '?')} torch thread(s), "
        f"{settings.get('experiment_seconds')} s."
        + (f" Not run (optional package missing): {', '.join(settings['skipped'])}." if settings.get("skipped") else "")
    )
    return "\n".join(lines) + "\n"


def plot_loc_auroc(results: pd.DataFrame, path: Path, title: str) -> Path:
    """Horizontal bars of localization AUROC per method, mean with sample-std error bars; the centre baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(results["method"]))
    stats = [_mean_sd(results.loc[results["method"] == m, "loc_auroc"]) for m in methods]
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(methods) + 1.2))
    y = np.arange(len(methods))[::-1]
    colors = ["0.55" if m in (BASELINE, CEILING) or m.startswith(BASELINE) else "tab:blue" for m in methods]
    ax.barh(y, [m for m, _ in stats], xerr=[s for _, s in stats], color=colors, capsize=3)
    if BASELINE in methods:
        ax.axvline(stats[methods.index(BASELINE)][0], color="k", ls="--", lw=1, label=BASELINE)
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0.5, color="0.3", lw=0.8)
    ax.set_yticks(y, methods, fontsize=8)
    lo = min(0.4, min(m - s for m, s in stats) - 0.02) if stats else 0.4
    ax.set_xlim(max(0.0, lo), 1.0)
    ax.set_xlabel(f"localization AUROC (mean ± sd over {results['split'].nunique()} splits)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _runs(labels: np.ndarray) -> int:
    return int(((labels[1:] == 1) & (labels[:-1] == 0)).sum() + (labels[:1] == 1).sum())


def pick_scans(slices: pd.DataFrame, n: int = 4) -> list[str]:
    """``n`` positive test scans to draw: the most lesion blocks first, ties by ``scan_id`` (deterministic)."""
    keyed = []
    for scan, part in slices.groupby("scan_id", sort=True):
        labels = part.sort_values("slice")["slice_label"].to_numpy()
        if (labels == 1).any():
            keyed.append((-_runs(labels), str(scan)))
    return [scan for _, scan in sorted(keyed)[:n]]


def plot_attention_curves(experiment_dir: Path, methods: Sequence[str], path: Path, title: str, n_scans: int = 4):
    """Attention of each method's selected model (split 0) on ``n_scans`` positive test scans against slice labels.

    One row per method, one column per scan; the curve is the scan's attention scaled to a maximum of 1, lesion
    slices are shaded. Returns ``path``, or None when no slice scores were written.
    """
    from monai_ng.experiment import slice_scores_path

    frames = {m: slice_scores_path(experiment_dir, m, 0) for m in methods}
    frames = {m: pd.read_csv(p, dtype={"scan_id": str}) for m, p in frames.items() if p.exists()}
    if not frames:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scans = pick_scans(next(iter(frames.values())), n_scans)
    if not scans:
        return None
    fig, axes = plt.subplots(
        len(frames), len(scans), figsize=(2.6 * len(scans), 0.95 * len(frames) + 0.8), squeeze=False, sharey=True
    )
    for i, (method, frame) in enumerate(frames.items()):
        for j, scan in enumerate(scans):
            ax = axes[i][j]
            part = frame[frame["scan_id"] == scan].sort_values("slice")
            x = part["slice"].to_numpy()
            a = part["attention"].to_numpy(dtype=float)
            a = a - min(a.min(), 0.0) if a.size else a
            a = a / a.max() if a.size and a.max() > 0 else a
            lab = part["slice_label"].to_numpy()
            ax.fill_between(x, 0, (lab == 1).astype(float), step="mid", color="tab:red", alpha=0.2, lw=0)
            ax.plot(x, a, color="tab:blue", lw=1)
            ax.set_ylim(0, 1.05)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(method, fontsize=6, rotation=0, ha="right", va="center")
            if i == 0:
                ax.set_title(f"scan {j + 1} ({len(x)} slices)", fontsize=7)
    fig.suptitle(f"{title}: attention (scaled to max 1, blue) vs lesion slices (red), split 0", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def dataset_section(name: str, folder: Path, figures: Path) -> str | None:
    """The markdown section of one finished data set (settings, table, what came out, figures), writing its PNGs
    into ``figures``; None when the data set has not finished."""
    results_path = folder / "experiment" / "results.csv"
    settings = _finished_settings(folder / "settings.json")
    if settings is None or not results_path.exists():
        return None
    results = pd.read_csv(results_path)
    title = settings.get("title", name)
    loc_png = plot_loc_auroc(results, figures / f"{name}_loc_auroc.png", title)
    methods = list(dict.fromkeys(results["method"]))
    att_png = plot_attention_curves(folder / "experiment", methods, figures / f"{name}_attention.png", title)
    lines = [f"## {title} (`{name}`)", "", settings_block(settings), results_table(results)]
    epochs = settings.get("training", {}).get("epochs")
    lines += ["**What came out.** " + what_came_out(results).rstrip("\n") + " " + selected_epochs(results, epochs), ""]
    lines += [f"![localization AUROC]({figures.name}/{loc_png.name})"]
    if att_png is not None:
        lines += ["", f"![attention curves]({figures.name}/{att_png.name})"]
    return "\n".join(lines) + "\n"


def render_report(out: Path, figures: Path, command: str) -> str:
    """The whole ``results.md``: a generated-file header, the shared setup, then one section per finished data set."""
    sections = [s for name in DATASETS if (s := dataset_section(name, out / name, figures)) is not None]
    beyond = [s for name in BEYOND_DATASETS if (s := beyond_section(name, out / name)) is not None]
    if beyond:
        sections.append(
            "## Beyond the paper (issue 10 §3)\n\n"
            "Each variant (`monai_ng.experiment.method_variants()`, `docs/method.md`) was trained with the same "
            "store, splits and training settings as its data set's main table above, and is compared split by split "
            "with the methods it refines (from that table). Δ = variant minus compared method, mean ± sample std "
            "over splits of the per-split differences.\n\n" + "\n".join(beyond)
        )
    header = [
        "# Results on the benchmark data sets",
        "",
        "<!-- generated file: do not edit by hand -->",
        f"Generated by `benchmarks/results.py` (`{command}`) on {_dt.date.today().isoformat()}: every table, "
        "paragraph and figure below comes from the runs in its output folder; each data set's own command, date, "
        "machine and settings are listed beside its table. See `docs/synthetic.md` for the data and the choice of "
        "sizes. To regenerate everything from scratch: `make results` (about 2 hours of process time on 2 cores, resumable per data set).",
        "",
        "- **Methods.** `monai_ng.experiment.default_methods()` (the paper's comparison), with the instance ceiling's "
        "kernel set per region (head 12, chest 35, abdomen 29).",
        "- **Splits.** Patient-level stratified splits with seeds 1001/2001/3001 (test 1/6 of the patients, "
        "validation 1/5 of the rest).",
        "- **Selection.** Epoch and grid point by validation scan AUROC among epochs whose train AUROC exceeds "
        "the validation AUROC; the instance ceiling by validation localization AUROC.",
        "- **Metrics.** Scan AUROC over the test scans; localization AUROC / AUPRC per positive test scan from the "
        "head-averaged attention against the slice labels, averaged over scans. Mean ± sample std over splits.",
        "",
    ]
    if not sections:
        header.append("No data set has finished in this output folder yet.\n")
    return "\n".join(header) + "\n" + "\n".join(sections)


def write_report(out: Path, command: str, write_docs: bool) -> Path:
    """Write ``out/results.md`` with figures in ``out/figures``; with ``write_docs`` also ``docs/results.md`` and the
    PNGs in ``docs/figures`` (stale PNGs of the data sets there are replaced)."""
    text = render_report(out, out / "figures", command)
    (out / "results.md").write_text(text)
    if not write_docs:
        return out / "results.md"
    target = DOCS / "figures"
    target.mkdir(parents=True, exist_ok=True)
    for png in sorted((out / "figures").glob("*.png")):
        shutil.copy(png, target / png.name)
    (DOCS / "results.md").write_text(text)
    return DOCS / "results.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per data set)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="sizes (default: %(default)s)")
    parser.add_argument("--datasets", default=None, help=f"comma-separated subset of: {', '.join(DATASETS)}")
    parser.add_argument("--rerun", action="store_true", help="repeat data sets that finished earlier")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT")
    parser.add_argument("--write-docs", action="store_true", help="also write docs/results.md and docs/figures/")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads of the --beyond runs (default: the profile's; 1 is faster on a busy machine)",
    )
    parser.add_argument(
        "--beyond",
        action="store_true",
        help=f"also run the beyond-the-paper variants on the head-length data sets ({', '.join(BEYOND_DATASETS)})",
    )
    args = parser.parse_args(argv)
    names = list(DATASETS) if not args.datasets else [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; known: {list(DATASETS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ignite", "monai", "monai_ng.engines"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = "python benchmarks/results.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for name in names:
            t0 = time.perf_counter()
            run_dataset(name, args.out, args.profile, command, rerun=args.rerun)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        for name in names if args.beyond else ():
            t0 = time.perf_counter()
            if run_beyond(name, args.out, args.profile, command, rerun=args.rerun, threads=args.threads) is not None:
                print(f"{name} (beyond the paper): {time.perf_counter() - t0:.0f} s", flush=True)
    path = write_report(args.out, command, args.write_docs)
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
