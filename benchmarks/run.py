"""Speed studies: this project's kernels against neural-tangents 0.6.5 (its own venv), same inputs,
same session. Writes benchmarks/results/<date>-<study>.json with machine info and prints a summary.

    .venv/bin/python benchmarks/run.py table    # FC, CNTK-V, CNTK-GAP, DEQ on both paths (K(X, X), K(X, Y)) vs
                                                # the peer, the FC's input GEMM and the machine's GEMM / copy peak,
                                                # interleaved rounds in one run (also writes the markdown table)
    .venv/bin/python benchmarks/run.py empirical  # empirical NTK: FC width 1024 depth 4, CNN 128 channels
    .venv/bin/python benchmarks/run.py trace    # CNTK-GAP's trace operator: shifted adds, convolution, offset planes
    .venv/bin/python benchmarks/run.py large --n-train 50000 --n-test 10000   # DEQ-NTK Gram + in-place solve at
                                                # Table 2's shapes: time and peak RSS per phase, float32 vs float64

The peer runs as a subprocess (benchmarks/nt_peer.py in benchmarks/.venv-nt); inputs come from numpy's
RandomState(seed) on both sides (benchmarks/cases.py). Timings: compiled computation after a warm-up; ``table``
takes the median of interleaved rounds, the other studies the best of ``repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import jax
import numpy as np

from ntkrepro.io import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import case_inputs, case_name, pairs  # noqa: E402  (benchmarks/cases.py, shared with the peer)

HERE = Path(__file__).resolve().parent
PEER = HERE / ".venv-nt" / "bin" / "python"


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:  # a copied working tree (e.g. on a device machine) may have no git
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, cwd=HERE).stdout.strip()
    except OSError:
        commit, changed = "", ""
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_gb, 1), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [d.device_kind for d in jax.devices()], "loadavg_1m": os.getloadavg()[0],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": commit, "git_uncommitted_changes": bool(changed)}


def write_record(results_dir: Path, study: str, result: dict) -> Path:
    """Write a benchmark record, atomically, as ``<results_dir>/<YYYYMMDD-HHMM UTC>-<study>.json`` (the name
    the cost model orders records by) and return its path."""
    out = results_dir / f"{datetime.now(timezone.utc):%Y%m%d-%H%M}-{study}.json"
    atomic_write_text(out, json.dumps(result, indent=2, default=str) + "\n")
    return out


def best_of(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def peer(*args) -> dict:
    if PEER is None:
        return {"error": "peer skipped (--no-peer)"}
    if not PEER.exists():
        return {"error": f"peer venv missing: {PEER} (see benchmarks/README.md)"}
    out = subprocess.run([str(PEER), str(HERE / "nt_peer.py"), *map(str, args)], capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": out.stderr[-500:]}


# ---------------------------------------------------------------- the table: both paths, peer and peak, one run


def gemm_flops(n1: int, n2: int, d: int, symmetric: bool) -> float:
    """Useful FLOPs of the input Gram x1 x2^T (the upper triangle only when symmetric)."""
    return (n1 * (n1 + 1) if symmetric else 2 * n1 * n2) * d


CNTK_FLOPS_PER_PIXEL_LAYER = {"vanilla": 40, "gap": 48}
"""FLOP model of one layer on one pixel (vanilla) or pixel pair (GAP) of one image pair: the ReLU expectations
~30, the Theta update 2, the trace operator on Sigma and Theta (two separable 3x3 box sums: 8; the 9-term trace
of the offset planes: 16). An estimate (README 'Hardware limits')."""


def distinct_pairs(case: dict) -> float:
    """Pairs a case must evaluate: the upper triangle on the symmetric path, all n^2 on the cross path."""
    n = case["n"]
    return n * (n + 1) / 2 if case["path"] == "sym" else n * n


def case_flops(case: dict) -> float:
    """FLOP model of a case's distinct work: the input Gram (FC, DEQ) or the CNTK model above."""
    if case["kernel"] in ("fc", "deq"):
        return gemm_flops(case["n"], case["n"], case["d"], case["path"] == "sym")
    pixels = (case["side"] ** 2) ** (2 if case["readout"] == "gap" else 1)
    return distinct_pairs(case) * pixels * (case["depth"] - 1) * CNTK_FLOPS_PER_PIXEL_LAYER[case["readout"]]


