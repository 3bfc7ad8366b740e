"""Embedding store: round trips, the flat interchange layout, bad inputs, atomic writes; bag collate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from monai_ng.data import BagDataset, EmbeddingStore, EmbeddingStoreWriter, StoreError, collate_bags, import_flat_layout


def _write_flat(folder, emb, rows, slice_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", emb)
    pd.DataFrame(rows, columns=["scan_id", "patient_id", "label", "offset", "n_slices"]).to_csv(
        folder / "manifest.csv", index=False
    )
    if slice_labels is not None:
        np.save(folder / "slice_labels.npy", slice_labels)
    return folder


@pytest.fixture
def flat(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 4)).astype(np.float16)
    rows = [("s1", "p1", 1, 0, 3), ("s2", "p1", 0, 3, 4), ("s3", "p2", 1, 7, 2)]
    sl = np.array([0, 1, 0, 0, 0, 0, 0, -1, 1], dtype=np.int8)
    return _write_flat(tmp_path / "flat", emb, rows, sl), emb, sl


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    bags = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 1, 6)]
    with EmbeddingStoreWriter(tmp_path / "s", dim=5, dtype="float32", metadata={"encoder": {"name": "vit"}}) as w:
        w.add_scan("a", "p1", 1, bags[0], np.array([0, 1, 1]))
        w.add_scan("b", "p2", 0, bags[1])
        w.add_scan("c", "p2", 0, bags[2], np.zeros(6, dtype=np.int8))
    store = EmbeddingStore(tmp_path / "s", check_finite=True)
    assert len(store) == 3 and store.dim == 5 and store.n_slices_total == 10
    assert store.scan_ids == ["a", "b", "c"] and store.patient_ids == ["p1", "p2", "p2"]
    assert store.labels.tolist() == [1, 0, 0] and store.n_slices.tolist() == [3, 1, 6]
    for i, bag in enumerate(bags):
        np.testing.assert_array_equal(store.bag(i).embeddings, bag)
    assert store.bag(0).slice_labels.tolist() == [0, 1, 1]
    assert store.bag(1).slice_labels.tolist() == [-1]  # not given -> unknown
    assert store.metadata["encoder"] == {"name": "vit"} and store.metadata["n_slices"] == 10
    assert isinstance(store.embeddings, np.memmap)
    store.require_metadata({"encoder": {"name": "vit"}})
    with pytest.raises(StoreError, match=r"encoder\.name.*'vit'.*'other'"):
        store.require_metadata({"encoder": {"name": "other"}})
    with pytest.raises(StoreError, match="lacks 'preprocessing'"):
        store.require_metadata({"preprocessing": "head"})


def test_float16_default_and_no_temp_left(tmp_path):
    with EmbeddingStoreWriter(tmp_path / "s", dim=2) as w:
        w.add_scan("a", "p", 0, np.array([[1.5, -2.25]]))
    store = EmbeddingStore(tmp_path / "s")
    assert store.embeddings.dtype == np.float16 and store.slice_labels is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_writer_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="'bad'.*NaN"):
        with EmbeddingStoreWriter(tmp_path / "s", dim=2) as w:
            w.add_scan("ok", "p", 0, np.ones((2, 2)))
            w.add_scan("bad", "p", 0, np.array([[np.nan, 1.0]]))
    assert list(tmp_path.iterdir()) == []


def test_writer_overwrite_keeps_old_until_complete(tmp_path):
    with EmbeddingStoreWriter(tmp_path / "s", dim=2) as w:
        w.add_scan("old", "p", 0, np.ones((2, 2)))
    with pytest.raises(FileExistsError):
        EmbeddingStoreWriter(tmp_path / "s", dim=2)
    with pytest.raises(RuntimeError):
        with EmbeddingStoreWriter(tmp_path / "s", dim=2, overwrite=True) as w:
            w.add_scan("new", "p", 0, np.ones((2, 2)))
            raise RuntimeError("crash")
    assert EmbeddingStore(tmp_path / "s").scan_ids == ["old"]
    with EmbeddingStoreWriter(tmp_path / "s", dim=2, overwrite=True) as w:
        w.add_scan("new", "p", 0, np.ones((2, 2)))
    assert EmbeddingStore(tmp_path / "s").scan_ids == ["new"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda w: w.add_scan("e", "p", 0, np.zeros((0, 3))), "'e': empty bag"),
        (lambda w: w.add_scan("w", "p", 0, np.zeros((2, 4))), "'w': embedding width 4 does not match the store's 3"),
        (lambda w: w.add_scan("l", "p", 2, np.zeros((2, 3))), "'l': label 2 is not 0 or 1"),
        (lambda w: w.add_scan("i", "p", 0, np.full((2, 3), np.inf)), "'i': embeddings contain NaN or inf"),
        (lambda w: w.add_scan("s", "p", 0, np.zeros((2, 3)), np.array([0, 2])), "'s': slice labels"),
        (lambda w: w.add_scan("s", "p", 0, np.zeros((2, 3)), np.array([0])), r"'s': slice_labels shape"),
        (lambda w: [w.add_scan("d", "p", 0, np.zeros((1, 3))) for _ in range(2)], "'d': duplicate"),
    ],
)
def test_writer_bad_scans(tmp_path, call, match):
    w = EmbeddingStoreWriter(tmp_path / "s", dim=3)
    with pytest.raises(ValueError, match=match):
        call(w)
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_flat_layout_opens_natively_and_imports(flat, tmp_path):
    folder, emb, sl = flat
    store = EmbeddingStore(folder)
    assert store.metadata == {}
    np.testing.assert_array_equal(store.bag(1).embeddings, emb[3:7])
    np.testing.assert_array_equal(store.bag(2).slice_labels, sl[7:9])
    copied = import_flat_layout(folder, tmp_path / "copy", metadata={"encoder": {"name": "x"}})
    assert copied.metadata["dim"] == 4 and copied.metadata["dtype"] == "float16"
    assert copied.metadata["encoder"] == {"name": "x"} and copied.metadata["n_scans"] == 3
    in_place = import_flat_layout(folder)
    assert json.loads((folder / "store.json").read_text())["n_slices"] == 9
    assert in_place.scan_ids == ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    "edit, match",
    [
        ({(1, "n_slices"): 0}, "scan 's2' is an empty bag"),
        ({(2, "n_slices"): 3}, r"scan 's3' owns rows 7..9, past the end of the embeddings array \(9 rows\)"),
        ({(1, "label"): 3}, "scan 's2': label 3 is not 0 or 1"),
        ({(0, "label"): "yes"}, "scan 's1': label='yes' is not an integer"),
        ({(1, "offset"): 2}, "scans 's1' and 's2' own overlapping"),
        ({(1, "offset"): -1}, "scan 's2' has a negative offset"),
        ({(2, "scan_id"): "s1"}, "scan_id 's1' appears more than once"),
    ],
)
def test_bad_store_index_names_file_and_scan(flat, edit, match):
    folder = flat[0]
    m = pd.read_csv(folder / "manifest.csv", dtype={"scan_id": str, "patient_id": str})
    m = m.astype(object)
    for (row, col), value in edit.items():
        m.loc[row, col] = value
    m.to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(StoreError, match=match) as info:
        EmbeddingStore(folder)
    assert "manifest.csv" in str(info.value)


def test_bad_files(flat):
    folder, emb, _ = flat
    pd.read_csv(folder / "manifest.csv").drop(columns=["patient_id"]).to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(StoreError, match=r"lacks column\(s\) \['patient_id'\]"):
        EmbeddingStore(folder)
    (folder / "manifest.csv").unlink()
    with pytest.raises(StoreError, match="manifest.csv: store index file is missing"):
        EmbeddingStore(folder)


def test_bad_arrays(flat):
    folder, emb, sl = flat
    bad = emb.astype(np.float32)
    bad[4, 1] = np.nan
    np.save(folder / "embeddings.npy", bad)
    EmbeddingStore(folder)  # the lazy default does not read every row
    with pytest.raises(StoreError, match="scan 's2' has NaN/inf embeddings"):
        EmbeddingStore(folder, check_finite=True)
    with pytest.raises(StoreError, match="scan 's2' has NaN/inf"):
        BagDataset(folder)[1]
    BagDataset(folder)[0]  # other scans still load
    np.save(folder / "embeddings.npy", emb.astype(np.int32))
    with pytest.raises(StoreError, match="dtype int32 is not float16 or float32"):
        EmbeddingStore(folder)
    np.save(folder / "embeddings.npy", emb)
    np.save(folder / "slice_labels.npy", sl[:5])
    with pytest.raises(StoreError, match=r"slice_labels.npy: expected shape \(9,\)"):
        EmbeddingStore(folder)
    sl2 = sl.copy()
    sl2[8] = 5
    np.save(folder / "slice_labels.npy", sl2)
    with pytest.raises(StoreError, match="scan 's3': slice label 5"):
        EmbeddingStore(folder)
    (folder / "store.json").write_text(json.dumps({"dim": 7}))
    with pytest.raises(StoreError, match="dim=7"):
        EmbeddingStore(folder)


def test_collate_pads_and_masks(flat):
    ds = BagDataset(flat[0], indices=[2, 0])
    assert len(ds) == 2 and ds.labels.tolist() == [1, 1] and ds.n_slices.tolist() == [2, 3]
    batch = collate_bags([ds[0], ds[1]], dtype=torch.float32)
    assert batch["embeddings"].shape == (2, 3, 4) and batch["embeddings"].dtype == torch.float32
    kept = collate_bags([ds[0], ds[1]])  # default: the float16 store's dtype is kept, values unchanged
    assert kept["embeddings"].dtype == torch.float16 and torch.equal(kept["embeddings"].float(), batch["embeddings"])
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["slice_labels"].tolist() == [[-1, 1, -1], [0, 1, 0]]
    assert batch["scan_id"] == ["s3", "s1"] and batch["index"].tolist() == [2, 0]
    assert torch.all(batch["embeddings"][0, 2] == 0)
    torch.testing.assert_close(batch["embeddings"][1], torch.from_numpy(flat[1][0:3].astype(np.float32)))
    with pytest.raises(ValueError, match="empty list"):
        collate_bags([])
    with pytest.raises(IndexError, match="indices"):
        BagDataset(flat[0], indices=[5])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_exponent_bits(dtype):
    from monai_ng.data.bag_dataset import all_finite

    info = np.finfo(dtype)
    ok = np.array([0.0, -0.0, 1.0, info.max, -info.max, info.tiny, info.smallest_subnormal], dtype=dtype)
    assert all_finite(ok)
    for bad in (np.nan, np.inf, -np.inf):
        arr = ok.copy()
        arr[3] = bad
        assert not all_finite(arr)
        assert not all_finite(np.asfortranarray(np.stack([arr, ok])))  # non-contiguous fallback


def test_all_finite_float16_every_bit_pattern():
    """The float16 word test agrees with ``np.isfinite`` on all 65,536 values, signs and NaN payloads included."""
    from monai_ng.data.bag_dataset import all_finite

    words = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = words.view(np.float16)
    expected = np.isfinite(values)
    assert expected.sum() == 63488  # 2 x 31 finite exponents x 1024 mantissas
    got = np.array([all_finite(values[i : i + 1]) for i in range(values.size)])
    np.testing.assert_array_equal(got, expected)
    assert all_finite(values[expected][::3])  # a strided 1-D view
    assert not all_finite(values[::7])  # holds inf and NaN words (multiples of 7 in 0x7C00-0x7FFF)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_all_finite_large_arrays_in_chunks(dtype):
    from monai_ng.data import bag_dataset

    chunk = bag_dataset._FINITE_CHUNK
    big = np.ones((3 * chunk // 768 + 5, 768), dtype=dtype)  # several chunks, the last one partial
    assert bag_dataset.all_finite(big)
    for flat_index in (0, chunk - 1, chunk, 2 * chunk + 7, big.size - 1):  # first, both sides of a boundary, last
        bad = big.copy()
        bad.reshape(-1)[flat_index] = np.nan
        assert not bag_dataset.all_finite(bad), flat_index


def test_collate_bfloat16(flat):
    ds = BagDataset(flat[0])
    b16 = collate_bags([ds[0], ds[2]], dtype=torch.bfloat16)
    f32 = collate_bags([ds[0], ds[2]], dtype=torch.float32)
    assert b16["embeddings"].dtype == torch.bfloat16
    torch.testing.assert_close(b16["embeddings"].float(), f32["embeddings"].to(torch.bfloat16).float())
