"""``monai-ng synthetic``: write a synthetic embedding store (ShiftedMean, CT-like, multi-lesion or CT-regime).

Only the parameters given on the command line override the kind's defaults (see :mod:`monai_ng.data.synthetic`);
for ``--kind ct_regime`` the defaults are those of ``--region`` (head, chest or abdomen; chest when not given).
Ranges are written ``MIN:MAX`` (inclusive), e.g. ``--r 3:10``; a single number fixes the value. Lists of numbers are
comma-separated, e.g. ``--distractor-positions 0.1,0.5``; an empty string gives no distractors.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from monai_ng.cli._arguments import int_range
from monai_ng.data.embedding_store import EmbeddingStore
from monai_ng.data.synthetic import SYNTHETIC_KINDS, bayes_scan_posterior, bayes_slice_posterior, write_synthetic_store
from monai_ng.metrics import per_bag_localization
from monai_ng.metrics.localization import binary_auroc

__all__ = ["configure_parser", "run"]


def _float_list(text: str) -> tuple[float, ...]:
    """``"0.1,0.5"`` -> ``(0.1, 0.5)``; ``""`` -> ``()``."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


# (flag, params field, type, help); None type marks an integer range
_PARAM_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--dim", "dim", int, "embedding width D (default 768)"),
    ("--min-len", "min_len", int, "fewest slices per bag (default 20)"),
    ("--max-len", "max_len", int, "most slices per bag (default 60)"),
    ("--r", "r", None, "run / lesion block length, N or MIN:MAX"),
    ("--k", "k", int, "number of shifted leading features (shifted_mean, or --direction first_k)"),
    ("--delta", "delta", float, "shift / peak lesion amplitude"),
    ("--prevalence", "prevalence", float, "fraction of positive bags (default 0.5)"),
    ("--lesions", "lesions", None, "lesion blocks per positive scan, N or MIN:MAX (ct_like, multi_lesion)"),
    ("--min-gap", "min_gap", int, "negative slices between two lesion blocks (ct_like, multi_lesion)"),
    ("--direction", "direction", str, "lesion direction: random or first_k (ct_like, multi_lesion)"),
    ("--profile", "profile", str, "lesion profile: cosine, gaussian or flat (ct_like, multi_lesion)"),
    ("--centre-sd-frac", "centre_sd_frac", float, "sd of block centres as a fraction of the bag size"),
    ("--anatomy-rank", "anatomy_rank", int, "rank of the anatomy subspace, 0 disables the drift"),
    ("--anatomy-harmonics", "anatomy_harmonics", int, "harmonics of the anatomy trajectory"),
    ("--anatomy-scale", "anatomy_scale", float, "amplitude of the anatomy trajectory"),
    ("--position-jitter", "position_jitter", float, "sd of the per-scan shift of relative positions"),
    ("--patient-offset-scale", "patient_offset_scale", float, "sd of the per-patient anatomy offset"),
    ("--noise-std", "noise_std", float, "sd of the Gaussian noise (default 1)"),
    ("--repeat-scan-prob", "repeat_scan_prob", float, "probability that a patient owns several scans"),
    ("--max-scans-per-patient", "max_scans_per_patient", int, "most scans per patient"),
    ("--world-seed", "world_seed", int, "seed of the fixed anatomy / lesion direction (default 0)"),
    ("--region", "region", str, "ct_regime: body-region preset head, chest or abdomen (default chest)"),
    ("--noise-ar", "noise_ar", float, "ct_regime: AR(1) coefficient of the nuisance along slices (0 = i.i.d.)"),
    ("--centre-frac", "centre_frac", float, "ct_regime: mean lesion centre as a fraction of the scan"),
    ("--distractor-positions", "distractor_positions", _float_list, "ct_regime: distractor sites, e.g. 0.1,0.5"),
    ("--distractor-widths", "distractor_widths", _float_list, "ct_regime: distractor extents (fractions of scan)"),
    ("--distractor-delta", "distractor_delta", float, "ct_regime: peak distractor amplitude"),
    ("--distractor-cosine", "distractor_cosine", float, "ct_regime: cosine of distractor and lesion directions"),
    ("--distractor-amp-sd", "distractor_amp_sd", float, "ct_regime: sd of the log per-scan distractor amplitude"),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``synthetic`` options to ``parser``."""
    parser.add_argument("--kind", required=True, choices=SYNTHETIC_KINDS, help="which benchmark to generate")
    # --region is declared with the generator parameters below
    parser.add_argument("--out", required=True, help="destination store folder (must not exist unless --overwrite)")
    parser.add_argument("--n-bags", type=int, default=1000, help="number of scans (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored dtype")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    parser.add_argument("--no-ceiling", action="store_true", help="skip printing the Bayes ceiling (shifted_mean only)")
    group = parser.add_argument_group("generator parameters (default: the kind's own defaults)")
    for flag, _, typ, help_text in _PARAM_FLAGS:
        group.add_argument(flag, type=int_range if typ is None else typ, default=None, help=help_text)


def _ceiling(store: EmbeddingStore) -> tuple[float, float]:
    """Bayes scan AUROC and mean per-positive-scan localization AUROC of a ShiftedMean store."""
    labels = store.labels
    scan = bayes_scan_posterior(store)
    slices = bayes_slice_posterior(store)
    auroc = binary_auroc(labels, scan) if 0 < labels.sum() < len(labels) else float("nan")
    bags = []
    for i in np.flatnonzero(labels):
        bag = store.bag(int(i))
        start = int(store.index["offset"].iloc[i])
        bags.append((slices[start : start + len(bag.embeddings)], np.asarray(bag.slice_labels), 1))
    loc, _ = per_bag_localization(bags)
    return auroc, float(np.mean(loc)) if len(loc) else float("nan")


def run(args: argparse.Namespace) -> int:
    """Write the store; print a one-line summary (and the Bayes ceiling for ShiftedMean). Returns 0, or 2 on error."""
    params = {name: getattr(args, name) for _, name, _, _ in _PARAM_FLAGS if getattr(args, name, None) is not None}
    try:
        store = write_synthetic_store(
            args.kind, args.out, args.n_bags, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite, **params
        )
    except (ValueError, TypeError, FileExistsError) as exc:
        print(f"monai-ng synthetic: error: {exc}", file=sys.stderr)
        return 2
    labels = store.labels
    print(
        f"wrote {store.path}: kind={args.kind} scans={len(store)} positives={int(labels.sum())} "
        f"patients={len(set(store.patient_ids))} slices={store.n_slices_total} dim={store.dim} "
        f"dtype={store.embeddings.dtype}"
    )
    if args.kind == "shifted_mean" and not args.no_ceiling:
        auroc, loc = _ceiling(store)
        print(f"Bayes ceiling: scan AUROC {auroc:.4f}, localization AUROC (mean over positive scans) {loc:.4f}")
    return 0
