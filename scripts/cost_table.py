"""What every stage costs at a scale: CPU-hours, GPU-hours, the memory it needs and the memory of its cluster job.

    python scripts/cost_table.py --scale paper                      # every stage (snakemake cost)
    python scripts/cost_table.py --scale paper --stage arora2019/table1 --detail
    python scripts/cost_table.py --scale paper --json

The edge of the cost model (``ntkrepro.cost``, which knows no paper): it loads each paper's workloads,
``experiments/<paper>/cost.py`` (``WORKLOADS = {artifact: fn}``, ``fn(cfg) -> list[Workload]``), for the hours,
and each stage script's ``Params``, whose checks estimate the arrays the stage allocates
(``checks.refuse_oversized``, recorded here instead of refusing), for the memory: one estimate, which this
table shows as the peak and the Snakefile asks for as a stage job's memory (:func:`stage_mem_mb`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

from ntkrepro import config, cost
from ntkrepro.checks import array_bytes, recording_estimates
from ntkrepro.stage import stage_module

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def paper_models(paper: str, experiments: Path | str = EXPERIMENTS) -> dict[str, Callable]:
    """``WORKLOADS`` of ``<experiments>/<paper>/cost.py`` (empty when the paper has none)."""
    path = Path(experiments) / paper / "cost.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"ntkrepro_cost_{paper}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(getattr(module, "WORKLOADS", {}))


def workloads(stage: str, scale: str, experiments: Path | str = EXPERIMENTS,
              overrides: Iterable[str] = ()) -> list[cost.Workload]:
    """What ``stage`` (``<paper>/<artifact>``) computes at ``scale``, from its paper's cost model and its
    registered config (with Hydra ``overrides``). Raises CostError when the paper declares no cost model for it."""
    if stage.count("/") != 1:
        raise cost.CostError(f"stage must be '<paper>/<artifact>', got {stage!r}")
    paper, artifact = stage.split("/")
    models = paper_models(paper, experiments)
    if artifact not in models:
        raise cost.CostError(f"no cost model for {stage}: experiments/{paper}/cost.py declares "
                             f"{sorted(models) or 'none'}")
    return list(models[artifact](cost.stage_config(stage, scale, overrides)))


@cache
def memory_estimates(stage: str, scale: str) -> tuple[tuple, ...]:
    """The arrays ``stage`` estimates before allocating, at ``scale`` as registered in ``conf/``: the
    ``(parameter path, value, unit bytes, power, what)`` its ``refuse_oversized`` checks compare with the
    machine's memory (none refused here: the job may run on a larger node)."""
    cfg = config.compose(stage, [f"scale={scale}"])
    with recording_estimates() as found:
        config.validate(cfg, stage_module(stage).Params)
    return tuple(found)


def estimate(stage: str, scale: str, *, rates=None, experiments: Path | str = EXPERIMENTS) -> cost.StageCost:
    """The cost of running ``stage`` at ``scale`` (rates: ``cost.load_rates()`` unless given)."""
    work = workloads(stage, scale, experiments)
    return cost.stage_cost(stage, work, cost.load_rates() if rates is None else rates,
                           cost.memory_need(memory_estimates(stage, scale)))


def stage_mem_mb(stage: str, scale: str, attempt: int = 1) -> int:
    """Memory (MiB) of the cluster job of ``stage`` at ``scale``: ``cost.job_mem_mb`` of what its checks
    estimate (the peak this table shows), times ``attempt``."""
    return cost.job_mem_mb(cost.memory_need(memory_estimates(stage, scale)), attempt)


def _table(costs: list[cost.StageCost], errors: dict[str, str]) -> str:
    head = f"{'stage':30s} {'CPU time':>10s} {'GPU time':>22s} {'peak mem':>9s} {'job MiB':>8s}  not estimated"
    lines = [head, "-" * len(head)]
    for c in costs:
        cpu = "—" if c.cpu_hours is None else cost.duration(c.cpu_hours)
        gpu = "no GPU rate measured" if c.gpu_hours is None else cost.duration(c.gpu_hours)
        lines.append(f"{c.stage:30s} {cpu:>10s} {gpu:>22s} {cost.gigabytes(c.peak_bytes):>9s} "
                     f"{c.mem_mb:>8,d}  {'; '.join(c.unrated)}")
    for stage, err in errors.items():
        lines.append(f"{stage:30s} {'?':>10s} {'?':>22s} {'?':>9s} {'?':>8s}  {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Estimated CPU-hours, GPU-hours, peak memory and cluster job "
                                                 "memory per stage, from the benchmarks' measured rates.")
    parser.add_argument("--scale", default="paper", help="smoke | quick | paper (default paper)")
    parser.add_argument("--stage", action="append", help="<paper>/<artifact> (repeatable; default: every stage)")
    parser.add_argument("--benchmarks", type=Path, default=cost.BENCHMARKS, help="folder of benchmark JSON files")
    parser.add_argument("--detail", action="store_true", help="every workload with its hours")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    a = parser.parse_args(argv)
    try:
        rates = cost.load_rates(a.benchmarks)
        costs, errors = [], {}
        for stage in a.stage or config.experiments():
            try:
                costs.append(estimate(stage, a.scale, rates=rates))
            except Exception as err:  # noqa: BLE001 - one stage that cannot be estimated leaves the others
                if a.stage:
                    raise
                errors[stage] = str(err).splitlines()[0] if str(err) else type(err).__name__
    except (cost.CostError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps([{"stage": c.stage, "cpu_hours": c.cpu_hours, "gpu_hours": c.gpu_hours,
                           "peak_bytes": c.peak_bytes, "mem_mb": c.mem_mb, "summary": c.summary(),
                           "unrated": c.unrated, "sources": c.sources} for c in costs]
                         + [{"stage": s, "error": e} for s, e in errors.items()], indent=1))
        return 0
    machines = sorted({r.machine for r in rates["cpu"].values()})
    print(f"Estimated cost at scale {a.scale}: hours on the benchmark machine ({'; '.join(machines) or 'none'}; "
          f"core-hours = hours x cores), rates from {a.benchmarks} (--detail: which file rates each workload); "
          f"peak mem: the arrays the stage's checks estimate; job MiB: what its cluster job asks for "
          f"({cost.MEM_BASE_MB} MiB + {cost.MEM_SAFETY} x peak)")
    print(_table(costs, errors))
    total = [c.cpu_hours for c in costs if c.cpu_hours is not None]
    print(f"total ≈ {cost.duration(sum(total))} CPU time over {len(total)} stages" + (
        "; GPU: no GPU rate measured (run benchmarks/device.sh on a GPU)" if not rates["gpu"] else ""))
    if a.detail:
        for c in costs:
            print(f"\n{c.stage}: {c.summary()}")
            for w in c.workloads:
                s = cost.seconds(w, rates["cpu"])
                print(f"  {w.count:>5d} x {w.what:70s} "
                      + ("unrated" if s is None else f"{cost.duration(s / 3600)} CPU"))
            for path, value, unit, power, what in memory_estimates(c.stage, a.scale):
                print(f"  memory: {cost.gigabytes(array_bytes(value, unit, power)):>8s}  {what} ({path})")
            print("  rates: " + "; ".join(c.sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
