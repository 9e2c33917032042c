"""A sweep of 5 interventions on the default study, with and without the stage cache.

    python tests/benchmarks/bench_sweep.py            # ~10 minutes on 2 cores

Runs `anatomy -m intervention=none,feature_ablation,feature_steering,data_filtering,data_reweighting
eval.compare_baseline=false` twice, in a fresh cache and with ANATOMY_NO_CACHE=1, and prints the
sweep's wall time as a ratio to (one audit + the 5 jobs' trainer-only time: intervention + train +
eval, from their metrics.json). Target: <= 1.2 with the cache.

Measured on 2 cores (torch default threads), with DPO's reference log-probs cached too (jobs 2-5
reuse job 1's, so the cached sweep's train s is also lower):

           sweep   wall s  audit s  train s  ratio  cache/model per job
     stage cache    168.4     42.8    116.8   1.05  [0, 1, 1, 1, 1]
        no cache    340.5     41.2    135.4   1.93  [0, 0, 0, 0, 0]
    cache speedup: 2.02x; target ratio <= 1.2: PASS

(Before the reference log-probs were cached: 165.0 s against 296.3 s, a 1.80x speedup.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "intervention=none,feature_ablation,feature_steering,data_filtering,data_reweighting",
         "eval.compare_baseline=false"]
AUDIT = ("data", "model", "sae", "features", "hypotheses", "evidence")
TRAIN = ("intervention", "train", "eval")


def sweep(workdir: Path, no_cache: bool) -> tuple[float, list[dict]]:
    env = {**os.environ, "TQDM_DISABLE": "1", "ANATOMY_CACHE": str(workdir / "cache")}
    if no_cache:
        env["ANATOMY_NO_CACHE"] = "1"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "anatomy.cli", *SWEEP, f"hydra.sweep.dir={workdir / 'sweep'}"],
                   cwd=workdir, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    jobs = [json.loads((workdir / "sweep" / str(i) / "metrics.json").read_text()) for i in range(5)]
    return wall, jobs


def main() -> None:
    rows = []
    for no_cache in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            wall, jobs = sweep(Path(tmp), no_cache)
        audit = sum(jobs[0][f"timing/{s}_s"] for s in AUDIT)
        train = sum(j[f"timing/{s}_s"] for j in jobs for s in TRAIN)
        cached = [int(j["cache/model"]) for j in jobs]
        rows.append(("no cache" if no_cache else "stage cache", wall, audit, train, wall / (audit + train), cached))
    print(f"threads: torch default, cores: {os.cpu_count()}")
    print(f"{'sweep':>12} {'wall s':>8} {'audit s':>8} {'train s':>8} {'ratio':>6}  cache/model per job")
    for name, wall, audit, train, ratio, cached in rows:
        print(f"{name:>12} {wall:>8.1f} {audit:>8.1f} {train:>8.1f} {ratio:>6.2f}  {cached}")
    print(f"cache speedup: {rows[1][1] / rows[0][1]:.2f}x; target ratio <= 1.2: "
          f"{'PASS' if rows[0][4] <= 1.2 else 'FAIL'}")


if __name__ == "__main__":
    main()
