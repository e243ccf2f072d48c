"""The tiled Gram engine: tiles assemble exactly to the one-shot Gram, resume after interruption,
reject foreign tiles, recompute corrupt ones; the per-tile command line and Snakemake rule."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ntkrepro import gram
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.fc import fc_kernels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((11, 5))


def test_tiles_assemble_to_one_shot_gram(x, tmp_path):
    kw = {"depth": 3, "sigma_w2": 1.5, "sigma_b2": 0.1}
    one_shot = fc_kernels(x, **kw)
    r = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    np.testing.assert_allclose(r.ntk, one_shot.ntk, rtol=1e-12)
    np.testing.assert_allclose(r.nngp, one_shot.nngp, rtol=1e-12)
    assert np.array_equal(r.ntk, r.ntk.T)
    assert r.computed_tiles == 6 and r.cached_tiles == 0  # 3x3 grid, upper triangle
    y = x[:7] + 0.5
    cross = gram.compute_gram(x, y, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    np.testing.assert_allclose(cross.ntk, fc_kernels(x, y, **kw).ntk, rtol=1e-12)


def test_cntk_tiles(tmp_path):
    imgs = np.random.default_rng(1).standard_normal((5, 4, 4, 2))
    kw = {"depth": 3, "readout": "gap", "fix_first_last": True}
    r = gram.compute_gram(imgs, kernel="cntk", kernel_kwargs=kw, cache_root=tmp_path, tile=2, progress=False)
    np.testing.assert_allclose(r.ntk, cntk(imgs, **kw).ntk, rtol=1e-5)


def test_resume_computes_only_missing_tiles(x, tmp_path, monkeypatch):
    kw = {"depth": 2}
    r = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    (r.directory / "tile_0_2.npz").unlink()  # as if interrupted before this tile
    calls = []
    real = gram.compute_tile
    monkeypatch.setattr(gram, "compute_tile", lambda p, i, j, **k: calls.append((i, j)) or real(p, i, j, **k))
    again = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    assert calls == [(0, 2)] and again.cached_tiles == 5
    np.testing.assert_array_equal(again.ntk, r.ntk)


def test_corrupt_tile_recomputed_and_foreign_tile_rejected(x, tmp_path):
    kw = {"depth": 2}
    r = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    (r.directory / "tile_1_1.npz").write_bytes(b"partial garbage")
    again = gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)
    assert again.computed_tiles == 1
    np.testing.assert_array_equal(again.ntk, r.ntk)
    other = gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 3}, cache_root=tmp_path, tile=4,
                              progress=False)
    (other.directory / "tile_0_0.npz").replace(r.directory / "tile_0_0.npz")
    with pytest.raises(ValueError, match="another configuration"):
        gram.compute_gram(x, kernel="fc", kernel_kwargs=kw, cache_root=tmp_path, tile=4, progress=False)


def test_key_depends_on_data_and_kernel(x, tmp_path):
    a = gram.plan(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=4)
    assert gram.plan(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=4).key == a.key
    assert gram.plan(x + 1e-9, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=4).key != a.key
    assert gram.plan(x, kernel="fc", kernel_kwargs={"depth": 3}, cache_root=tmp_path, tile=4).key != a.key


@pytest.mark.parametrize(
    "kwargs,msg",
    [({"kernel": "rbf"}, "unknown kernel"), ({"kernel": "fc", "tile": 0}, "tile"),
     ({"kernel": "fc", "x2": np.zeros((2, 3))}, "shapes differ")],
)
def test_bad_input(x, tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        gram.plan(x, kwargs.pop("x2", None), cache_root=tmp_path, **kwargs)


def test_snakemake_one_job_per_tile(x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "ntkrepro.gram", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, cwd=ROOT)
    plan = run("plan", "--x1", str(tmp_path / "x.npy"), "--kernel", "fc", "--kwargs", '{"depth": 2}',
               "--cache-root", str(tmp_path / "cache"), "--tile", "4")
    directory = plan.stdout.strip()
    targets = run("targets", "--dir", directory).stdout.split()
    assert len(targets) == 6
    smk = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "rules" / "gram.smk"),
                          "--cores", "2", *targets], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert smk.returncode == 0, smk.stderr[-2000:]
    assert run("targets", "--dir", directory).stdout.split() == []
    assert "all 6 tiles present" in run("assemble", "--dir", directory).stdout
    r = gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path / "cache", tile=4,
                          progress=False)
    assert r.computed_tiles == 0
    np.testing.assert_allclose(r.ntk, fc_kernels(x, depth=2).ntk, rtol=1e-12)
