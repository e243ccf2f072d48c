"""What a stage costs at a given scale, from the rates the benchmarks measured (``benchmarks/results/*.json``):
the cost model, knowing no paper. The table of every stage (and the memory of its cluster job) is
``scripts/cost_table.py``, which loads the papers' workloads:

    python scripts/cost_table.py --scale paper                      # every stage: CPU-h, GPU-h, peak memory
    python scripts/cost_table.py --scale paper --stage arora2019/table1 --detail

A stage's cost is the sum of its *workloads*: a Gram matrix of a kernel (:func:`fc_gram`, :func:`cntk_gram`,
:func:`deq_gram`, :func:`cdeq_gram`), empirical NTKs of finite nets (:func:`empirical_ntk`), SGD/GD steps
(:func:`train`), a dense solve (:func:`solve`), or work no benchmark rates (:func:`unrated`). Each paper says
which workloads its artifacts imply in ``experiments/<paper>/cost.py``: ``WORKLOADS = {artifact: fn}`` with
``fn(cfg) -> list[Workload]`` (``cfg``: the stage's resolved config as a dict, :func:`stage_config`).

The model of each kind (seconds = evaluations x work per evaluation / the benchmark's evaluations per second,
the work relative to the benchmark's own configuration):

- ``fc_gram``: distinct entries x (share of the input product x d / d_ref + share of the layers x depth /
  depth_ref), rated by the FC study (``fc``, same dtype). The shares are :data:`FC_INPUT_SHARE` (the split of
  the n = 4,000 benchmark Gram documented in benchmarks/README.md: x x^T ~0.45 s, the 9 layers ~0.4 s).
- ``cntk``: distinct pairs x conv layers / the benchmark's (depth - 1) x (P Q / P_ref Q_ref) for vanilla,
  x (P Q / P_ref Q_ref)^2 for GAP (all P Q offsets), rated by the CNTK study's row of the same readout.
- ``deq_gram``: distinct pairs, rated by the DEQ study (float64; the fixed point per pair dominates, d is
  ignored: an input dimension below the benchmark's 3,072 makes the estimate an upper bound).
- ``cdeq_gram``: a CNTK-V of (Sigma iterations + 1) layers: the CDEQ Sigma iteration is one conv layer of
  the CNTK recursion (no CDEQ benchmark).
- ``empirical_ntk``: pairs x forward multiply-adds per example / the benchmark net's, rated by the empirical
  study's row of the same architecture (fc: the structured path; cnn: "auto").
- ``train``: examples processed x forward multiply-adds / the benchmark net's, at the empirical study's time
  per example (its whole empirical-NTK time / n: one forward and one reverse pass per example, plus the
  contraction; an upper bound on a batched SGD step).
- ``solve``: a Cholesky of K (n^3/3) and the triangular solves (n^2 targets + n_test n targets) in
  multiply-adds, at the FC study's input-product rate (x x^T: n_ref^2 d_ref / 2 multiply-adds in
  FC_INPUT_SHARE of its time).

A workload counts distinct pairs (:func:`distinct_pairs`; a paper-size Gram's upper blocks evaluate about
that many). A benchmark's rate is its pairs evaluated per second: for the FC and DEQ Grams, whose tiles are
planned from n alone (``ntkrepro.blocks.block_grid``), the upper tiles' entries (:func:`evaluated_pairs`);
for the CNTK and the empirical NTK, whose blocks are sized from the free memory of the day (not recorded),
n^2 (the studies' ``ours_pairs_per_s``, as benchmarks/run.py extrapolates): exact for a one-block Gram
(CNTK-GAP on 16 images), an optimistic rate by up to 1.8x where the benchmark Gram had several blocks
(CNTK-V on 512 images: 147,456 evaluations, not 262,144).

The calibration row of each study is the one at the largest measured size (a paper-scale Gram amortizes its
per-block overheads as the largest benchmark did), the newest among equals; CPU and GPU rows apart (a file's
``machine.backend``). Hours are wall hours on the benchmark's machine (its cores are named; core-hours =
hours x cores). A stage's memory is not modelled here: it is what the stage's own checks estimate before
allocating (:func:`memory_need` of the estimates ``checks.refuse_oversized`` sees), the one estimate that both
the cost table's peak and the stage's cluster job (:func:`job_mem_mb`) use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntkrepro.checks import array_bytes

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks" / "results"
FC_INPUT_SHARE = 0.5  # share of the FC benchmark Gram's time in x x^T (README: ~0.45 s of 0.82 s; layers ~0.4 s)
ITEMSIZE = {"float32": 4, "float64": 8}


class CostError(ValueError):
    """A workload or a stage that cannot be estimated (bad sizes, no cost model, no benchmark)."""


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One kind of work a stage does ``count`` times: ``size`` holds the kind's parameters (see the module
    docstring), ``what`` a label for people. Memory is not a workload's: a stage's memory is what its own
    checks estimate (:func:`memory_need`)."""

    kind: str
    what: str
    size: Mapping[str, Any]
    count: int = 1


