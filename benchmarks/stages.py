"""Timed runs of whole stages, for the stages no kernel benchmark rates (``ntkrepro.cost.stage_run``).

Hayou et al.'s recursion stages spend their time compiling and stepping sequential scalar recursions to depth
10^6-10^7 (10^5 -> 10^6 layers: 0.21 -> 0.41 CPU s), not in Gram entries, and the survey's printed formulas
theirs in a scalar Monte Carlo, quadratures and small nets' empirical NTKs, so the cost model rates them by
their own runs: each stage below is run at settings of the paper's config made smaller along its size
parameters (max_depth, n_q, Monte Carlo samples and nets), one process per run (tracking off, threads=1, results in a
temporary folder), and its CPU seconds (user + sys of the process, ``os.wait4``), wall seconds and peak RSS are
recorded with the run's units (what the paper's ``experiments/<paper>/cost.py`` declares for that config).
The cost model fits ``CPU s = fixed + sum_k slope_k x units_k`` to a stage's runs and reads the paper scale's
units off the line (``ntkrepro.cost.fit_stage_runs``).

    nice -n 10 .venv/bin/python benchmarks/stages.py          # writes results/<YYYYMMDD-HHMM>-stages.json
    .venv/bin/python benchmarks/stages.py --stages hayou2020/fig1

threads=1: an idle machine's wall time is about the CPU time, which is what the estimate states.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
import cost_table  # noqa: E402  (scripts/cost_table.py: the papers' cost models, as the cost table loads them)
from run import machine, write_record  # noqa: E402  (benchmarks/run.py: the machine record, the record file)

from ntkrepro import cost  # noqa: E402

# stage -> the overrides of each timed run, all at scale=paper (the paper's inputs, positions and pairs):
# smaller along the units the stage's cost model declares, enough runs to fit one slope per unit and the
# fixed cost, the largest run within ~1/10 of the paper-scale work of the unit it extrapolates.
RUNS = {
    "hayou2020/eoc_curves": [["params.n_q=40"], ["params.n_q=200"], ["params.n_q=400"]],
    "hayou2020/fig1": [["params.max_depth=10000"], ["params.max_depth=100000"], ["params.max_depth=1000000"]],
    "hayou2020/theorem_checks": [["params.max_depth=10000"], ["params.max_depth=100000"],
                                 ["params.max_depth=1000000"]],
    "hayou2020/cnn_checks": [["params.max_depth=10000", "params.mc_samples=4", "params.mc_channels=64"],
                             ["params.max_depth=100000", "params.mc_samples=4", "params.mc_channels=64"],
                             ["params.max_depth=10000", "params.mc_samples=16", "params.mc_channels=512"],
                             ["params.max_depth=10000", "params.mc_samples=8", "params.mc_channels=512"]],
    "golikov2022/printed_formulas": [
        ["params.relu.mc_samples=400000", "params.scalar.draws=16", "params.fc.draws=16", "params.cnn.draws=32"],
        ["params.relu.mc_samples=4000000", "params.scalar.draws=16", "params.fc.draws=16", "params.cnn.draws=32"],
        ["params.relu.mc_samples=400000", "params.scalar.draws=64", "params.fc.draws=64", "params.cnn.draws=128"],
        ["params.relu.mc_samples=400000"]],
}


def stage_units(stage: str, overrides: list[str]) -> dict:
    """The units the paper's cost model declares for ``stage`` at scale=paper with ``overrides``."""
    work = [w for w in cost_table.workloads(stage, "paper", overrides=overrides) if w.kind == "stage_run"]
    if len(work) != 1:
        raise SystemExit(f"stages.py: {stage}'s cost model declares {len(work)} stage_run workloads, not one")
    return dict(work[0].size["units"])


def timed_run(stage: str, overrides: list[str], results: Path) -> dict:
    """One run of the stage in its own process: CPU, wall seconds and peak RSS of that process."""
    paper, artifact = stage.split("/")
    cmd = [sys.executable, str(ROOT / "experiments" / paper / f"{artifact}.py"), "scale=paper",
           f"results_root={results}", "tracking=disabled", "threads=1", "progress=false", *overrides]
    log = results / f"{paper}_{artifact}_{len(list(results.glob('*.log')))}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stages.py: {' '.join(cmd)} failed: {log.read_text().strip().splitlines()[-1]}")
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime, "wall_seconds": wall,
            "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", default=",".join(RUNS), help="comma-separated stages (default: all of RUNS)")
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    stages = a.stages.split(",")
    unknown = sorted(set(stages) - set(RUNS))
    if unknown:
        p.error(f"--stages: no timed runs declared for {unknown} (stages: {', '.join(RUNS)})")
    plan = [(stage, overrides, stage_units(stage, overrides)) for stage in stages for overrides in RUNS[stage]]
    load = [os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ntkrepro-stages-") as tmp:
        for i, (stage, overrides, units) in enumerate(plan, 1):
            row = {"stage": stage, "scale": "paper", "overrides": overrides, "units": units,
                   **timed_run(stage, overrides, Path(tmp)), "loadavg_1m": os.getloadavg()[0]}
            rows.append(row)
            print(f"[stages] {i}/{len(plan)} {stage} {' '.join(overrides)}: {row['cpu_seconds']:.1f} CPU s, "
                  f"{row['wall_seconds']:.1f} s wall, {row['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    load.append(os.getloadavg())
    fits = {stage: cost.fit_stage_runs([r for r in rows if r["stage"] == stage]) for stage in stages}
    result = {"study": "stages", "rows": rows, "fits": fits, "loadavg_start_end": load, "machine": machine(),
              "args": {"stages": stages},
              "note": "one process per run at scale=paper with the overrides, tracking off, threads=1; cpu_seconds "
                      "= user + sys of that process (what the cost model fits: ntkrepro.cost.fit_stage_runs)"}
    print(write_record(a.results_dir, "stages", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
