"""Print the reliability figures of ``docs/reliability.md`` (issue 11): mutants, kill points, bad stores, markers.

Run from the repository root (CPU only, a few minutes on 2 cores)::

    .venv/bin/python tests/reliability/reliability_figures.py                 # everything
    .venv/bin/python tests/reliability/reliability_figures.py --only mutants --mutants 2000 --seed 0

* mutants: ``--mutants`` random mutations (:mod:`reliability.dicom_mutants`) of valid CT files, each read the
  project's way and pydicom's way (:func:`~reliability.dicom_mutants.compare_with_pydicom`).
* kills: ``monai-ng embed`` killed with SIGKILL at each reachable moment (work folder made, after each shard, while
  merging, store written, clean-up), plus the states a kill inside the final clean-up leaves; each is resumed and
  the store compared byte for byte with an uninterrupted run.
* stores: broken embedding stores given to ``monai-ng experiment``: refused cleanly = non-zero exit, a message
  naming the store, no traceback, nothing written.
* markers: the identifier-marker chain of :mod:`reliability.marker_chain`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (helpers) when run as a script

from reliability.dicom_mutants import compare_with_pydicom, draw_mutation, mutate, seed_files  # noqa: E402

STORE_FILES = ("embeddings.npy", "manifest.csv", "slice_labels.npy", "store.json", "failures.csv")


# ------------------------------------------------------------------------------------------------------- mutants
def mutant_figures(n: int, seed: int) -> dict[str, int]:
    seeds = seed_files()
    rng = np.random.default_rng(seed)
    counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as folder:
        for i in range(n):
            mutation = draw_mutation(lambda lo, hi: int(rng.integers(lo, hi + 1)))
            path = Path(folder) / f"mutant{i:05d}.dcm"
            path.write_bytes(mutate(seeds, mutation))
            outcome, detail = compare_with_pydicom(path)
            counts[outcome] += 1
            if outcome not in ("agree", "refused"):
                print(f"  {outcome}: mutation {mutation}: {detail[:200]}")
    return {
        "mutants tried": n,
        "agree with pydicom": counts["agree"],
        "refused clearly (ValueError naming the file)": counts["refused"],
        "silent differences": counts["silent_difference"],
        "accepted although pydicom refuses": counts["accepts_what_pydicom_refuses"],
        "errors without the file name": counts["unnamed_error"],
        "error messages quoting an identifier": counts["leaks_identifier"],
    }


# --------------------------------------------------------------------------------------------------------- kills
def _phantom_manifest(root: Path) -> Path:
    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series
    from monai_ng.data.scan_manifest import scan_manifest_row, write_scan_manifest

    rows = []
    for i in range(6):
        vol = make_phantom_volume("head", n_slices=3 + i % 3, size=32, lesion=bool(i % 2), seed=i)
        recs = write_dicom_series(vol, root / f"s{i}", patient_id=f"P{i}", seed=i)
        rows.append(
            scan_manifest_row(f"scan{i}", f"P{i}", vol.label, recs, vol.lesion_slices.astype(int).tolist(), "ich")
        )
    return write_scan_manifest(pd.DataFrame(rows), root / "manifest.csv")


def _embed_command(manifest: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "monai_ng.cli", "embed", "--manifest", str(manifest), "--out", str(out),
            "--encoder", "vit_tiny_patch16_224", "--weights", "random-init", "--image-size", "32",
            "--batch-size", "4", "--workers", "0", "--scans-per-shard", "1", "--device", "cpu", "--no-progress"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _same_store(a: Path, b: Path) -> bool:
    return all((a / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes() for f in STORE_FILES)


def _resume_identical(manifest: Path, out: Path, reference: Path) -> bool:
    done = subprocess.run(_embed_command(manifest, out), env=_env(), capture_output=True, text=True, timeout=600)
    parts = out.parent / f"{out.name}.parts"
    return done.returncode == 0 and _same_store(out, reference) and not parts.exists()


def kill_figures() -> dict[str, int]:
    root = Path(tempfile.mkdtemp(prefix="kills-"))
    try:
        manifest = _phantom_manifest(root)
        reference = root / "reference"
        subprocess.run(_embed_command(manifest, reference), env=_env(), check=True, capture_output=True, timeout=600)
        events: list[tuple[str, Callable[[Path], bool]]] = [
            ("work folder made", lambda out: (out.parent / f"{out.name}.parts").exists()),
            *[
                (
                    f"shard {k} written",
                    lambda out, k=k: (out.parent / f"{out.name}.parts/shards/part-{k:06d}.npz").exists(),
                )
                for k in range(6)
            ],
            ("store being merged", lambda out: any(out.parent.glob(f".{out.name}.tmp-*"))),
            ("store written", lambda out: out.exists()),
            ("failures.csv written", lambda out: (out / "failures.csv").exists()),
        ]
        tried = identical = 0
        for name, reached in events:
            out = root / f"kill-{tried:02d}"
            proc = subprocess.Popen(
                _embed_command(manifest, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            while proc.poll() is None and not reached(out):
                time.sleep(0.002)
            hit = proc.poll() is None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            ok = _resume_identical(manifest, out, reference)
            tried += 1
            identical += ok
            print(f"  kill at {name!r} ({'reached' if hit else 'run had already finished'}): resumed identically: {ok}")
        # the states a kill inside the final clean-up leaves (too short a window to hit with a signal)
        for name in ("work folder half removed", "store written, failures.csv not yet"):
            out = root / f"state-{tried:02d}"
            shutil.copytree(reference, out)
            shards = out.parent / f"{out.name}.parts" / "shards"
            if name.startswith("work"):
                shards.mkdir(parents=True)
                (shards / "part-000003.npz").write_bytes(b"partly removed")
            else:
                kept = root / f"keep-{tried:02d}"
                subprocess.run(_embed_command(manifest, kept) + ["--keep-work-dir"], env=_env(), check=True,
                               capture_output=True, timeout=600)  # fmt: skip
                shutil.copytree(kept.parent / f"{kept.name}.parts", out.parent / f"{out.name}.parts")
                (out / "failures.csv").unlink()
            ok = _resume_identical(manifest, out, reference)
            tried += 1
            identical += ok
            print(f"  state {name!r}: resumed identically: {ok}")
        return {"kill points tried": tried, "resumed identically": identical}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -------------------------------------------------------------------------------------------------------- stores
def _bad_stores(good: Path, root: Path) -> dict[str, Path]:
    def variant(name: str, edit: Callable[[Path], None]) -> None:
        path = root / name
        shutil.copytree(good, path)
        edit(path)
        stores[name] = path

    def edit_index(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
        def apply(path: Path) -> None:
            frame = pd.read_csv(path / "manifest.csv", dtype={"patient_id": str}, keep_default_na=False)
            change(frame).to_csv(path / "manifest.csv", index=False)

        return apply

    def set_cells(column: str, values: dict[int, object]) -> Callable[[pd.DataFrame], pd.DataFrame]:
        def change(frame: pd.DataFrame) -> pd.DataFrame:
            frame[column] = frame[column].astype(object)
            for row, value in values.items():
                frame.loc[row, column] = value
            return frame

        return change

    def edit_json(key: str, value: object) -> Callable[[Path], None]:
        def apply(path: Path) -> None:
            meta = json.loads((path / "store.json").read_text())
            meta[key] = value
            (path / "store.json").write_text(json.dumps(meta))

        return apply

    def nan_embeddings(path: Path) -> None:
        emb = np.load(path / "embeddings.npy")
        emb[3, 1] = np.nan
        np.save(path / "embeddings.npy", emb)

    stores: dict[str, Path] = {}
    variant("embeddings.npy missing", lambda p: (p / "embeddings.npy").unlink())
    variant(
        "embeddings.npy truncated",
        lambda p: (p / "embeddings.npy").write_bytes((p / "embeddings.npy").read_bytes()[:300]),
    )
    variant("NaN embedding", nan_embeddings)
    variant("store.json not JSON", lambda p: (p / "store.json").write_text("{not json"))
    # (store.json itself is optional: a flat folder of embeddings.npy + manifest.csv is a valid store)
    variant("store.json dim wrong", edit_json("dim", 9))
    variant("store.json n_slices wrong", edit_json("n_slices", 7))
    variant("unknown format version", edit_json("version", 99))
    variant("store index missing", lambda p: (p / "manifest.csv").unlink())
    variant("store index row dropped", edit_index(lambda f: f.drop(index=2)))
    variant("n_slices changed", edit_index(set_cells("n_slices", {0: 3})))
    variant("offsets overlap", edit_index(set_cells("offset", {1: 0})))
    variant("duplicate scan id", edit_index(set_cells("scan_id", {1: "scan000"})))
    variant("label 2", edit_index(set_cells("label", {0: 2})))
    variant("label not a number", edit_index(set_cells("label", {0: "yes"})))
    variant("empty patient id", edit_index(set_cells("patient_id", {0: ""})))
    variant("only negative scans", edit_index(set_cells("label", dict.fromkeys(range(12), 0))))
    variant("two patients", edit_index(set_cells("patient_id", {i: f"p{i % 2}" for i in range(12)})))
    variant("slice_labels.npy wrong length", lambda p: np.save(p / "slice_labels.npy", np.zeros(5, np.int8)))
    variant(
        "slice label 5",
        lambda p: np.save(p / "slice_labels.npy", np.full(np.load(p / "slice_labels.npy").shape, 5, np.int8)),
    )
    variant("empty folder", lambda p: [f.unlink() for f in p.iterdir()])
    return stores


def store_figures() -> dict[str, int]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import write_easy_store

    from monai_ng.cli import main

    root = Path(tempfile.mkdtemp(prefix="stores-"))
    try:
        good = write_easy_store(root / "good", n_bags=12, dim=8)
        stores = _bad_stores(good, root / "bad")
        refused = 0
        for name, path in stores.items():
            out = root / "out" / name.replace(" ", "_")
            err = io.StringIO()
            crashed = ""
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    rc = main(["experiment", "--data", str(path), "--out", str(out), "--methods", "max pool",
                               "--epochs", "1", "--seeds", "1001", "--threads", "1"])  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - an escaping exception is a finding
                rc, crashed = -1, f"{type(exc).__name__}: {exc}"
            message = err.getvalue()
            clean = rc not in (0, -1) and "Traceback" not in message and str(path) in message and not out.exists()
            refused += clean
            print(
                f"  {name}: {'refused cleanly' if clean else 'NOT refused cleanly'} (rc {rc}) {crashed or message.strip()[:160]}"
            )
        return {"bad stores tried": len(stores), "refused cleanly": refused}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- markers
def marker_figures() -> dict[str, int]:
    from reliability.marker_chain import run_marked_chain

    folder = Path(tempfile.mkdtemp(prefix="markers-"))
    cwd = Path.cwd()
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        os.chdir(folder)
        lines, found = run_marked_chain(folder)
        outputs = [p for p in folder.rglob("*") if p.is_file() and not p.is_relative_to(folder / "ich")]
        for item in found:
            print(f"  marker found: {item}")
        return {"output files searched": len(outputs), "log lines searched": len(lines), "markers found": len(found)}
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("mutants", "kills", "stores", "markers"), action="append")
    parser.add_argument("--mutants", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = args.only or ["mutants", "kills", "stores", "markers"]
    for part in parts:
        start = time.perf_counter()
        print(f"== {part}")
        if part == "mutants":
            figures = mutant_figures(args.mutants, args.seed)
        elif part == "kills":
            figures = kill_figures()
        elif part == "stores":
            figures = store_figures()
        else:
            figures = marker_figures()
        for key, value in figures.items():
            print(f"{key}: {value}")
        print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
