"""ntkrepro.gram.compute_gram_into: one output of a Gram written tile by tile into one preallocated array (in
memory, at a .npy path, or given), equal bit for bit to compute_gram's assembled Gram; upper tiles only of a
symmetric Gram; resumable through the same tile cache; memory and disk refused before anything is written."""

import tempfile
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkrepro import blocks, gram
from ntkrepro.blocks import DiskEstimateError, MemoryEstimateError

CALLS: list[tuple[int, int | None]] = []
FAIL_AFTER = {"calls": None}  # simulated kill after this many kernel calls (None: never)


@dataclass(frozen=True)
class IntKernels:
    nngp: np.ndarray
    ntk: np.ndarray


def int_kernel(x1, x2=None, dtype=None):
    """nngp = x.y, ntk = (x.y + 1)^2, exact on small integer inputs; counts its calls, raises when told."""
    if FAIL_AFTER["calls"] is not None and len(CALLS) >= FAIL_AFTER["calls"]:
        raise KeyboardInterrupt("simulated kill")
    CALLS.append((len(x1), None if x2 is None else len(x2)))
    dot = (x1 @ (x1 if x2 is None else x2).T).astype(dtype or np.float64)
    return IntKernels(nngp=dot, ntk=(dot + 1) ** 2)


gram.register_kernel("test_int_into", int_kernel)


@pytest.fixture(autouse=True)
def reset():
    CALLS.clear()
    FAIL_AFTER["calls"] = None


@pytest.fixture(scope="module")
def ints():
    return np.random.default_rng(0).integers(-3, 4, size=(11, 5)).astype(np.float64)


def test_symmetric_upper_tiles_only_then_mirrored_equal_compute_gram(ints, tmp_path):
    full = gram.compute_gram(ints, kernel="test_int_into", cache_root=tmp_path / "a", tile=4, progress=False)
    CALLS.clear()
    g = gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path / "b", tile=4, progress=False)
    assert len(CALLS) == 6 and g.nngp is None and (g.computed_tiles, g.cached_tiles) == (6, 0)  # 3 x 3 upper
    upper_blocks = np.zeros((11, 11), bool)
    for i, j in gram.make_spec(ints, kernel="test_int_into", tile=4).tiles():
        upper_blocks[4 * i:4 * i + 4, 4 * j:4 * j + 4] = True
    np.testing.assert_array_equal(g.ntk[upper_blocks], full.ntk[upper_blocks])
    assert not g.ntk[~upper_blocks].any()  # the lower blocks are never written
    mirrored = gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path / "b", tile=4,
                                      mirror=True, field="nngp", progress=False)
    np.testing.assert_array_equal(mirrored.nngp, full.nngp)


def test_cross_gram_into_a_memory_map_and_a_given_array(ints, tmp_path):
    y = ints[:7] * 2 - 1
    full = gram.compute_gram(ints, y, kernel="test_int_into", cache_root=tmp_path, tile=3, progress=False)
    path = tmp_path / "k_test.npy"
    g = gram.compute_gram_into(ints, y, kernel="test_int_into", cache_root=tmp_path, tile=3, out=path,
                               dtype="float32", progress=False)
    assert isinstance(g.ntk, np.memmap) and g.ntk.dtype == np.float32
    np.testing.assert_array_equal(np.load(path), full.ntk.astype(np.float32))
    given_out = np.full((11, 7), np.nan)
    again = gram.compute_gram_into(ints, y, kernel="test_int_into", cache_root=tmp_path, tile=3, out=given_out,
                                   dtype="float32", progress=False)
    assert again.ntk is given_out and again.computed_tiles == 0  # the float32 tiles of the run before
    np.testing.assert_array_equal(given_out, full.ntk)


def test_the_cache_keeps_one_field_and_other_hashes_do_not_change(ints, tmp_path):
    g = gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path, tile=4, progress=False)
    with np.load(gram.tile_path(g.cache_dir, 0, 1)) as tile:
        assert "ntk" in tile.files and "nngp" not in tile.files
    plain = gram.make_spec(ints, kernel="test_int_into", tile=4)
    assert "fields" not in plain.identity() and plain.hash != g.hash
    assert gram.GramSpec.from_identity(gram.read_manifest(g.cache_dir / "manifest.json")["identity"]).hash == g.hash


def test_a_killed_run_loses_at_most_one_tile(ints, tmp_path):
    FAIL_AFTER["calls"] = 4
    with pytest.raises(KeyboardInterrupt):
        gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path, tile=4, progress=False)
    FAIL_AFTER["calls"] = None
    CALLS.clear()
    g = gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path, tile=4, mirror=True,
                               progress=False)
    assert (g.computed_tiles, g.cached_tiles) == (2, 4) and len(CALLS) == 2  # 4 tiles kept, 2 left to do
    np.testing.assert_array_equal(g.ntk, (ints @ ints.T + 1) ** 2)


