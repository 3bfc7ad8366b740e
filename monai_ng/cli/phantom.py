"""``monai-ng phantom``: write phantom CT data (a DICOM series, NIfTI volumes, or an RSNA challenge layout).

Examples::

    monai-ng phantom --layout ich --out /tmp/ich --n 6 --seed 0
    monai-ng phantom --layout series --region chest --n 40 --size 512 --out /tmp/chest_series
    monai-ng phantom --layout nifti --region abdomen --n 3 --out /tmp/nifti
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from monai_ng.data.phantom import (
    PIXEL_MODES,
    REGIONS,
    TRANSFER_SYNTAXES,
    make_phantom_volume,
    write_dicom_series,
    write_nifti,
    write_rsna_abdominal,
    write_rsna_ich,
    write_rsna_pe,
)

LAYOUTS = ("ich", "pe", "abdominal", "series", "nifti")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``phantom`` options to ``parser``."""
    parser.add_argument("--layout", choices=LAYOUTS, required=True, help="what to write")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--n",
        type=int,
        default=4,
        help="scans (ich, pe, nifti), patients (abdominal) or slices of the single series (series)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--region", choices=REGIONS, default="head", help="body region (series, nifti)")
    parser.add_argument("--size", type=int, default=None, help="in-plane pixels (default 32; 64 for series/nifti)")
    parser.add_argument("--slices", type=int, default=16, help="slices per NIfTI volume (nifti)")
    parser.add_argument("--no-lesion", action="store_true", help="series / nifti: write lesion-free volumes")
    parser.add_argument("--transfer-syntax", choices=sorted(TRANSFER_SYNTAXES), default="explicit_le")
    parser.add_argument("--pixel-mode", choices=sorted(PIXEL_MODES), default="signed16")


def run(args: argparse.Namespace) -> int:
    """Write the requested phantom data and a ``ground_truth.json`` summary; returns 0 on success."""
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.layout in ("ich", "pe", "abdominal"):
        size = args.size or 32
        writer = {"ich": write_rsna_ich, "pe": write_rsna_pe, "abdominal": write_rsna_abdominal}[args.layout]
        truth = writer(out, args.n, args.seed, size=size)
        truth.to_json(out / "ground_truth.json", orient="records", indent=1)
        print(f"wrote {len(truth)} scans ({int(truth['label'].sum())} positive) in the {args.layout} layout to {out}")
        return 0
    size = args.size or 64
    if args.layout == "series":
        vol = make_phantom_volume(args.region, args.n, size, lesion=not args.no_lesion, rng=rng)
        records = write_dicom_series(
            vol,
            out,
            patient_id=f"PHANTOM{args.seed:04d}",
            transfer_syntax=args.transfer_syntax,
            pixel_mode=args.pixel_mode,
            seed=rng,
        )
        summary = {
            "region": args.region,
            "n_slices": vol.n_slices,
            "size": size,
            "spacing_zyx_mm": list(vol.spacing),
            "label": vol.label,
            "slice_labels": vol.lesion_slices.astype(int).tolist(),
            "sop_uids": [r.sop_instance_uid for r in records],
        }
        (out / "ground_truth.json").write_text(json.dumps(summary, indent=1))
        print(f"wrote a {args.region} series of {vol.n_slices} slices ({size}x{size}) to {out}")
        return 0
    rows = []
    for i in range(args.n):
        vol = make_phantom_volume(args.region, args.slices, size, lesion=not args.no_lesion, rng=rng)
        path = write_nifti(vol, out / f"{args.region}_{i:04d}.nii.gz")
        rows.append({"path": path.name, "label": vol.label, "slice_labels": vol.lesion_slices.astype(int).tolist()})
    (out / "ground_truth.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.n} NIfTI {args.region} volumes to {out}")
    return 0