def _positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise CostError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _precision(value: str) -> str:
    if value not in ITEMSIZE:
        raise CostError(f"precision must be one of {tuple(ITEMSIZE)}, got {value!r}")
    return value


def distinct_pairs(n1: int, n2: int | None = None) -> int:
    """Kernel evaluations of a Gram: the upper triangle with the diagonal of a symmetric one (``n2`` None),
    every entry of K(x1, x2)."""
    return n1 * (n1 + 1) // 2 if n2 is None else n1 * n2


def evaluated_pairs(n: int, itemsize: int) -> int:
    """Entries a symmetric n x n FC/DEQ Gram evaluates: its upper tiles, diagonal tiles whole
    (``ntkrepro.blocks.block_grid`` plans them)."""
    from ntkrepro.blocks import block_grid

    count, b = block_grid(n, itemsize)
    return count * (count + 1) // 2 * b * b


def fc_gram(n1: int, n2: int | None = None, *, d: int, depth: int, precision: str = "float64", count: int = 1,
            what: str = "") -> Workload:
    """The exact FC NNGP/NTK Gram of ``n1`` (x ``n2``; None = symmetric) inputs of dimension ``d``."""
    n1, d, depth = _positive_int("n1", n1), _positive_int("d", d), _positive_int("depth", depth)
    n2 = None if n2 is None else _positive_int("n2", n2)
    return Workload("fc_gram", what or f"FC Gram {n1} x {n2 or n1}, d={d}, depth {depth}",
                    {"pairs": distinct_pairs(n1, n2), "d": d, "depth": depth, "precision": _precision(precision)},
                    _positive_int("count", count))


def cntk_gram(n1: int, n2: int | None = None, *, side: int, depth: int, readout: str, count: int = 1,
              what: str = "") -> Workload:
    """The exact CNTK Gram (vanilla or GAP readout) of ``side`` x ``side`` images, ``depth`` layers
    (depth - 1 convolutions)."""
    n1, side, depth = _positive_int("n1", n1), _positive_int("side", side), _positive_int("depth", depth, minimum=2)
    n2 = None if n2 is None else _positive_int("n2", n2)
    if readout not in ("vanilla", "gap"):
        raise CostError(f"readout must be 'vanilla' or 'gap', got {readout!r}")
    return Workload("cntk", what or f"CNTK-{'V' if readout == 'vanilla' else 'GAP'} Gram {n1} x {n2 or n1}, "
                    f"{side}x{side}, depth {depth}",
                    {"pairs": distinct_pairs(n1, n2), "side": side, "depth": depth, "readout": readout},
                    _positive_int("count", count))


def deq_gram(n1: int, n2: int | None = None, *, count: int = 1, what: str = "") -> Workload:
    """The DEQ-NTK Gram (fixed point per pair) of ``n1`` (x ``n2``) inputs."""
    n1 = _positive_int("n1", n1)
    n2 = None if n2 is None else _positive_int("n2", n2)
    return Workload("deq_gram", what or f"DEQ-NTK Gram {n1} x {n2 or n1}", {"pairs": distinct_pairs(n1, n2)},
                    _positive_int("count", count))


