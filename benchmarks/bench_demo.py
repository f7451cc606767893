"""Wall time and peak memory of ``bonemet demo`` (the README's main job), stage by stage.

    python benchmarks/bench_demo.py [--preset small|quick] [--out DIR]

Writes results/demo.json and results/demo.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _machine

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--out", default=None, help="demo output folder (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bonemet-demo-bench-")) / "run"
    env = {**os.environ, "BONEMET_PROGRESS": "off"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bonemet", "demo", "--preset", args.preset, "--out", str(out)],
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    stages = {}
    for name in ("cohort", "femur", "synthesis", "ddpm", "refine", "experiment", "variability", "report"):
        f = out / "stages" / f"{name}.json"
        if f.exists():
            stages[name] = json.loads(f.read_text(encoding="utf-8")).get("seconds")
    machine = _machine.machine()
    res = {"preset": args.preset, "exit_code": code, "wall_s": round(wall, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stages_s": stages, "machine": machine,
           "date": dt.date.today().isoformat(), "out": str(out)}
    lines = [f"## Demo (`bonemet demo --preset {args.preset}`)", "",
             f"Machine: {machine}. Date: {res['date']}. Exit code {code}.", "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in stages.items()]
    lines += [f"| **total wall time** | **{res['wall_s']}** |", "",
              f"Peak resident memory of the demo process tree: {res['peak_rss_mib']} MiB.", ""]
    md = "\n".join(lines)
    print(md)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "demo.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    (HERE / "results" / "demo.md").write_text(md, encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
