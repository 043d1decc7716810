"""End-to-end wall time and peak RSS of ``llmrec-gen recommend --user 42`` (the README's command).

Runs the installed CLI as a subprocess ``--runs`` times (the first call converts the model and
fills the calibration cache if they are cold; later calls are warm) and prints, per run, the
wall seconds and the child's peak resident memory, then the warm median last::

    python benchmarks/bench_recommend_cli.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--user", default="42")
    args = parser.parse_args()
    exe = shutil.which("llmrec-gen") or os.path.join(os.path.dirname(sys.executable), "llmrec-gen")
    walls = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        r = subprocess.run([exe, "recommend", "--user", args.user], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        # peak RSS of the largest child so far (each run is one child: the max over runs)
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if r.returncode:
            sys.exit(f"run {i + 1}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        walls.append(wall)
        load = os.getloadavg()[0]
        print(f"run {i + 1}: wall {wall:.2f} s, peak RSS so far {rss_mb:.0f} MB, load {load:.2f}")
    warm = walls[1:] or walls
    print(f"recommend_wall_s_median_warm={statistics.median(warm):.2f} peak_rss_mb={rss_mb:.0f}")


if __name__ == "__main__":
    main()