def cdeq_gram(n1: int, n2: int | None = None, *, side: int, iterations: int, count: int = 1,
              what: str = "") -> Workload:
    """The convolutional DEQ-NTK Gram: ``iterations`` Sigma iterations per pair on ``side`` x ``side`` images."""
    w = cntk_gram(n1, n2, side=side, depth=_positive_int("iterations", iterations) + 1, readout="vanilla",
                  count=count)
    return Workload("cdeq_gram", what or f"CDEQ-NTK Gram {n1} x {n2 or n1}, {side}x{side}, {iterations} iterations",
                    w.size, w.count)


def fc_macs(*, d: int, width: int, depth: int, out: int = 1) -> int:
    """Forward multiply-adds per example of a depth-``depth`` MLP (``depth`` weight layers)."""
    return d * width + max(depth - 2, 0) * width * width + width * out


def cnn_macs(*, side: int, channels: int, depth: int, c_in: int = 3, out: int = 1, readout: str = "vanilla",
             filter_size: int = 3) -> int:
    """Forward multiply-adds per example of a CNN of ``depth - 1`` same-padded convolutions and a readout
    (dense over every pixel for vanilla, after global average pooling for GAP)."""
    pixels, q2 = side * side, filter_size * filter_size
    convs = q2 * c_in * channels * pixels + max(depth - 2, 0) * q2 * channels * channels * pixels
    return convs + channels * out * (pixels if readout == "vanilla" else 1)


def empirical_ntk(n1: int, n2: int | None = None, *, arch: str, macs: int, count: int = 1,
                  what: str = "") -> Workload:
    """Empirical NTKs of a finite net (``macs`` forward multiply-adds per example; :func:`fc_macs`,
    :func:`cnn_macs`) on ``n1`` (x ``n2``) inputs, ``count`` draws."""
    n1 = _positive_int("n1", n1)
    n2 = None if n2 is None else _positive_int("n2", n2)
    _arch(arch)
    return Workload("empirical_ntk", what or f"empirical NTK ({arch}) {n1} x {n2 or n1}",
                    {"pairs": distinct_pairs(n1, n2), "arch": arch, "macs": _positive_int("macs", macs)},
                    _positive_int("count", count))


def train(examples: int, *, arch: str, macs: int, count: int = 1, what: str = "") -> Workload:
    """Training by gradient steps: ``examples`` examples processed in all (epochs x training set, or steps x
    batch), a net of ``macs`` forward multiply-adds per example; ``count`` runs (seeds, grid points)."""
    _arch(arch)
    return Workload("train", what or f"training ({arch}) on {examples} examples",
                    {"examples": _positive_int("examples", examples), "arch": arch,
                     "macs": _positive_int("macs", macs)},
                    _positive_int("count", count))


def solve(n: int, *, targets: int, n_test: int = 0, precision: str = "float64", count: int = 1,
          what: str = "") -> Workload:
    """Kernel regression: Cholesky of the n x n training Gram, solve for ``targets`` columns, predict
    ``n_test`` points (rated at the FC study's input-product rate of ``precision``)."""
    n, targets = _positive_int("n", n), _positive_int("targets", targets)
    n_test = _positive_int("n_test", n_test, minimum=0)
    return Workload("solve", what or f"kernel regression n={n}, {n_test} test points",
                    {"macs": n**3 / 3 + n * n * targets + n_test * n * targets, "precision": _precision(precision)},
                    _positive_int("count", count))


def unrated(what: str, *, count: int = 1) -> Workload:
    """Work no benchmark rates (e.g. a sequential scalar recursion): listed, never given hours."""
    return Workload("unrated", what, {}, _positive_int("count", count))


def _arch(arch: str) -> None:
    if arch not in ("fc", "cnn"):
        raise CostError(f"arch must be 'fc' or 'cnn', got {arch!r}")


