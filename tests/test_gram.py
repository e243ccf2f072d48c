"""ntkrepro.gram: tiles assemble exactly to the one-shot Gram (symmetric and cross), resuming recomputes only
missing tiles, corrupt / partial / foreign / misplaced tiles are recomputed (more faults: test_gram_faults.py),
the cache key, the command line and the Snakemake rules (rules/gram.smk)."""

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ntkrepro import gram
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.fc import fc_kernels

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PolyKernels:
    nngp: np.ndarray
    ntk: np.ndarray


CALLS: list[tuple[int, int | None]] = []
INTERRUPT_AFTER = {"calls": None}  # simulated Ctrl-C after this many calls (None: never)


def poly_kernel(x1, x2=None, *, offset=1.0):
    """(x.y, (x.y + offset)^2) in exact integer arithmetic on integer-valued inputs; counts its calls."""
    if INTERRUPT_AFTER["calls"] is not None and len(CALLS) >= INTERRUPT_AFTER["calls"]:
        raise KeyboardInterrupt("simulated interruption")
    CALLS.append((len(x1), None if x2 is None else len(x2)))
    other = x1 if x2 is None else x2
    dot = np.einsum("ik,jk->ij", x1.astype(np.int64), other.astype(np.int64)).astype(np.float64)
    return PolyKernels(nngp=dot, ntk=(dot + offset) ** 2)


gram.register_kernel("test_poly", poly_kernel)


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()
    INTERRUPT_AFTER["calls"] = None


@pytest.fixture(scope="module")
def ints():
    return np.random.default_rng(0).integers(-3, 4, size=(11, 5)).astype(np.float64)


def poly_full(x1, x2=None, offset=1.0):
    dot = x1 @ (x1 if x2 is None else x2).T
    return dot, (dot + offset) ** 2


def test_tiles_assemble_exactly_symmetric_and_cross(ints, tmp_path):
    g = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    nngp, ntk = poly_full(ints)
    np.testing.assert_array_equal(g.nngp, nngp)
    np.testing.assert_array_equal(g.ntk, ntk)
    np.testing.assert_array_equal(g.ntk, g.ntk.T)
    assert (g.computed_tiles, g.cached_tiles) == (6, 0)  # 3 x 3 grid, upper triangle
    assert sorted(CALLS, key=str) == sorted([(4, None), (4, 4), (4, 3), (4, None), (4, 3), (3, None)], key=str)
    y = ints[:7] * 2 - 1
    cross = gram.compute_gram(ints, y, kernel="test_poly", kernel_kwargs={"offset": 0.5}, cache_root=tmp_path,
                              tile=4, progress=False)
    np.testing.assert_array_equal(cross.ntk, poly_full(ints, y, 0.5)[1])
    assert cross.computed_tiles == 6 and cross.hash != g.hash  # 3 x 2 grid, every tile


def test_real_kernels_through_the_registry(tmp_path):
    x = np.random.default_rng(1).standard_normal((7, 4))
    kw = {"depth": 3, "sigma_w2": 1.5, "sigma_b2": 0.1}
    g = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=3, progress=False)
    one_shot = fc_kernels(x, **kw)
    np.testing.assert_allclose(g.ntk, one_shot.ntk, rtol=1e-12)
    np.testing.assert_allclose(g.nngp, one_shot.nngp, rtol=1e-12)
    imgs = np.random.default_rng(2).standard_normal((5, 4, 4, 2))
    kw = {"depth": 3, "readout": "gap", "fix_first_last": True}
    g = gram.compute_gram(imgs, kernel="cntk", kernel_kwargs=kw, cache_root=tmp_path, tile=2, dtype="float64",
                          progress=False)
    np.testing.assert_allclose(g.ntk, cntk(imgs, **kw, dtype=jnp.float64).ntk, rtol=1e-12)
    np.testing.assert_array_equal(g.ntk, g.ntk.T)