class Peer:
    """neural-tangents servers (benchmarks/nt_peer.py serve in benchmarks/.venv-nt), one per dtype: a case is
    prepared (compiled, run once) up front, then timed one call at a time between our own calls."""

    def __init__(self, enabled: bool):
        self.enabled, self.procs = enabled and PEER.exists(), {}
        self.why_not = ("peer skipped (--no-peer)" if not enabled else
                        f"peer venv missing: {PEER} (benchmarks/README.md)")

    def ask(self, dtype: str, request: dict) -> dict:
        if not self.enabled:
            return {"error": self.why_not}
        if dtype not in self.procs:
            self.procs[dtype] = subprocess.Popen(
                [str(PEER), str(HERE / "nt_peer.py"), "serve", *(["--x64"] if dtype == "float64" else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        proc = self.procs[dtype]
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except OSError as e:
            return {"error": f"peer server gone: {e}"}
        return json.loads(line) if line.startswith("{") else {"error": f"peer server gone (exit {proc.poll()})"}

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stdin.close()
            proc.wait()


def timed_call(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call: on a machine shared with other work the CPU
    seconds vary less than the wall time (the work done, not the waiting)."""
    t, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - t, time.process_time() - cpu


def peak_timers(gemm_n: int) -> dict:
    """This machine's peak, timed in the run: GEMM gemm_n^3 (numpy's BLAS on the host and JAX's jitted matmul on
    the default device, float32 and float64) and a copy of 512 MiB (read + write; numpy's and JAX's)."""
    import jax.numpy as jnp
    from jax import lax

    timers = {}
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=lax.Precision.HIGHEST))
    for dtype in ("float32", "float64"):
        a, b = (np.random.RandomState(i).randn(gemm_n, gemm_n).astype(dtype) for i in (1, 2))
        ja, jb = jax.device_put(a), jax.device_put(b)
        timers[f"gemm_numpy_{dtype}"] = lambda a=a, b=b: a @ b
        timers[f"gemm_jax_{dtype}"] = lambda ja=ja, jb=jb: matmul(ja, jb)
    src = np.ones(2**26)
    dst = np.empty_like(src)
    timers["copy_numpy_512MiB"] = lambda: np.copyto(dst, src)
    on_device, add_one = jax.device_put(src), jax.jit(lambda v: v + 1.0)
    timers["copy_jax_512MiB"] = lambda: add_one(on_device)
    return timers


def peak_rates(medians: dict, gemm_n: int) -> dict:
    out = {f"{k}_gflops": 2 * gemm_n**3 / v / 1e9 for k, v in medians.items() if k.startswith("gemm_")}
    out.update({f"{k}_gbs": 2 * 2**26 * 8 / v / 1e9 for k, v in medians.items() if k.startswith("copy_")})
    out["copy_gbs"] = max(out["copy_numpy_512MiB_gbs"], out["copy_jax_512MiB_gbs"])  # the bound the fractions use
    for dtype in ("float32", "float64"):  # the best GEMM of the two libraries: the peak the fractions use
        out[f"gemm_peak_{dtype}_gflops"] = max(out[f"gemm_numpy_{dtype}_gflops"], out[f"gemm_jax_{dtype}_gflops"])
    return out


STUDIES = ("fc", "cntk-vanilla", "cntk-gap", "deq")


def table_cases(a) -> list[dict]:
    """The cases of ``--only``, each on both paths."""
    only = set(a.only.split(","))
    if only - set(STUDIES):
        raise SystemExit(f"--only: unknown {sorted(only - set(STUDIES))}, choose from {STUDIES}")
    cases = []
    if "fc" in only:
        cases += [{"kernel": "fc", "path": path, "n": a.n, "d": 3072, "depth": 10, "dtype": dtype}
                  for dtype in a.fc_dtypes.split(",") for path in ("sym", "cross")]
    for readout, n in (("vanilla", a.n_vanilla), ("gap", a.n_gap)):
        if f"cntk-{readout}" in only:
            cases += [{"kernel": "cntk", "readout": readout, "path": path, "n": n, "side": 32, "depth": 6,
                       "dtype": "float32"} for path in ("sym", "cross")]
    if "deq" in only:
        cases += [{"kernel": "deq", "path": path, "n": a.n_deq, "d": 3072, "dtype": "float64"}
                  for path in ("sym", "cross")]
    return cases


DEQ_VARIANCES = {"sigma_w2": 0.25, "sigma_u2": 0.25, "sigma_b2": 0.5}


def device_inputs(case: dict, seed: int):
    """The case's (X, Y) already on the device, as the peer's (``nt_peer.case_fn``): a numpy input's copy to the
    device is not the kernel's work (FC n = 4,000, d = 3,072, float32: ~25 ms per input on the 2-core CPU, a
    fifth of its recursion after the GEMM)."""
    return tuple(None if x is None else jax.device_put(x) for x in case_inputs(case, seed))


def ours_fn(case: dict, seed: int):
    """A no-argument callable computing the case's NTK with this project's public kernels (:func:`device_inputs`)."""
    x1, x2 = device_inputs(case, seed)
    if case["kernel"] == "fc":
        from ntkrepro.kernels.fc import fc_kernels

        return lambda: fc_kernels(x1, x2, depth=case["depth"], dtype=np.dtype(case["dtype"])).ntk
    if case["kernel"] == "cntk":
        from ntkrepro.kernels.conv import cntk

        return lambda: cntk(x1, x2, depth=case["depth"], readout=case["readout"]).ntk
    from ntkrepro.kernels.deq import deq_ntk

    return lambda: deq_ntk(x1, x2, **DEQ_VARIANCES, dtype=np.dtype(case["dtype"])).ntk


def input_gemm_fn(case: dict, seed: int):
    """The FC's limit: its input Gram x1 x2^T alone (x1 x1^T on the symmetric path), JAX's jitted matmul."""
    import jax.numpy as jnp
    from jax import lax

    j1, j2 = device_inputs(case, seed)
    j2 = j1 if j2 is None else j2
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=lax.Precision.HIGHEST))
    return lambda: matmul(j1, j2)


def deq_scalar_solver_fn(case: dict, seed: int, sample: int = 2000):
    """The DEQ-NTK paper's method, one brentq root of eq. 7 per entry, on ``sample`` entries: (callable, count)."""
    from scipy.optimize import root_scalar

    x1, x2 = case_inputs(case, seed)
    dots = (x1[:64] @ (x1 if x2 is None else x2)[:64].T).ravel()[:sample]
    kw = DEQ_VARIANCES

    def solve(t):
        f = lambda r: kw["sigma_w2"] * (np.sqrt(max(0.0, 1 - r * r)) + (np.pi - np.arccos(np.clip(r, -1, 1))) * r) \
            / np.pi + kw["sigma_u2"] * t + kw["sigma_b2"] - r  # noqa: E731
        return root_scalar(f, bracket=(-1.0, 1.0), method="brentq").root

    return (lambda: [solve(t) for t in dots]), len(dots)


def interleaved_rounds(timers: dict, peer: Peer, peer_names: dict, repeats: int) -> tuple[dict, dict, list]:
    """Every timer (and the peer's case right after ours) once per round, ``repeats`` rounds: the wall and CPU
    seconds of each call and the load averages after each round."""
    for fn in timers.values():  # compile + warm up
        jax.block_until_ready(fn())
    times = {k: [] for k in timers} | {f"peer:{name}": [] for name in peer_names}
    cpu = {k: [] for k in times}
    loads = [os.getloadavg()]
    for r in range(repeats):
        for key, fn in timers.items():
            wall, seconds = timed_call(fn)
            times[key].append(wall)
            cpu[key].append(seconds)
            name = key.split(":", 1)[1]
            if key.startswith("ours:") and name in peer_names:
                answer = peer.ask(peer_names[name], {"time": name})
                if "seconds" in answer:
                    times[f"peer:{name}"].append(answer["seconds"])
                    cpu[f"peer:{name}"].append(answer["cpu_seconds"])
        loads.append(os.getloadavg())
        print(f"[table] round {r + 1}/{repeats}, load average {loads[-1]}", file=sys.stderr, flush=True)
    return times, cpu, loads


def study_table(a) -> dict:
    """Both paths (K(X, X) with x2 None; K(X, Y), Y a second draw) of FC, CNTK-V, CNTK-GAP and DEQ against
    neural-tangents (DEQ: the paper's per-entry solver), the FC's input GEMM, and this machine's GEMM and copy
    peak, timed in interleaved rounds (the peer's call right after ours, case by case): medians of ``repeats``
    rounds, the load average after each. The markdown table goes into the JSON and next to it."""
    cases = table_cases(a)
    timers = {f"peak:{k}": fn for k, fn in peak_timers(a.gemm_n).items()}
    peer = Peer(not a.no_peer)
    prepared, solver_entries = {}, {}
    try:
        for case in cases:
            name = case_name(case)
            print(f"[table] prepare {name}", file=sys.stderr, flush=True)
            timers[f"ours:{name}"] = ours_fn(case, a.seed)
            if case["kernel"] == "fc":
                timers[f"gemm:{name}"] = input_gemm_fn(case, a.seed)
            if case["kernel"] == "deq":
                timers[f"solver:{name}"], solver_entries[name] = deq_scalar_solver_fn(case, a.seed)
            else:
                prepared[name] = peer.ask(case["dtype"], {"prepare": {**case, "seed": a.seed}})
        peer_names = {name: case["dtype"] for case in cases
                      if "prepared" in prepared.get(name := case_name(case), {})}
        times, cpu, loads = interleaved_rounds(timers, peer, peer_names, a.repeats)
    finally:
        peer.close()
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items() if v}
    peak = peak_rates({k.split(":", 1)[1]: v for k, v in med.items() if k.startswith("peak:")}, a.gemm_n)
    rows = [table_row(case, med, times, peak, prepared, solver_entries) for case in cases]
    for row in rows:  # the same ratios in CPU seconds (less sensitive to other work on the machine)
        name = row["case"]
        row["ours_cpu_s"] = med_cpu[f"ours:{name}"]
        if f"peer:{name}" in med_cpu:
            row.update(peer_cpu_s=med_cpu[f"peer:{name}"], speedup_cpu=med_cpu[f"peer:{name}"] / row["ours_cpu_s"])
        elif f"solver:{name}" in med_cpu:  # the per-entry solver runs in this process: its CPU seconds too
            row["speedup_cpu"] = (med_cpu[f"solver:{name}"] / solver_entries[name] * distinct_pairs(row)
                                  / row["ours_cpu_s"])
        if f"gemm:{name}" in med_cpu:
            row["ours_over_input_gemm_cpu"] = row["ours_cpu_s"] / med_cpu[f"gemm:{name}"]
    result = {"study": "table", "peak": peak, "gemm_n": a.gemm_n, "rows": rows, "loadavg_rounds": loads,
              "peer_prepare": prepared, "timings_s": times, "cpu_seconds": cpu,
              "note": "medians of interleaved rounds; speedup = peer / ours; flop_model: the input Gram's useful "
                      "FLOPs (FC, DEQ) or CNTK_FLOPS_PER_PIXEL_LAYER (CNTK), upper triangle only on the symmetric "
                      "path; fraction_of_gemm_peak: flop_model / ours against the best GEMM of numpy and JAX in the "
                      "case's dtype; fraction_of_copy_bound: writing nngp and ntk once at the measured copy "
                      "bandwidth, over ours"}
    result["markdown"] = table_markdown(result)
    return result


def table_row(case, med, times, peak, prepared, solver_entries) -> dict:
    name = case_name(case)
    ours = med[f"ours:{name}"]
    flops = case_flops(case)
    row = {"case": name, **case, "ours_s": ours, "ours_s_all": times[f"ours:{name}"], "pairs_per_s": pairs(case) / ours,
           "flop_model": flops, "gflops": flops / ours / 1e9,
           "fraction_of_gemm_peak": flops / ours / 1e9 / peak[f"gemm_peak_{case['dtype']}_gflops"],
           "fraction_of_copy_bound": 2 * distinct_pairs(case) * np.dtype(case["dtype"]).itemsize
           / (peak["copy_gbs"] * 1e9) / ours}
    if f"peer:{name}" in med:
        row.update(peer="neural-tangents 0.6.5", peer_s=med[f"peer:{name}"], peer_s_all=times[f"peer:{name}"],
                   speedup=med[f"peer:{name}"] / ours)
    elif f"solver:{name}" in med:
        extrapolated = med[f"solver:{name}"] / solver_entries[name] * distinct_pairs(case)
        row.update(peer=f"per-entry brentq (the DEQ-NTK paper's method), {solver_entries[name]} entries timed, "
                        "extrapolated", peer_s=extrapolated, speedup=extrapolated / ours)
    else:
        row.update(peer=prepared.get(name, {}).get("error", "no peer time"), peer_s=None, speedup=None)
    if f"gemm:{name}" in med:
        row.update(input_gemm_s=med[f"gemm:{name}"], ours_over_input_gemm=ours / med[f"gemm:{name}"])
    if case["kernel"] == "cntk":  # distinct pairs per second, scaled linearly in conv layers (5 -> 20)
        row[f"cifar10_full_gram_depth21_{jax.default_backend()}_hours_extrapolated"] = (
            60000**2 / 2 / (distinct_pairs(case) / ours) * (20 / (case["depth"] - 1)) / 3600)
    return row


def table_markdown(result: dict) -> str:
    peak, loads = result["peak"], result["loadavg_rounds"]
    head = (f"GEMM n = {result['gemm_n']}: float32 {peak['gemm_peak_float32_gflops']:.0f} GFLOP/s, float64 "
            f"{peak['gemm_peak_float64_gflops']:.0f} GFLOP/s (numpy {peak['gemm_numpy_float32_gflops']:.0f} / "
            f"{peak['gemm_numpy_float64_gflops']:.0f}, JAX {peak['gemm_jax_float32_gflops']:.0f} / "
            f"{peak['gemm_jax_float64_gflops']:.0f}); copy {peak['copy_gbs']:.1f} GB/s; 1-minute load average "
            f"{min(x[0] for x in loads):.1f}-{max(x[0] for x in loads):.1f} over the rounds\n\n")
    lines = ["| case | n | ours (s) | peer (s) | ratio | ratio, CPU s | / input GEMM | / input GEMM, CPU s "
             "| GFLOP/s (model) | of GEMM peak | of copy bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f, unit="": "—" if v is None else format(v, f) + unit  # noqa: E731
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['n']} | {r['ours_s']:.3g} | {fmt(r['peer_s'], '.3g')} | "
                     f"{fmt(r['speedup'], '.2f', 'x')} | {fmt(r.get('speedup_cpu'), '.2f', 'x')} | "
                     f"{fmt(r.get('ours_over_input_gemm'), '.2f')} | {fmt(r.get('ours_over_input_gemm_cpu'), '.2f')} | "
                     f"{r['gflops']:.1f} | "
                     f"{100 * r['fraction_of_gemm_peak']:.1f}% | {100 * r['fraction_of_copy_bound']:.1f}% |")
    return head + "\n".join(lines) + "\n"


