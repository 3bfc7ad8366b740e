"""Wall time of the README's first command, ``monai-ng demo``, from a cold start: a fresh process (package import
included) writing into an empty output folder (phantom data and embedding included), as ``make demo`` runs it once
``.venv`` exists.

    python3 benchmarks/bench_demo.py                       # the default demo; JSON to benchmarks/results/demo.json
    python3 benchmarks/bench_demo.py --limit 600 -- --scans 120 --epochs 20     # arguments after -- go to the demo

Records the machine (CPU model, cores), the load average before and after (other jobs sharing the cores inflate
wall time: compare the CPU time of the demo process too), the demo's own per-stage times, its results table, and
whether the run stayed within ``--limit`` seconds (the target of issue 9: 600 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine_info import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def monai_ng_command() -> list[str]:
    """The ``monai-ng`` console script next to this interpreter, else ``python -m monai_ng``."""
    script = Path(sys.executable).with_name("monai-ng")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monai_ng"]


def run_demo(demo_args: list[str], out: Path) -> dict:
    """Run the demo once in a fresh process; wall and CPU seconds, exit status, stage times and the printed table."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_start = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(
        [*monai_ng_command(), "demo", "--out", str(out), *demo_args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout = proc.stdout
    done = _last_line(stdout, "Done in")  # "Done in 105 s (phantom data + ingest 37 s, embed 46 s, ...)."
    parts = done.partition("(")[2].rstrip(").").split(", ") if done else []
    stages = {m.group(1): float(m.group(2)) for m in (re.fullmatch(r"(.+) (\d+) s", p.strip()) for p in parts) if m}
    table = stdout.split("mean ± std over splits):", 1)[-1].split("\n\n", 1)[0].strip() if proc.returncode == 0 else ""
    return {
        "command": "monai-ng demo --out OUT " + " ".join(demo_args),
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "stages_s": stages,
        "table": table,
        "stdout_tail": stdout[-6000:],
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
    }


def _last_line(text: str, prefix: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    demo_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=600.0, help="target wall seconds (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "demo.json")
    parser.add_argument("--keep", type=Path, default=None, help="write the demo here and keep it (default: a temp dir)")
    args = parser.parse_args(own)

    info = machine_info()
    temp = None
    if args.keep is None:
        temp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
        out = temp / "demo"
    else:
        out = args.keep
        shutil.rmtree(out, ignore_errors=True)  # cold start: no reused data or store
    try:
        result = run_demo(demo_args, out)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    result.update(machine=info, limit_s=args.limit, within_limit=result["wall_s"] <= args.limit)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    print(f"machine: {info['cpu']}, nproc {info['nproc']}, torch {info['torch']}")
    print(f"command: {result['command']}")
    print(f"exit status {result['returncode']}; wall {result['wall_s']} s (limit {args.limit:.0f} s: ", end="")
    print(("met" if result["within_limit"] else "NOT met") + f"); CPU {result['cpu_s']} s")
    print(f"load average: start {result['loadavg_start']}, end {result['loadavg_end']}")
    print("stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["stages_s"].items()))
    if result["table"]:
        print(result["table"])
    if result["returncode"]:
        print(result["stderr_tail"], file=sys.stderr)
    print(f"JSON: {args.json}")
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