def test_subsets(ints, tmp_path):
    rows, cols = np.array([9, 0, 4, 4, 7]), np.array([1, 10, 2])
    g = gram.compute_gram(ints, subset1=rows, kernel="test_poly", cache_root=tmp_path, tile=2, progress=False)
    np.testing.assert_array_equal(g.ntk, poly_full(ints[rows])[1])
    g = gram.compute_gram(ints, ints * 2, subset1=rows, subset2=cols, kernel="test_poly", cache_root=tmp_path,
                          tile=2, progress=False)
    np.testing.assert_array_equal(g.ntk, poly_full(ints[rows], (ints * 2)[cols])[1])
    with pytest.raises(ValueError, match="indices"):
        gram.compute_gram(ints, subset1=np.array([11]), kernel="test_poly", cache_root=tmp_path, progress=False)


def test_interrupt_and_resume_recomputes_only_missing_tiles(ints, tmp_path):
    INTERRUPT_AFTER["calls"] = 4
    with pytest.raises(KeyboardInterrupt):
        gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    spec = gram.make_spec(ints, kernel="test_poly", tile=4)
    assert len(list(gram.cache_dir(spec, tmp_path).glob("tile_*.npz"))) == 4
    INTERRUPT_AFTER["calls"] = None
    CALLS.clear()
    g = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert (g.computed_tiles, g.cached_tiles) == (2, 4) and len(CALLS) == 2
    np.testing.assert_array_equal(g.ntk, poly_full(ints)[1])
    CALLS.clear()
    again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert CALLS == [] and again.computed_tiles == 0


def test_deleted_tile_is_the_only_one_recomputed(ints, tmp_path):
    g = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    gram.tile_path(g.cache_dir, 0, 2).unlink()
    CALLS.clear()
    again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert CALLS == [(4, 3)] and again.computed_tiles == 1
    np.testing.assert_array_equal(again.ntk, g.ntk)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "nan", "no_hash"])
def test_corrupt_or_partial_tile_is_recomputed(ints, tmp_path, caplog, damage):
    g = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    spec = gram.make_spec(ints, kernel="test_poly", tile=4)
    path = gram.tile_path(g.cache_dir, 1, 1)
    if damage == "garbage":
        path.write_bytes(b"not an npz")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no_hash":
        np.savez(path, i=np.array(1), j=np.array(1), ntk=np.zeros((4, 4)))
    else:
        bad = np.full((4, 4), np.nan) if damage == "nan" else np.zeros((3, 4))
        gram.atomic_save_npz(path, hash=np.array(spec.hash), i=np.array(1), j=np.array(1), ntk=bad)
    CALLS.clear()
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert CALLS == [(4, None)] and again.computed_tiles == 1
    assert "recomputing" in caplog.text
    np.testing.assert_array_equal(again.ntk, g.ntk)


def test_tile_from_another_configuration_or_position_is_recomputed(ints, tmp_path, caplog):
    a = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    b = gram.compute_gram(ints, kernel="test_poly", kernel_kwargs={"offset": 3.0}, cache_root=tmp_path, tile=4,
                          progress=False)
    shutil.copy(gram.tile_path(b.cache_dir, 0, 1), gram.tile_path(a.cache_dir, 0, 1))
    CALLS.clear()
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert "written for configuration" in caplog.text and CALLS == [(4, 4)]
    np.testing.assert_array_equal(again.ntk, a.ntk)
    shutil.copy(gram.tile_path(a.cache_dir, 0, 2), gram.tile_path(a.cache_dir, 0, 1))  # right hash, wrong place
    CALLS.clear()
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert "holds tile (0, 2)" in caplog.text and CALLS == [(4, 4)]
    np.testing.assert_array_equal(again.ntk, a.ntk)


def test_cache_key(ints):
    base = gram.make_spec(ints, kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4)
    same = gram.make_spec(ints.copy(), kernel="fc", kernel_kwargs={"sigma_w2": np.float64(2.0), "depth": 3}, tile=4)
    assert same.hash == base.hash and len(base.hash) == 64
    variants = [
        gram.make_spec(ints, kernel="fc", kernel_kwargs={"depth": 4, "sigma_w2": 2.0}, tile=4),
        gram.make_spec(ints, kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=5),
        gram.make_spec(ints, kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4, dtype="float32"),
        gram.make_spec(ints.astype(np.float32), kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4),
        gram.make_spec(ints + 1e-9, kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4),
        gram.make_spec(ints, ints, kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4),
        gram.make_spec(ints, subset1=[0, 1], kernel="fc", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4),
        gram.make_spec(ints, kernel="cntk", kernel_kwargs={"depth": 3, "sigma_w2": 2.0}, tile=4),
    ]
    assert len({v.hash for v in variants} | {base.hash}) == len(variants) + 1