def study_trace(a) -> dict:
    """CNTK-GAP's trace operator L (Arora et al. eq. 7 on (P, Q, P, Q) per pair, 3x3, zero padding) on
    ``a.n_trace`` pairs of 32x32 maps, float32, four ways: on the dense tensor as q^2 shifted adds, as
    separable q + q shifted adds, and as two 2-D convolutions with an identity q x q filter
    (``lax.conv_general_dilated``) over the (i, i') and (j, j') planes; and on the P*Q cyclic offset
    planes as masked separable box sums (``ntkrepro.kernels.conv.plane_box_sum``, what the library uses).
    All four are checked equal first."""
    import jax.numpy as jnp
    from jax import lax

    from ntkrepro.kernels.conv import plane_box_sum, plane_masks

    q, r, side = 3, 1, 32

    def shifted_adds(m):
        padded = jnp.pad(m, [(0, 0)] + [(r, r)] * 4)
        return sum(padded[:, s:s + side, t:t + side, s:s + side, t:t + side] for s in range(q) for t in range(q))

    def separable(m):
        for axes in ((1, 3), (2, 4)):
            padded = jnp.pad(m, [(r, r) if ax in axes else (0, 0) for ax in range(m.ndim)])
            m = sum(lax.slice_in_dim(lax.slice_in_dim(padded, s, s + side, axis=axes[0]), s, s + side, axis=axes[1])
                    for s in range(q))
        return m

    def convolution(m):
        kernel = jnp.eye(q, dtype=m.dtype)[:, :, None, None]  # HWIO: sum over the diagonal of the window
        b = m.shape[0]
        for perm in ((0, 2, 4, 1, 3), (0, 1, 3, 2, 4)):  # the (i, i') plane, then the (j, j') plane
            planes = jnp.transpose(m, perm).reshape(-1, side, side, 1)
            out = lax.conv_general_dilated(planes, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            m = jnp.transpose(out.reshape(b, side, side, side, side), np.argsort(perm))
        return m

    # cyclic offset planes: plane (u, v)[i, j] = M[i, j, (i + u) % P, (j + v) % Q], pairs in the minor axis
    uv = np.arange(side * side)
    ok_i = jnp.stack([plane_masks(u, side, filter_size=q) for u in uv // side])
    ok_j = jnp.stack([plane_masks(v, side, filter_size=q) for v in uv % side])
    rows = (np.arange(side)[None, :, None] + (uv // side)[:, None, None]) % side  # (planes, i, 1)
    cols = (np.arange(side)[None, None, :] + (uv % side)[:, None, None]) % side  # (planes, 1, j)
    ii, jj = np.arange(side)[None, :, None], np.arange(side)[None, None, :]

    def to_planes(m):  # (pairs, P, Q, P, Q) -> (planes, 1, P, Q, pairs)
        return jnp.moveaxis(m[:, ii, jj, rows, cols], 0, -1)[:, None]

    def from_planes(t):
        out = np.zeros((t.shape[-1], side, side, side, side), np.float32)
        out[:, ii, jj, rows, cols] = np.moveaxis(np.asarray(t[:, 0]), -1, 0)
        return out

    def offset_planes(t):
        return jax.vmap(lambda t, a, b: plane_box_sum(t, a, b, filter_size=q))(t, ok_i, ok_j)

    m = jnp.asarray(np.random.RandomState(a.seed).randn(a.n_trace, side, side, side, side).astype(np.float32))
    variants = {"shifted_adds_q2": (shifted_adds, m, np.asarray), "shifted_adds_separable": (separable, m, np.asarray),
                "convolution": (convolution, m, np.asarray),
                "offset_planes_masked_separable": (offset_planes, to_planes(m), from_planes)}
    reference = np.asarray(jax.jit(shifted_adds)(m))
    rows_out = []
    for name, (fn, arg, back) in variants.items():
        fn = jax.jit(fn)
        np.testing.assert_allclose(back(fn(arg)), reference, rtol=1e-5, atol=1e-5)
        seconds = best_of(lambda fn=fn, arg=arg: fn(arg), a.repeats)
        rows_out.append({"variant": name, "seconds": seconds, "ms_per_pair": 1e3 * seconds / a.n_trace,
                         "entries_per_s": m.size / seconds})
    return {"study": "trace", "pairs": a.n_trace, "maps": [side, side], "filter": q, "dtype": "float32",
            "rows": rows_out}


def study_empirical(a) -> dict:
    """Empirical NTK throughput (pairs/s, float32), ours (each implementation; the ratio uses "auto") vs
    neural-tangents' ``empirical_ntk_fn`` with each of its three implementations (1 Jacobian contraction, 2 NTK-vector
    products, 3 structured derivatives); the ratio is taken against the peer's fastest."""
    import jax.numpy as jnp

    from ntkrepro.empirical import empirical_ntk
    from ntkrepro.nets import cnn, fc

    cases = [("fc", fc(depth=4, width=1024, dtype=jnp.float32), a.n_empirical_fc,
              {"depth": 4, "width": 1024, "d": 3072}),
             ("cnn", cnn(depth=3, channels=128, dtype=jnp.float32), a.n_empirical_cnn,
              {"depth": 3, "width": 128, "side": 32})]
    rows = []
    for arch, net, n, shape in cases:
        rng = np.random.RandomState(a.seed)
        x = rng.randn(n, shape["d"]) if arch == "fc" else rng.randn(n, 32, 32, 3)
        x = jnp.asarray(x.astype(np.float32))
        params = net.init_fn(jax.random.PRNGKey(a.seed), x.shape)
        ours_by_impl = {impl: n * n / best_of(lambda net=net, params=params, x=x, impl=impl:
                                               empirical_ntk(net.apply_fn, params, x, implementation=impl), a.repeats)
                        for impl in ("auto", "jacobian", "ntvp") + (("structured",) if arch == "fc" else ())}
        peers = {impl: peer("empirical", "--arch", arch, "--n", n, "--depth", shape["depth"], "--width",
                            shape["width"], "--implementation", impl, "--repeats", a.repeats)
                 for impl in (1, 2, 3)}
        rates = {impl: r["pairs_per_s"] for impl, r in peers.items() if "pairs_per_s" in r}
        best = max(rates.values()) if rates else None
        rows.append({"arch": arch, "n": n, **shape, "ours_pairs_per_s": ours_by_impl["auto"],
                     "ours_pairs_per_s_by_implementation": ours_by_impl,
                     "peer_pairs_per_s_by_implementation": rates, "peer_best_pairs_per_s": best,
                     "speedup_vs_best": ours_by_impl["auto"] / best if best else None, "peer": peers})
    return {"study": "empirical", "dtype": "float32", "rows": rows,
            "note": "the same architecture on both sides (NTK parameterization, ReLU, sigma_w2 = 2, "
                    "no bias); weights are drawn differently, which does not change the cost"}


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PhaseMeter:
    """Wall time and peak RSS of named phases: a thread samples the RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        self.phases: list[dict] = []
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._peak = max(self._peak, _rss_bytes())

    @contextmanager
    def phase(self, name: str):
        self._peak = _rss_bytes()
        start = time.perf_counter()
        print(f"[large] {name} ...", file=sys.stderr, flush=True)
        yield
        seconds = time.perf_counter() - start
        self._peak = max(self._peak, _rss_bytes())
        self.phases.append({"phase": name, "seconds": seconds, "peak_rss_gb": self._peak / 1e9,
                            "rss_after_gb": _rss_bytes() / 1e9, "loadavg_1m_after": os.getloadavg()[0]})
        print(f"[large] {name}: {seconds:.1f} s, peak RSS {self._peak / 1e9:.2f} GB", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def synthetic_cifar_shaped(n: int, d: int, classes: int, seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs on the unit sphere (the DEQ-NTK preprocessing) and labels: ``signal`` x a class mean plus
    noise, both with a power-law spectrum (variance of coordinate k ~ 1/k, as the pixel covariance of natural
    images decays), so inputs correlate (effective dimension ~40, not d) and the Gram is far from the identity."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, d + 1))).astype(np.float32)
    means = signal * rng.standard_normal((classes, d), dtype=np.float32) * scale
    labels = rng.integers(0, classes, n)
    x = np.empty((n, d), np.float32)
    for r0 in range(0, n, 4096):  # in blocks: no second (n, d) array
        block = rng.standard_normal((min(4096, n - r0), d), dtype=np.float32) * scale + means[labels[r0:r0 + 4096]]
        x[r0:r0 + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, labels


DEQ_TABLE2_VARIANCES = {"sigma_w2": 0.25, "sigma_u2": 0.25, "sigma_b2": 0.5}  # DEQ-NTK Table 2, first row


def _deq_regression(x_train, y_train, x_test, *, dtype: str, tile: int, ridge: float, cache_root: Path,
                    meter: PhaseMeter | None = None, progress: bool = True, tiles: dict | None = None) -> np.ndarray:
    """DEQ-NTK kernel regression with the large-Gram path: the train Gram (upper tiles) into one array, factored
    in place and freed, then the test Gram and the predictions. Phases timed by ``meter`` when given; the tiles
    each Gram computed and found cached go into ``tiles`` (a rerun on a kept --work-dir resumes)."""
    tiles = {} if tiles is None else tiles
    from ntkrepro.gram import compute_gram_into
    from ntkrepro.regression import predict_in_blocks, solve

    timed = meter.phase if meter else (lambda name: nullcontext())
    cast = lambda x: x.astype(dtype, copy=False)  # noqa: E731
    gram_args = {"kernel": "deq", "kernel_kwargs": DEQ_TABLE2_VARIANCES, "cache_root": cache_root, "tile": tile,
                 "dtype": dtype, "progress": progress}
    with timed("train_gram"):
        train = compute_gram_into(cast(x_train), **gram_args)
    k_train, tiles["train_gram"] = train.ntk, {"computed": train.computed_tiles, "cached": train.cached_tiles}
    del train
    with timed("factor_solve"):
        alpha = solve(k_train, y_train, ridge=ridge, overwrite_k=True, progress=progress)
        del k_train
    with timed("test_gram"):
        test = compute_gram_into(cast(x_test), cast(x_train), **gram_args)
    k_test, tiles["test_gram"] = test.ntk, {"computed": test.computed_tiles, "cached": test.cached_tiles}
    del test
    with timed("predict"):
        predictions = predict_in_blocks(k_test, alpha)
    return predictions


def study_large(a) -> dict:
    """DEQ-NTK Gram + solve at Table 2's shapes on synthetic CIFAR-shaped data (``synthetic_cifar_shaped``):
    time and peak RSS per phase (train Gram, factor + solve, test Gram, predict) of the large-Gram path
    (``compute_gram_into`` + ``solve(overwrite_k=True)``) in ``a.dtype``; then the same regression in float32
    and float64 on the first ``a.compare_n_train`` / ``a.compare_n_test`` points (the effect of the precision
    on the predictions). Each Gram starts from an empty tile cache (a temporary folder unless --work-dir).
    ``a.baseline``: afterwards, the in-memory path on the same data (``deq_ntk`` Grams whole, then
    ``kernel_regression``) as one more timed phase, its predictions against the large path's."""
    from ntkrepro.kernels.deq import deq_ntk
    from ntkrepro.regression import accuracy, kernel_regression, one_hot_shifted

    x, labels = synthetic_cifar_shaped(a.n_train + a.n_test, a.dim, 10, a.seed, a.signal)
    y = np.asarray(one_hot_shifted(labels, 10))
    x_train, x_test, y_train, test_labels = x[:a.n_train], x[a.n_train:], y[:a.n_train], labels[a.n_train:]
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="ntkrepro-large-"))
    loadavg_start = os.getloadavg()[0]
    meter = PhaseMeter()
    try:
        tiles = {}
        predictions = _deq_regression(x_train, y_train, x_test, dtype=a.dtype, tile=a.tile, ridge=a.ridge,
                                      cache_root=work / "main", meter=meter, tiles=tiles)
        total = sum(p["seconds"] for p in meter.phases)
        fresh = all(t["cached"] == 0 for t in tiles.values())  # a resumed run does not measure the goal
        peak = max(p["peak_rss_gb"] for p in meter.phases)
        phases = list(meter.phases)
        compare = {}
        if a.compare_n_train:
            m, n = min(a.compare_n_test, a.n_test), min(a.compare_n_train, a.n_train)
            preds = {dt: _deq_regression(x_train[:n], y_train[:n], x_test[:m], dtype=dt, tile=a.tile, ridge=a.ridge,
                                         cache_root=work / f"compare-{dt}", progress=False)
                     for dt in ("float32", "float64")}
            p32, p64 = preds["float32"].astype(np.float64), preds["float64"]
            compare = {"n_train": n, "n_test": m,
                       "max_abs_diff_over_max_abs": float(np.abs(p32 - p64).max() / np.abs(p64).max()),
                       "relative_frobenius_diff": float(np.linalg.norm(p32 - p64) / np.linalg.norm(p64)),
                       "argmax_agreement": float(np.mean(p32.argmax(1) == p64.argmax(1))),
                       "accuracy_float32": accuracy(p32, test_labels[:m]),
                       "accuracy_float64": accuracy(p64, test_labels[:m])}
        baseline = {}
        if a.baseline:
            with meter.phase("baseline_in_memory"):
                k_train = deq_ntk(x_train, **DEQ_TABLE2_VARIANCES, dtype=a.dtype).ntk
                k_test = deq_ntk(x_test, x_train, **DEQ_TABLE2_VARIANCES, dtype=a.dtype).ntk
                reference = np.asarray(kernel_regression(k_train, y_train, k_test, ridge=a.ridge))
                del k_train, k_test
            baseline = {**meter.phases[-1], "max_abs_diff_over_max_abs":
                        float(np.abs(predictions - reference).max() / np.abs(reference).max())}
    finally:
        meter.close()
        if not a.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return {"study": "large", "kernel": "deq_ntk", "variances": DEQ_TABLE2_VARIANCES, "n_train": a.n_train,
            "n_test": a.n_test, "dim": a.dim, "dtype": a.dtype, "tile": a.tile, "ridge": a.ridge,
            "data": f"synthetic_cifar_shaped: {a.signal} x 10 class means + power-law noise (variance 1/k), unit "
                    f"norm, seed {a.seed}", "phases": phases, "gram_tiles": tiles, "total_s": total,
            "peak_rss_gb_phases": peak,
            "peak_rss_gb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "goal": {"seconds": 900, "peak_rss_gb": 16, "met": bool(total < 900 and peak < 16 and fresh),
                     "every_tile_computed_in_this_run": fresh},
            "accuracy": accuracy(predictions, test_labels), "loadavg_1m_start": loadavg_start,
            "precision_comparison": compare, "baseline_in_memory": baseline}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("study", choices=["table", "empirical", "trace", "large"])
    p.add_argument("--only", default=",".join(STUDIES), help=f"table: a comma-separated subset of {STUDIES}")
    p.add_argument("--n", type=int, default=4000, help="table: FC inputs (d = 3072, depth 10)")
    p.add_argument("--fc-dtypes", default="float32,float64", help="table: the FC's dtypes")
    p.add_argument("--n-vanilla", type=int, default=200, help="table: CNTK-V images (depth 6, 32x32x3)")
    p.add_argument("--n-gap", type=int, default=4, help="table: CNTK-GAP images (the peer: ~1 pair/s)")
    p.add_argument("--n-deq", type=int, default=4000, help="table: DEQ-NTK inputs (d = 3072, float64)")
    p.add_argument("--gemm-n", type=int, default=2048, help="table: the peak GEMM's side")
    p.add_argument("--n-empirical-fc", type=int, default=200)
    p.add_argument("--n-empirical-cnn", type=int, default=8)
    p.add_argument("--n-trace", type=int, default=16)
    p.add_argument("--n-train", type=int, default=50000, help="large: training points")
    p.add_argument("--n-test", type=int, default=10000, help="large: test points")
    p.add_argument("--dim", type=int, default=3072, help="large: input dimension")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="large: Gram and solve")
    p.add_argument("--tile", type=int, default=2048, help="large: Gram cache tile side")
    p.add_argument("--ridge", type=float, default=0.0, help="large: ridge (the paper: none)")
    p.add_argument("--signal", type=float, default=0.05, help="large: class-mean scale of the synthetic data")
    p.add_argument("--compare-n-train", type=int, default=4000, help="large: float32 vs float64 (0: skip)")
    p.add_argument("--compare-n-test", type=int, default=1000)
    p.add_argument("--baseline", action="store_true", help="large: also the in-memory path (time, peak RSS)")
    p.add_argument("--work-dir", help="large: the tile caches (kept: a rerun resumes); default a temporary folder")
    p.add_argument("--repeats", type=int, default=3, help="table: interleaved rounds (median); else best of")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument("--no-peer", action="store_true", help="skip neural-tangents (e.g. on a device without it)")
    a = p.parse_args(argv)
    if a.no_peer:
        global PEER
        PEER = None
    result = {"table": study_table, "empirical": study_empirical, "trace": study_trace,
              "large": study_large}[a.study](a)
    result["machine"] = machine()
    result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}  # sizes, seed, repeats
    out = write_record(a.results_dir, a.study, result)
    if "markdown" in result:
        atomic_write_text(out.with_suffix(".md"), result["markdown"])
        print(result["markdown"])
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=str)[:3000])
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