# ---------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rate:
    """Evaluations per second of one workload kind at the benchmark's reference configuration ``ref``."""

    kind: str
    per_s: float
    ref: Mapping[str, Any]
    source: str  # the benchmark file and row
    machine: str


def _machine(m: Mapping) -> str:
    devices = ", ".join(sorted(set(m.get("devices") or []))) or m.get("backend", "?")
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" if m.get("backend") == "cpu" else devices


def _backend(record: Mapping) -> str:
    return "cpu" if (record.get("machine") or {}).get("backend", "cpu") == "cpu" else "gpu"


def _rows(record: Mapping, path: Path) -> Iterable[tuple[str, float, dict, str, int]]:
    """(kind key, evaluations per second, reference config, row label, size) of every usable row of a file."""
    study = record.get("study")
    if study == "fc":
        for row in record["rows"]:
            n = record["n"]
            yield (f"fc_gram:{row['dtype']}", evaluated_pairs(n, ITEMSIZE[row["dtype"]]) / row["ours_s"],
                   {"d": record["d"], "depth": record["depth"], "n": n, "seconds": row["ours_s"]}, row["dtype"], n)
    elif study == "cntk":
        for row in record["rows"]:
            n = row["n"]
            ref = {"side": record["image"][0], "depth": record["depth"], "n": n}
            yield f"cntk:{row['readout']}", row["ours_pairs_per_s"], ref, row["readout"], n
    elif study == "deq":
        n = record["n"]
        yield "deq_gram", evaluated_pairs(n, 8) / record["ours_s"], {"n": n}, "", n  # the study runs float64
    elif study == "empirical":
        for row in record["rows"]:
            n, arch = row["n"], row["arch"]
            by_impl = row.get("ours_pairs_per_s_by_implementation") or {}
            pairs_per_s = by_impl.get("structured") or row["ours_pairs_per_s"]
            if arch == "fc":
                macs = fc_macs(d=row["d"], width=row["width"], depth=row["depth"])
            else:
                macs = cnn_macs(side=row["side"], channels=row["width"], depth=row["depth"])
            ref = {"macs": macs, "n": n}
            yield f"empirical_ntk:{arch}", pairs_per_s, ref, arch, n
            yield f"train:{arch}", pairs_per_s / n, ref, arch, n  # examples per second: n examples in n^2/pps s


