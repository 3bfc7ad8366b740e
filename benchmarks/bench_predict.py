"""``monai-ng predict`` on one DICOM series, timed by stage in one run: imports, model build, weights, discovery,
load, encode, MIL network, write (JSON + CSV + PNG + KOS + SC).

Setup (not timed): a phantom head CT series (default 40 slices of 512 x 512, written as DICOM files) and a copy of the
head bundle whose ``inference.json`` uses a random-init ViT (default ``vit_small_patch16_224``, 224 x 224, 3 windows)
with a random ``models/model.pt`` (= ``network_def.state_dict()``) and the matching ``models/embedding.json``.

Timed: a fresh Python process (``python -m monai_ng.cli predict`` semantics, through
:func:`monai_ng.bundle.predict`) that records the time its imports take and the stage timings the run reports; the
parent adds the process's wall time (interpreter start included). Then the bare encoder forward on the same slice
batch shapes in the same fresh-process setting, for the "fixed overhead beyond the encoder" figure (issue 9 §6:
<= 2 s).

    python3 benchmarks/bench_predict.py                                  # vit_small, CPU
    python3 benchmarks/bench_predict.py --encoder vit_base_patch16_224 --device cuda --amp bf16   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> None:
    """Run one prediction in this (fresh) process and print its timings as JSON."""
    t0 = time.perf_counter()
    import torch  # noqa: F401  (counted in the imports)

    from monai_ng.bundle import predict

    imports = time.perf_counter() - t0
    summary = predict(
        args.input, args.out, bundle=args.bundle, device=args.device, progress=False, overrides={"amp": args.amp}
    )
    seconds = {"imports": imports, **summary.seconds}
    seconds["in_process_total"] = time.perf_counter() - t0
    print("BENCH " + json.dumps({"seconds": seconds, "ok": summary.ok, "slices": summary.results[0].num_slices}))


def _child_bare(args: argparse.Namespace) -> None:
    """The bare encoder forward on [slices, 3, 224, 224] in batches of slice_batch_size, in a fresh process."""
    import torch

    from monai_ng.bundle import build_slice_encoder

    encoder = build_slice_encoder(args.encoder, None, in_chans=3, image_size=224, amp=args.amp).to(args.device)
    x = torch.rand(args.slices, 3, 224, 224)
    encoder(x[:2])  # warm-up of the first call, as predict's first batch pays it too
    t = time.perf_counter()
    for i in range(0, args.slices, 64):
        encoder(x[i : i + 64])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    print("BENCH " + json.dumps({"bare_encode": time.perf_counter() - t}))


def _setup(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    import torch
    from monai.bundle import ConfigParser

    from monai_ng.data.phantom import make_phantom_volume, write_dicom_series

    series = root / "dicom"
    volume = make_phantom_volume("head", n_slices=args.slices, size=args.size, seed=0)
    write_dicom_series(volume, series, patient_id="BENCH-0001", seed=0)
    bundle = root / "bundle"
    shutil.copytree(
        REPO / "bundles" / "head_ct_hemorrhage_localization",
        bundle,
        ignore=shutil.ignore_patterns("models", "eval", "__pycache__"),
    )
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config.update({"encoder_name": args.encoder, "image_size": 224, "amp": args.amp})
    config_path.write_text(json.dumps(config, indent=4))
    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser.update({"bundle_root": str(bundle)})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    encoder = parser.get_parsed_content("encoder_def")
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    spec = {"encoder": encoder.metadata, "preprocessing": parser.get_parsed_content("stack_loader").describe()}
    (bundle / "models" / "embedding.json").write_text(json.dumps(spec))
    return series, bundle


def _run_child(argv: list[str]) -> tuple[dict, float]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    return json.loads(line[6:]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_small_patch16_224")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none")
    parser.add_argument("--child", choices=("predict", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "predict":
        return _child(args)
    if args.child == "bare":
        return _child_bare(args)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine_info import machine_info

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        series, bundle = _setup(root, args)
        common = ["--encoder", args.encoder, "--slices", str(args.slices), "--device", args.device, "--amp", args.amp]
        result, wall = _run_child(
            [*common, "--child", "predict", "--input", str(series), "--bundle", str(bundle), "--out", str(root / "out")]
        )
        bare, _ = _run_child([*common, "--child", "bare"])
        outputs = sorted(p.name.split(".", 1)[-1] for p in (root / "out").iterdir())
    s = result["seconds"]
    s["process_wall"] = wall
    fixed = s["imports"] + s["build"] + s["weights"] + s["write"]
    report = {
        "machine": {**info, "loadavg_end": os.getloadavg()},
        "command": "python3 benchmarks/bench_predict.py " + " ".join(sys.argv[1:]),
        "series": f"{result['slices']} slices of {args.size}x{args.size} (phantom head CT DICOM)",
        "encoder": args.encoder,
        "seconds": {k: round(v, 3) for k, v in s.items()},
        "bare_encode": round(bare["bare_encode"], 3),
        "fixed_overhead_imports_build_weights_write": round(fixed, 3),
        "beyond_encoder": round(s["process_wall"] - s["encode"], 3),
        "outputs": outputs,
        "ok": result["ok"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