@pytest.mark.parametrize("kwargs,msg", [
    ({"kernel": "nope"}, "unknown kernel"),
    ({"kernel": "fc", "tile": 0}, "tile"),
    ({"kernel": "fc", "kernel_kwargs": {"activation": np.tanh}}, "plain data"),
    ({"kernel": "fc", "kernel_kwargs": {"sigma_w2": float("nan")}}, "non-finite"),
    ({"kernel": "fc", "x2": np.zeros((3, 4))}, "differ in shape"),
])
def test_bad_arguments(ints, tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        gram.compute_gram(ints, **{"cache_root": tmp_path, "progress": False, **kwargs})


def test_progress_lines_when_not_a_tty(ints, tmp_path, capsys):
    gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=True)
    err = capsys.readouterr().err
    assert "6/6 (100%)" in err and "eta" in err


def test_command_line_plan_tile_status_assemble(tmp_path, capsys):
    x = np.random.default_rng(3).standard_normal((7, 4))
    np.save(tmp_path / "x.npy", x)
    cache = tmp_path / "cache"
    request = gram.write_request(tmp_path / "req.json", x1=tmp_path / "x.npy", kernel="fc",
                                 kwargs={"depth": 3}, tile=3)
    assert gram.main(["plan", "--request", str(request), "--cache-root", str(cache),
                      "--plan-out", str(tmp_path / "plan.json")]) == 0
    lines = capsys.readouterr().out.split("\n")
    manifest = Path(lines[0])
    tiles = [tuple(map(int, line.split())) for line in lines[1:] if line.strip()]
    assert manifest.name == "manifest.json" and len(tiles) == 6
    for k, (i, j) in enumerate(tiles[:-1]):
        # the copy of the manifest (plan-out) and the cached one both work
        chosen = manifest if k % 2 else tmp_path / "plan.json"
        assert gram.main(["tile", "--manifest", str(chosen), "--i", str(i), "--j", str(j),
                          "--done", str(tmp_path / f"{i}_{j}.done")]) == 0
    capsys.readouterr()
    assert gram.main(["status", "--manifest", str(manifest)]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["5/6 tiles cached", f"{tiles[-1][0]} {tiles[-1][1]}"]
    assert gram.main(["assemble", "--manifest", str(manifest), "--out", str(tmp_path / "g.npz")]) == 2  # missing
    gram.main(["tile", "--manifest", str(manifest), "--i", str(tiles[-1][0]), "--j", str(tiles[-1][1])])
    assert gram.main(["assemble", "--manifest", str(manifest), "--out", str(tmp_path / "g.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "g.npz")["ntk"], fc_kernels(x, depth=3).ntk, rtol=1e-12)
    g = gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 3}, cache_root=cache, tile=3, progress=False)
    assert g.computed_tiles == 0  # the command line filled the same cache
    np.save(tmp_path / "x.npy", x + 1)  # data changed after planning
    assert gram.main(["tile", "--manifest", str(manifest), "--i", "0", "--j", "0"]) == 0  # cached: no data read
    gram.tile_path(manifest.parent, 0, 0).unlink()
    assert gram.main(["tile", "--manifest", str(manifest), "--i", "0", "--j", "0"]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_snakemake_runs_one_job_per_tile(tmp_path):
    """rules/gram.smk end to end: checkpoint plan, one job per tile, assemble."""
    x = np.random.default_rng(4).standard_normal((6, 3))
    np.save(tmp_path / "x.npy", x)
    gram.write_request(tmp_path / "results/cache/gram_requests/demo.json", x1="x.npy", kernel="fc",
                       kwargs={"depth": 2}, tile=3)
    (tmp_path / "Snakefile").write_text(f'include: "{ROOT / "rules" / "gram.smk"}"\n')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "2",
                          "results/cache/gram_plans/demo/gram.npz"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((tmp_path / "results/cache/gram_plans/demo/tiles").glob("*.done"))) == 3
    out = np.load(tmp_path / "results/cache/gram_plans/demo/gram.npz")
    np.testing.assert_allclose(out["ntk"], fc_kernels(x, depth=2).ntk, rtol=1e-12)
    manifest = json.loads((tmp_path / "results/cache/gram_plans/demo/manifest.json").read_text())
    assert (tmp_path / "results/cache/gram" / manifest["hash"] / "tile_0_1.npz").exists()


def test_the_gram_library_knows_no_stage():
    """ntkrepro.gram (cache, tiles, command line) imports neither Hydra/OmegaConf, the stage runner, the
    config composition, nor anything under experiments/ (the stages' requests are the edge's:
    scripts/gram_requests.py)."""
    code = ("import sys, ntkrepro.gram\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')\n"
            "             or m in ('ntkrepro.stage', 'ntkrepro.config') or m.startswith('ntkrepro_stage_')\n"
            "             or 'experiments' in (getattr(sys.modules[m], '__file__', None) or '')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def _fake_clocks(monkeypatch, wall_step: float, cpu_step: float):
    """gram's perf_counter / process_time advancing by a fixed step per call: a tile's recorded seconds are
    then exactly (wall_step, cpu_step) (two reads per tile)."""
    import itertools

    walls, cpus = itertools.count(step=wall_step), itertools.count(step=cpu_step)
    monkeypatch.setattr(gram, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(gram, "process_time", lambda: next(cpus))


def test_tiles_record_their_compute_seconds_wherever_computed(ints, tmp_path, monkeypatch):
    """A Gram's ``seconds`` is the sum of its tiles' records: computed now, read back from the cache,
    resumed (each tile keeps its own record), or filled by a tile job; None when a tile has no record."""
    _fake_clocks(monkeypatch, 1.0, 2.0)
    g = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert g.seconds == (6.0, 12.0)  # 6 upper tiles, (1, 2) seconds each
    monkeypatch.undo()
    again = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert (again.computed_tiles, again.seconds) == (0, (6.0, 12.0))  # from the records, not this call's time
    gram.tile_path(g.cache_dir, 0, 2).unlink()
    _fake_clocks(monkeypatch, 10.0, 30.0)
    resumed = gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert (resumed.computed_tiles, resumed.seconds) == (1, (15.0, 40.0))  # 5 x (1, 2) + (10, 30)
    into = gram.compute_gram_into(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False)
    assert into.seconds == (60.0, 180.0)  # its own tiles (one field: another hash), 6 x (10, 30)
    spec = gram.make_spec(ints, kernel="test_poly", tile=4)
    arrays = gram.load_tile(spec, g.cache_dir, 0, 0)
    gram.save_tile(spec, g.cache_dir, 0, 0, arrays)  # a tile written without a record (an older cache)
    assert gram.compute_gram(ints, kernel="test_poly", cache_root=tmp_path, tile=4, progress=False).seconds is None


def test_tile_job_records_seconds_the_stage_reads(tmp_path, monkeypatch):
    x = np.random.default_rng(1).standard_normal((5, 3))
    np.save(tmp_path / "x.npy", x)
    assert gram.main(["plan", "--x1", str(tmp_path / "x.npy"), "--kernel", "fc", "--kwargs",
                      '{"depth": 2}', "--tile", "3", "--cache-root", str(tmp_path)]) == 0
    spec = gram.make_spec(x, kernel="fc", kernel_kwargs={"depth": 2}, tile=3)
    manifest = tmp_path / "gram" / spec.hash / "manifest.json"
    _fake_clocks(monkeypatch, 0.5, 1.5)
    for i, j in spec.tiles():
        assert gram.main(["tile", "--manifest", str(manifest), "--i", str(i), "--j", str(j)]) == 0
    monkeypatch.undo()
    assert gram.tile_seconds(manifest.parent, 0, 1) == (0.5, 1.5)
    g = gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 2}, tile=3, cache_root=tmp_path, progress=False)
    assert (g.computed_tiles, g.seconds) == (0, (1.5, 4.5))  # 3 tiles computed by the jobs