def load_rates(folder: Path | str = BENCHMARKS) -> dict[str, dict[str, Rate]]:
    """``{"cpu": {kind key: Rate}, "gpu": {...}}`` from the benchmark files in ``folder``: per kind, the row
    at the largest size, the newest file among equals. Raises CostError when the folder has no file."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise CostError(f"no benchmark results in {folder} (run benchmarks/run.py; see benchmarks/README.md)")
    best: dict[tuple[str, str], tuple[tuple, Rate]] = {}
    for path in files:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CostError(f"{path}: unreadable benchmark file ({err})") from None
        backend = _backend(record)
        for key, per_s, ref, label, size in _rows(record, path):
            rank = (size, path.name)
            rate = Rate(key, float(per_s), ref, f"{path.name}" + (f" ({label})" if label else ""),
                        _machine(record.get("machine") or {}))
            if (backend, key) not in best or rank > best[(backend, key)][0]:
                best[(backend, key)] = (rank, rate)
    out: dict[str, dict[str, Rate]] = {"cpu": {}, "gpu": {}}
    for (backend, key), (_, rate) in best.items():
        out[backend][key] = rate
    return out


def _rate_key(w: Workload) -> str:
    s = w.size
    return {"fc_gram": lambda: f"fc_gram:{s['precision']}", "cntk": lambda: f"cntk:{s['readout']}",
            "cdeq_gram": lambda: "cntk:vanilla", "deq_gram": lambda: "deq_gram",
            "empirical_ntk": lambda: f"empirical_ntk:{s['arch']}", "train": lambda: f"train:{s['arch']}",
            "solve": lambda: f"fc_gram:{s['precision']}"}[w.kind]()


def evaluations(w: Workload, ref: Mapping[str, Any]) -> float:
    """The workload's work in evaluations of the benchmark's reference configuration ``ref`` (one run)."""
    s = w.size
    if w.kind == "fc_gram":
        return s["pairs"] * (FC_INPUT_SHARE * s["d"] / ref["d"] + (1 - FC_INPUT_SHARE) * s["depth"] / ref["depth"])
    if w.kind in ("cntk", "cdeq_gram"):
        spatial = (s["side"] / ref["side"]) ** (2 if s["readout"] == "vanilla" else 4)
        return s["pairs"] * (s["depth"] - 1) / (ref["depth"] - 1) * spatial
    if w.kind == "deq_gram":
        return s["pairs"]
    if w.kind == "empirical_ntk":
        return s["pairs"] * s["macs"] / ref["macs"]
    if w.kind == "train":
        return s["examples"] * s["macs"] / ref["macs"]
    if w.kind == "solve":  # in FC Gram entries: one entry's input product is d_ref multiply-adds, FC_INPUT_SHARE of it
        return s["macs"] / ref["d"] * FC_INPUT_SHARE
    raise CostError(f"unknown workload kind {w.kind!r}")


def seconds(w: Workload, rates: Mapping[str, Rate]) -> float | None:
    """Seconds of all ``w.count`` runs of ``w`` at ``rates`` (one backend); None when nothing rates it."""
    if w.kind == "unrated":
        return None
    rate = rates.get(_rate_key(w))
    return None if rate is None else w.count * evaluations(w, rate.ref) / rate.per_s


# ---------------------------------------------------------------- stages


@dataclass
class StageCost:
    """A stage's estimate: hours per backend (None: no rate for some workload), its workloads, and
    ``peak_bytes``: the memory its own checks estimate (:func:`memory_need`; 0 when they estimate none)."""

    stage: str
    workloads: list[Workload]
    cpu_hours: float | None
    gpu_hours: float | None
    peak_bytes: float
    unrated: list[str] = field(default_factory=list)
    cores: int | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def mem_mb(self) -> int:
        """The memory (MiB) its cluster job asks for (:func:`job_mem_mb` of ``peak_bytes``)."""
        return job_mem_mb(self.peak_bytes)

    def summary(self) -> str:
        """One line: ``needs ≈ 82,000 CPU-h on the benchmark's 2-core CPU (no GPU rate measured), peak ≈ 6.4 GB``."""
        if self.cpu_hours is None and self.gpu_hours is None and self.unrated:
            return f"not estimated: {'; '.join(self.unrated)}"
        cpu = "no CPU rate measured" if self.cpu_hours is None else _approx(duration(self.cpu_hours, "CPU"))
        gpu = "no GPU rate measured" if self.gpu_hours is None else _approx(duration(self.gpu_hours, "GPU"))
        cores = f" on the benchmark's {self.cores}-core CPU" if self.cores and self.cpu_hours is not None else ""
        peak = "peak memory not estimated" if self.peak_bytes <= 0 else f"peak {_approx(gigabytes(self.peak_bytes))}"
        extra = f"; not estimated: {'; '.join(self.unrated)}" if self.unrated else ""
        return f"needs {cpu}{cores} ({gpu}), {peak}{extra}"


def _approx(text: str) -> str:
    return text if text.startswith("<") else f"≈ {text}"


def hours(h: float) -> str:
    """Hours to two significant figures with thousands separators (``82,000``, ``16``, ``0.31``)."""
    if h <= 0:
        return "0"
    digits = max(0, 1 - int(math.floor(math.log10(h))))
    return f"{float(f'{h:.2g}'):,.{digits}f}"


def duration(h: float, device: str = "") -> str:
    """A duration for people: ``82,000 h``, ``25 min``, ``3 s``, ``< 1 s``; with ``device`` ("CPU"):
    ``82,000 CPU-h``, ``25 CPU-min``."""
    s, unit = h * 3600, (lambda u: f"{device}-{u}" if device else u)
    if s < 1:
        return f"< 1 {unit('s')}"
    if s < 60:
        return f"{s:.0f} {unit('s')}"
    if s < 3600:
        return f"{s / 60:.0f} {unit('min')}"
    return f"{hours(h)} {unit('h')}"


