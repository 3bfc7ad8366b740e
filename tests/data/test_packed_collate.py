"""The packed collate (:func:`collate_packed_bags`): the valid rows only, ``[T, D]``, in the mask's row-major order.

It must hold exactly the valid rows of the padded collate (:func:`collate_bags`) with every other key equal, follow the
same dtype rule, reject the same bad inputs, and an experiment trained on it must give the results of the padded one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import monai_ng.experiment
from monai_ng.data import BagKeys, collate_bags, collate_packed_bags
from monai_ng.experiment import ExperimentConfig, MethodSpec, run_experiment

D = 6
LENGTHS = (4, 1, 9, 3, 9)


def _items(dtypes=(np.float32,), lengths=LENGTHS, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            BagKeys.EMBEDDINGS: torch.from_numpy(rng.standard_normal((n, D)).astype(dtypes[k % len(dtypes)])),
            BagKeys.LABEL: k % 2,
            BagKeys.SLICE_LABELS: torch.from_numpy(rng.integers(-1, 2, size=n).astype(np.int8)),
            BagKeys.SCAN_ID: f"scan{k}",
            BagKeys.INDEX: 10 + k,
        }
        for k, n in enumerate(lengths)
    ]


def test_rows_are_the_padded_batch_valid_rows_and_other_keys_equal():
    items = _items()
    padded, packed = collate_bags(items), collate_packed_bags(items)
    emb = packed[BagKeys.EMBEDDINGS]
    assert emb.shape == (sum(LENGTHS), D) and emb.is_contiguous()
    # the documented rule: row t is the t-th True entry of mask, row-major
    assert torch.equal(emb, padded[BagKeys.EMBEDDINGS][padded[BagKeys.MASK]])
    # and, independently of the padded collate, the bags back to back in batch order
    assert torch.equal(emb, torch.cat([it[BagKeys.EMBEDDINGS] for it in items]))
    assert set(packed) == set(padded)
    for key in (BagKeys.MASK, BagKeys.LABEL, BagKeys.SLICE_LABELS, BagKeys.N_SLICES, BagKeys.INDEX):
        assert packed[key].dtype == padded[key].dtype and torch.equal(packed[key], padded[key]), key
    assert packed[BagKeys.SCAN_ID] == padded[BagKeys.SCAN_ID] == [f"scan{k}" for k in range(len(LENGTHS))]
    assert packed[BagKeys.MASK].shape == (len(LENGTHS), max(LENGTHS))
    assert packed[BagKeys.N_SLICES].tolist() == list(LENGTHS)
    assert (packed[BagKeys.SLICE_LABELS][~packed[BagKeys.MASK]] == -1).all()


def test_numpy_items_and_a_bag_of_one_slice():
    items = _items(lengths=(1, 3))
    as_numpy = [{**it, BagKeys.EMBEDDINGS: it[BagKeys.EMBEDDINGS].numpy()} for it in items]
    batch = collate_packed_bags(as_numpy)
    assert torch.equal(batch[BagKeys.EMBEDDINGS], torch.cat([it[BagKeys.EMBEDDINGS] for it in items]))
    assert batch[BagKeys.MASK].tolist() == [[True, False, False], [True, True, True]]


def test_dtype_rule_is_the_padded_collates():
    half = _items((np.float16,))
    rows16 = torch.cat([it[BagKeys.EMBEDDINGS] for it in half])
    kept = collate_packed_bags(half)[BagKeys.EMBEDDINGS]
    assert kept.dtype == torch.float16 and torch.equal(kept, rows16)  # float16 kept, no conversion
    forced = collate_packed_bags(half, dtype=torch.float32)[BagKeys.EMBEDDINGS]
    assert forced.dtype == torch.float32 and torch.equal(forced, rows16.float())  # exact upcast
    mixed = collate_packed_bags(_items((np.float16, np.float64)))[BagKeys.EMBEDDINGS]
    assert mixed.dtype == torch.float32  # items of different dtypes: float32
    assert collate_bags(_items((np.float16, np.float64)))[BagKeys.EMBEDDINGS].dtype == torch.float32
    full = _items()
    rows32 = torch.cat([it[BagKeys.EMBEDDINGS] for it in full])
    to_bf16 = collate_packed_bags(full, dtype=torch.bfloat16)[BagKeys.EMBEDDINGS]
    assert to_bf16.dtype == torch.bfloat16 and torch.equal(to_bf16, rows32.to(torch.bfloat16))
    bf16_items = [{**it, BagKeys.EMBEDDINGS: it[BagKeys.EMBEDDINGS].to(torch.bfloat16)} for it in full]
    kept_bf16 = collate_packed_bags(bf16_items)[BagKeys.EMBEDDINGS]
    assert kept_bf16.dtype == torch.bfloat16 and torch.equal(kept_bf16, rows32.to(torch.bfloat16))
    for items, dtype in ((half, None), (half, torch.float32), (full, torch.bfloat16), (bf16_items, None)):
        padded = collate_bags(items, dtype=dtype)
        packed = collate_packed_bags(items, dtype=dtype)[BagKeys.EMBEDDINGS]
        assert packed.dtype == padded[BagKeys.EMBEDDINGS].dtype
        assert torch.equal(packed, padded[BagKeys.EMBEDDINGS][padded[BagKeys.MASK]])


def test_bad_inputs_raise_precise_errors():
    with pytest.raises(ValueError, match="collate_packed_bags got an empty list of bags"):
        collate_packed_bags([])
    items = _items()
    items[2] = {**items[2], BagKeys.EMBEDDINGS: torch.zeros(5, D + 1)}
    with pytest.raises(ValueError, match=rf"different embedding widths \[{D}, {D + 1}\]"):
        collate_packed_bags(items)


def test_experiment_gives_the_same_results_with_either_collate(easy_store, tmp_path, monkeypatch):
    # an order-free network with dropout (packed path), an order-aware one (packed path) and one that pads the packed
    # input back (instance ceiling, slice labels in its loss): the training runs must agree
    methods = [
        MethodSpec("ABMIL+NG", "abmil", {"dropout": 0.25}, ng=True),
        MethodSpec("SmAP", "smap"),
        MethodSpec("ceiling", "instance_ceiling", {"kernel_size": 3}, instance_weight=1.0),
    ]
    cfg = ExperimentConfig(lrs=(0.1,), ng_weights=(1.0,), l1_weights=(0.0,), max_epochs=2, batch_size=16, seeds=(1001,))
    seen = []

    def spy(collate):
        def wrapped(items, dtype=None):
            batch = collate(items, dtype)
            seen.append(batch[BagKeys.EMBEDDINGS].dim())
            return batch

        return wrapped

    monkeypatch.setattr(monai_ng.experiment, "collate_packed_bags", spy(collate_packed_bags))
    packed = run_experiment(easy_store, tmp_path / "packed", methods, cfg)
    assert seen and set(seen) == {2}  # the experiment's loaders collate packed bags
    seen.clear()
    monkeypatch.setattr(monai_ng.experiment, "collate_packed_bags", spy(collate_bags))
    padded = run_experiment(easy_store, tmp_path / "padded", methods, cfg)
    assert seen and set(seen) == {3}
    assert len(packed) == 3
    numeric = [c for c in packed.columns if pd.api.types.is_float_dtype(packed[c])]
    assert "scan_auroc" in numeric and "loc_auroc" in numeric
    # bit for bit: the packed networks read the same row values either way, and the others get back the same
    # zero-padded grid, so training, selection and scoring are identical
    pd.testing.assert_frame_equal(packed, padded, check_exact=True)
    for method in ("abmil_ng", "smap", "ceiling"):  # the selected models' per-slice scores on the test split
        a, b = (pd.read_csv(tmp_path / run / "slice_scores" / f"{method}_split0.csv") for run in ("packed", "padded"))
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("collate", [collate_bags, collate_packed_bags])
def test_slice_labels_grid_whatever_their_container(collate):
    """Tensor slice labels (one concatenation) and other containers (per-bag writes) give the same [B, N] grid."""
    items = _items()
    expected = torch.full((len(LENGTHS), max(LENGTHS)), -1, dtype=torch.int8)
    for k, it in enumerate(items):  # built independently, bag by bag
        expected[k, : LENGTHS[k]] = it[BagKeys.SLICE_LABELS]
    assert torch.equal(collate(items)[BagKeys.SLICE_LABELS], expected)
    mixed = [
        {**it, BagKeys.SLICE_LABELS: it[BagKeys.SLICE_LABELS].tolist()} if k % 2 else it for k, it in enumerate(items)
    ]
    assert torch.equal(collate(mixed)[BagKeys.SLICE_LABELS], expected)
    wide = [{**it, BagKeys.SLICE_LABELS: it[BagKeys.SLICE_LABELS].long()} for it in items]  # other integer dtype
    assert torch.equal(collate(wide)[BagKeys.SLICE_LABELS], expected)
    # one bag's labels a slice short and another's a slice long: same total, so only a per-bag check can see it
    shifted = [dict(it) for it in items]
    shifted[0][BagKeys.SLICE_LABELS] = items[0][BagKeys.SLICE_LABELS][:-1]
    shifted[2][BagKeys.SLICE_LABELS] = torch.cat([items[2][BagKeys.SLICE_LABELS], torch.zeros(1, dtype=torch.int8)])
    with pytest.raises(ValueError):
        collate(shifted)


def test_either_copy_path_writes_the_same_rows():
    # plain float32 tensors take torch.cat into the (recycled, > 1 MiB) buffer; anything else NumPy's concatenate
    rng = np.random.default_rng(3)
    lengths = (300, 1, 257, 40)
    blocks = [rng.standard_normal((n, 768)).astype(np.float32) for n in lengths]
    expected = torch.from_numpy(np.concatenate(blocks))
    base = _items(lengths=lengths)
    variants = {
        "tensors": [torch.from_numpy(b) for b in blocks],
        "numpy": blocks,
        "non-contiguous": [torch.from_numpy(np.asfortranarray(b)) for b in blocks],
        "requires_grad": [torch.from_numpy(b.copy()).requires_grad_(k == 2) for k, b in enumerate(blocks)],
        "mixed": [torch.from_numpy(b) if k % 2 else b for k, b in enumerate(blocks)],
    }
    for name, embeddings in variants.items():
        items = [{**it, BagKeys.EMBEDDINGS: e} for it, e in zip(base, embeddings, strict=True)]
        batch = collate_packed_bags(items)
        assert batch[BagKeys.EMBEDDINGS].dtype == torch.float32, name
        assert torch.equal(batch[BagKeys.EMBEDDINGS], expected), name
        assert not batch[BagKeys.EMBEDDINGS].requires_grad, name
    # float16 items into a float32 batch are converted in the same single write, exactly
    half = [
        {**it, BagKeys.EMBEDDINGS: torch.from_numpy(b.astype(np.float16))} for it, b in zip(base, blocks, strict=True)
    ]
    got = collate_packed_bags(half, dtype=torch.float32)[BagKeys.EMBEDDINGS]
    assert torch.equal(got, torch.from_numpy(np.concatenate(blocks).astype(np.float16).astype(np.float32)))
