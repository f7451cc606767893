"""Run every benchmark and assemble ``benchmarks/README.md``.

    python benchmarks/run_all.py [--only NAME ...] [--skip NAME ...] [--no-run]

Each ``bench_<area>.py`` prints its table and writes ``results/<area>.json`` and ``results/<area>.md``.
This script runs them one after the other (so they don't compete for the cores), records each script's
wall time and peak resident memory, and writes ``benchmarks/README.md`` from the per-area tables.
``--no-run`` only re-assembles the README from the results already on disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["metrics", "femur", "synthesis", "diffusion", "segmentation", "slicer", "demo"]


def machine() -> str:
    """The shared description plus total memory."""
    try:
        kb = int(Path("/proc/meminfo").read_text(encoding="utf-8").split()[1])
        return f"{_machine.machine()}, {kb / 1024 ** 2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return _machine.machine()


def run_one(name: str) -> dict:
    script = HERE / f"bench_{name}.py"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=HERE.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    return {"name": name, "exit_code": code, "wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def assemble(runs: list[dict]) -> str:
    parts = [
        "# BoneMet benchmarks",
        "",
        "Produced by `python benchmarks/run_all.py` (one command; each `bench_<area>.py` can also run alone).",
        "Tables below are the latest committed figures; each names the machine it ran on.",
        "No GPU was lent to the sessions that produced them, so every figure is CPU-only; the paper-size presets",
        "are measured on CPU where feasible and the GPU columns stay empty until a GPU run is recorded.",
        "",
    ]
    if runs:
        parts += ["## Run summary", "", f"Machine: {machine()}  ", f"Date: {dt.date.today().isoformat()}", "",
                  "| benchmark | exit | wall (s) | peak RSS (MiB) |", "|---|---|---|---|"]
        parts += [f"| {r['name']} | {r['exit_code']} | {r['wall_s']} | {r['peak_rss_mib']} |" for r in runs]
        parts.append("")
    names = ORDER + sorted(p.stem for p in RESULTS.glob("*.md") if p.stem not in ORDER)
    for name in names:
        md = RESULTS / f"{name}.md"
        if md.exists():
            parts += [md.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(parts) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--no-run", action="store_true")
    args = ap.parse_args()
    available = [n for n in ORDER if (HERE / f"bench_{n}.py").exists()]
    available += sorted(p.stem[6:] for p in HERE.glob("bench_*.py") if p.stem[6:] not in available)
    todo = [n for n in (args.only or available) if n not in args.skip]
    runs = []
    if not args.no_run:
        for name in todo:
            print(f"== bench_{name}.py", flush=True)
            runs.append(run_one(name))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "run_all.json").write_text(json.dumps({"machine": machine(), "runs": runs}, indent=2))
    elif (RESULTS / "run_all.json").exists():
        runs = json.loads((RESULTS / "run_all.json").read_text())["runs"]
    (HERE / "README.md").write_text(assemble(runs), encoding="utf-8")
    print(f"wrote {HERE / 'README.md'}")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