def gigabytes(b: float) -> str:
    """``150 GB``, ``4.2 GB``, ``45 MB``, ``< 1 MB``; ``—`` when nothing was estimated (0)."""
    if b <= 0:
        return "—"
    if b < 1e6:
        return "< 1 MB"
    value, unit = (b / 1e9, "GB") if b >= 1e8 else (b / 1e6, "MB")
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"


def memory_need(estimates: Iterable[tuple]) -> float:
    """Bytes a stage needs: the arrays its checks estimate before allocating (``checks.refuse_oversized``'s
    ``(path, value, unit_bytes, power, what)``, recorded with ``checks.recording_estimates``), all counted
    alive at once (their sum)."""
    return sum(array_bytes(value, unit, power) for _, value, unit, power, _ in estimates)


# A stage's cluster job asks for MEM_BASE_MB + MEM_SAFETY x its memory need (:func:`job_mem_mb`)
MEM_BASE_MB = 2000  # interpreter, JAX, libraries and data (~0.6 GB peak at smoke): also the floor
MEM_SAFETY = 1.5    # temporaries beside the estimated arrays (the estimates count the largest arrays only)


def job_mem_mb(need: float, attempt: int = 1) -> int:
    """Memory (MiB) of the cluster job of a stage that needs ``need`` bytes (:func:`memory_need`):
    ``MEM_BASE_MB + MEM_SAFETY x need``, times ``attempt`` (a retry after running out of memory asks for more)."""
    return math.ceil(MEM_BASE_MB + MEM_SAFETY * need / 2**20) * attempt


def stage_cost(stage: str, workloads: list[Workload], rates: Mapping[str, Mapping[str, Rate]],
               peak_bytes: float = 0.0) -> StageCost:
    """Sum a stage's workloads per backend; ``peak_bytes``: its :func:`memory_need`."""
    def total(backend: str) -> float | None:
        parts = [seconds(w, rates.get(backend, {})) for w in workloads if w.kind != "unrated"]
        return None if not parts or any(p is None for p in parts) else sum(parts) / 3600
    used = [rates["cpu"][_rate_key(w)] for w in workloads if w.kind != "unrated" and _rate_key(w) in rates["cpu"]]
    cores = {r.machine for r in used}
    return StageCost(stage, workloads, total("cpu"), total("gpu"), peak_bytes,
                     [w.what for w in workloads if w.kind == "unrated"],
                     _cores(next(iter(cores))) if len(cores) == 1 else None,
                     sorted({f"{r.kind}: {r.source}" for r in used}))


def _cores(machine: str) -> int | None:
    try:
        return int(machine.rsplit(",", 1)[1].split()[0])
    except (IndexError, ValueError):
        return None


def stage_config(stage: str, scale: str) -> dict:
    """The registered config of ``<paper>/<artifact>`` at ``scale``, resolved, as a plain dict."""
    from omegaconf import OmegaConf

    from ntkrepro.config import SCALES, compose

    if scale not in SCALES:
        raise CostError(f"scale must be one of {SCALES}, got {scale!r}")
    return OmegaConf.to_container(compose(stage, [f"scale={scale}"]), resolve=True)


def split_size(data: Mapping, split: str) -> int:
    """``data.n_<split>``, or (null) the whole split of ``data.name`` as the data registry sizes it."""
    from ntkrepro.data.registry import get_spec

    n = data.get(f"n_{split}")
    if n is not None:
        return int(n)
    sizes = get_spec(data["name"]).sizes
    if not sizes or split not in sizes:
        raise CostError(f"data.n_{split} is null and the registry has no size for {data['name']}/{split}")
    return int(sizes[split])


def image_side(data: Mapping, downsample: int = 1) -> tuple[int, int]:
    """(side after ``downsample``, channels) of ``data.name``'s images."""
    from ntkrepro.data.registry import get_spec

    h, _, c = get_spec(data["name"]).image_shape
    return h // int(downsample), c
