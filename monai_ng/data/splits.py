"""Patient-level stratified train / validation / test splits, as the Normal Guidance paper runs them.

Three splits with seeds 1001, 2001 and 3001; each holds out 1/6 of the patients for test and 1/5 of the rest for
validation, stratified on the patient-level label (a patient is positive when any of their scans is), so no patient
is in two parts (E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs", 2026; split key
is the patient for RSNA ICH and abdominal trauma, the study for RSNA PE).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["PAPER_SEEDS", "add_split_columns", "patient_level_split", "split_column"]

PAPER_SEEDS: tuple[int, ...] = (1001, 2001, 3001)


def split_column(seed: int) -> str:
    """Name of the manifest column holding the split of ``seed`` (``split_<seed>``)."""
    return f"split_{int(seed)}"


def _holdout(ids: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``ids`` into (rest, held out) with ``fraction`` held out, stratified when every class allows it."""
    # imported here: scikit-learn adds ~1 s to every `monai-ng predict` start-up that never splits
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    classes, counts = np.unique(labels, return_counts=True)
    n_hold = int(np.ceil(fraction * len(ids)))
    if len(counts) > 1 and counts.min() >= 2 and len(counts) <= n_hold <= len(ids) - len(counts):
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        rest, hold = next(splitter.split(ids, labels))
    else:
        warnings.warn(
            f"too few patients per class ({ {int(k): int(v) for k, v in zip(classes, counts, strict=True)} }) to "
            f"stratify a {fraction:.3f} hold-out of {len(ids)} patients; using an unstratified split",
            stacklevel=3,
        )
        rest, hold = next(ShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(ids))
    return ids[rest], ids[hold]


def patient_level_split(
    patient_ids: Sequence[str],
    labels: Sequence[int],
    seed: int,
    test_fraction: float = 1 / 6,
    val_fraction: float = 1 / 5,
) -> dict[str, str]:
    """Assign each patient to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        patient_ids: one entry per scan (repeats allowed).
        labels: scan labels (0/1) aligned with ``patient_ids``; a patient's label is the max over their scans.
        seed: random state for scikit-learn's ``StratifiedShuffleSplit``.
        test_fraction: fraction of patients held out for test (paper: 1/6).
        val_fraction: fraction of the remaining patients used for validation (paper: 1/5).

    Returns:
        ``{patient_id: split}``.
    """
    if len(patient_ids) != len(labels):
        raise ValueError(f"patient_ids ({len(patient_ids)}) and labels ({len(labels)}) differ in length")
    if not 0 < test_fraction < 1 or not 0 < val_fraction < 1:
        raise ValueError(f"fractions must lie in (0, 1), got test={test_fraction}, val={val_fraction}")
    per_patient = pd.Series(np.asarray(labels, dtype=np.int64), index=[str(p) for p in patient_ids])
    per_patient = per_patient.groupby(level=0, sort=True).max()
    if len(per_patient) < 3:
        raise ValueError(f"need at least 3 patients for a train/val/test split, got {len(per_patient)}")
    ids = per_patient.index.to_numpy()
    y = per_patient.to_numpy()
    rest, test = _holdout(ids, y, test_fraction, seed)
    train, val = _holdout(rest, per_patient.loc[rest].to_numpy(), val_fraction, seed)
    out = dict.fromkeys(train.tolist(), "train")
    out.update(dict.fromkeys(val.tolist(), "val"))
    out.update(dict.fromkeys(test.tolist(), "test"))
    return out


def add_split_columns(
    manifest: pd.DataFrame, seeds: Sequence[int] = PAPER_SEEDS, patient_column: str = "patient_id"
) -> pd.DataFrame:
    """Return a copy of ``manifest`` with one ``split_<seed>`` column per seed (values train / val / test).

    Scans with label -1 (unknown) never appear here; a manifest's ``label`` is always 0 or 1.
    """
    for col in (patient_column, "label"):
        if col not in manifest.columns:
            raise ValueError(f"manifest has no {col!r} column (columns: {list(manifest.columns)})")
    out = manifest.copy()
    for seed in seeds:
        assignment = patient_level_split(out[patient_column].astype(str).tolist(), out["label"].tolist(), int(seed))
        out[split_column(seed)] = out[patient_column].astype(str).map(assignment)
    return out