def test_memory_and_disk_are_refused_before_any_file_or_array(ints, tmp_path, monkeypatch):
    x = np.random.default_rng(1).standard_normal((1000, 2))
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 1000 * 1000 * 8)
    with pytest.raises(MemoryEstimateError, match="rows of x1: 1000.*out=<path>.npy"):
        gram.compute_gram_into(x, kernel="test_int_into", cache_root=tmp_path, tile=100, progress=False)
    monkeypatch.setattr(blocks, "free_disk_bytes", lambda path: 1000 * 1000 * 4)
    with pytest.raises(DiskEstimateError, match="k.npy"):  # fits in memory on disk, but the disk is too small
        gram.compute_gram_into(x, kernel="test_int_into", cache_root=tmp_path, tile=100, out=tmp_path / "k.npy",
                               progress=False)
    with pytest.raises(DiskEstimateError, match="55 tiles of 100 x 100"):  # the float64 cache of 55 upper tiles
        gram.compute_gram_into(x, kernel="test_int_into", cache_root=tmp_path, tile=100,
                               out=np.zeros((1000, 1000)), progress=False)
    assert CALLS == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,msg", [
    ({"field": "both"}, "field must be"),
    ({"out": np.zeros((11, 10))}, "shape \\(11, 11\\)"),
    ({"out": np.zeros((11, 11), np.int64)}, "float array"),
    ({"out": [[0.0]]}, "None, a path or a numpy array"),
])
def test_bad_arguments(ints, tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path, progress=False, **kwargs)
    assert CALLS == []


def test_progress_with_eta_when_not_a_tty(ints, tmp_path, capsys):
    gram.compute_gram_into(ints, kernel="test_int_into", cache_root=tmp_path, tile=4, progress=True)
    err = capsys.readouterr().err
    assert "6/6 (100%)" in err and "eta" in err


@settings(max_examples=25, deadline=None)
@given(n1=st.integers(1, 12), n2=st.integers(0, 9), tile=st.integers(1, 5), seed=st.integers(0, 99))
def test_property_equals_the_assembled_gram(n1, n2, tile, seed):
    """Any sizes and tile sides (n2 = 0: the symmetric Gram of x1, mirrored) give compute_gram's Gram exactly."""
    rng = np.random.default_rng(seed)
    x1 = rng.integers(-3, 4, size=(n1, 3)).astype(np.float64)
    x2 = rng.integers(-3, 4, size=(n2, 3)).astype(np.float64) if n2 else None
    with tempfile.TemporaryDirectory() as root:
        full = gram.compute_gram(x1, x2, kernel="test_int_into", cache_root=root, tile=tile, progress=False)
        g = gram.compute_gram_into(x1, x2, kernel="test_int_into", cache_root=root, tile=tile, mirror=True,
                                   progress=False)
    np.testing.assert_array_equal(g.ntk, full.ntk)


def test_regression_requests_take_the_large_path_above_the_threshold(ints, tmp_path, monkeypatch):
    """K(train, train) of 11 rows in float64 is 968 bytes: at the threshold both Grams are assembled
    (compute_gram), above it both keep ntk only in one float32 array each; a request file of either plans
    to the hash the stage's lookup uses (so tile jobs fill that cache)."""
    x_te = ints[:4] + 1
    args = dict(kernel="test_int_into", kernel_kwargs={}, tile=4, precision="float32")
    monkeypatch.setattr(gram, "LARGE_GRAM_BYTES", 8 * 11**2)
    train, test = gram.regression_requests(ints, x_te, **args)
    assert train.into is None and test.into is None and test.x2 is ints
    assert train.spec().hash == gram.make_spec(ints, kernel="test_int_into", tile=4).hash
    full = train.compute(tmp_path, progress=False)
    assert full.nngp is not None and full.ntk.dtype == np.float64
    monkeypatch.setattr(gram, "LARGE_GRAM_BYTES", 8 * 11**2 - 1)
    train, test = gram.regression_requests(ints, x_te, **args)
    assert (train.into, test.into, train.fields) == ("float32", "float32", ("ntk",))
    k_train, k_test = (r.compute(tmp_path, progress=False) for r in (train, test))
    assert k_train.nngp is None and k_train.ntk.dtype == np.float32 and k_train.computed_tiles == 6
    np.testing.assert_array_equal(np.triu(k_train.ntk), np.triu(full.ntk).astype(np.float32))
    assert not np.tril(k_train.ntk, -4).any()  # lower tiles left zero (read by the in-place solve: upper only)
    np.testing.assert_array_equal(k_test.ntk, ((x_te @ ints.T + 1) ** 2).astype(np.float32))
    mirrored = train.compute(tmp_path, progress=False, mirror=True)
    assert mirrored.computed_tiles == 0 and np.array_equal(mirrored.ntk, full.ntk.astype(np.float32))
    for request in (train, test):
        path = gram.request_gram(tmp_path / "requests", request)
        assert gram.main(["plan", "--request", str(path), "--cache-root", str(tmp_path / "planned")]) == 0
        assert gram.read_manifest(tmp_path / "planned" / "gram" / path.stem / "manifest.json")["hash"] \
            == path.stem == request.spec().hash
