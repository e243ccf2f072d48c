"""ntkrepro.gram under a damaged cache: each fault is injected into a finished cache, logged in one line,
the damaged tile recomputed, and the Gram bit-identical to the exact reference (integer-valued inputs, a
kernel exact in float64) — values scaled x1.5 inside a valid tile file, a tile moved or copied to another
position, a tile of another configuration, a truncated tile, a temporary file left by a writer killed with
SIGKILL, a damaged manifest; never an exception."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

from ntkrepro import gram

KERNEL = "test_poly_faults"
CALLS: list[tuple[int, int | None]] = []


@dataclass(frozen=True)
class Poly:
    nngp: np.ndarray
    ntk: np.ndarray


def poly_kernel(x1, x2=None, *, offset=1.0):
    """(x.y, (x.y + offset)^2), exact in float64 on small integer inputs; counts its calls."""
    CALLS.append((len(x1), None if x2 is None else len(x2)))
    dot = np.asarray(x1, np.float64) @ np.asarray(x1 if x2 is None else x2, np.float64).T
    return Poly(nngp=dot, ntk=(dot + offset) ** 2)


gram.register_kernel(KERNEL, poly_kernel)


@pytest.fixture
def ints():
    return np.random.default_rng(3).integers(-3, 4, size=(11, 5)).astype(np.float64)


def reference(x, offset=1.0):
    dot = x @ x.T
    return dot, (dot + offset) ** 2


def build(x, root, **kw):
    CALLS.clear()
    return gram.compute_gram(x, kernel=KERNEL, cache_root=root, tile=4, progress=False, **kw)


def assert_exact(g, x):
    nngp, ntk = reference(x)
    np.testing.assert_array_equal(g.nngp, nngp)
    np.testing.assert_array_equal(g.ntk, ntk)


def one_line_warnings(caplog):
    records = [r for r in caplog.records if r.name == "ntkrepro.gram" and r.levelno >= logging.WARNING]
    assert records and all("\n" not in r.getMessage() for r in records)
    return " ".join(r.getMessage() for r in records)


def test_every_tile_records_the_sha256_of_its_contents(ints, tmp_path):
    g = build(ints, tmp_path)
    for i, j in gram.make_spec(ints, kernel=KERNEL, tile=4).tiles():
        with np.load(gram.tile_path(g.cache_dir, i, j)) as z:
            arrays = {k: z[k] for k in ("nngp", "ntk")}
            assert str(z["sha256"]) == gram.tile_digest(g.hash, i, j, arrays)
    arrays = {"ntk": np.arange(6.0).reshape(2, 3)}
    base = gram.tile_digest("h", 0, 1, arrays)
    nudged = {"ntk": arrays["ntk"].copy()}
    nudged["ntk"][1, 2] = np.nextafter(nudged["ntk"][1, 2], np.inf)  # one ulp
    assert len({base, gram.tile_digest("h", 0, 1, nudged), gram.tile_digest("h", 1, 0, arrays),
                gram.tile_digest("g", 0, 1, arrays), gram.tile_digest("h", 0, 1, {"ntk": arrays["ntk"].T}),
                gram.tile_digest("h", 0, 1, {"ntk": arrays["ntk"].astype(np.float32)}),
                gram.tile_digest("h", 0, 1, {"nngp": arrays["ntk"]})}) == 7


@pytest.mark.parametrize("fault", ["scaled", "truncated", "moved", "copied", "foreign", "no_checksum"])
def test_damaged_tile_is_logged_and_recomputed_bit_identical(ints, tmp_path, caplog, fault):
    g = build(ints, tmp_path)
    assert_exact(g, ints)
    path = gram.tile_path(g.cache_dir, 0, 1)
    if fault == "scaled":  # a valid zip at the right place, right hash / position / old checksum, values x1.5
        with np.load(path) as z:
            stored = {k: z[k] for k in z.files}
        np.savez(path, **{k: (v * 1.5 if k in ("nngp", "ntk") else v) for k, v in stored.items()})
        expected_calls, message = 1, "do not match their SHA-256"
    elif fault == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected_calls, message = 1, "unreadable tile"
    elif fault == "moved":  # tile (0, 2) moved onto position (0, 1): both are recomputed
        shutil.move(gram.tile_path(g.cache_dir, 0, 2), path)
        expected_calls, message = 2, "holds tile (0, 2), not (0, 1)"
    elif fault == "copied":
        shutil.copy(gram.tile_path(g.cache_dir, 1, 2), path)
        expected_calls, message = 1, "holds tile (1, 2), not (0, 1)"
    elif fault == "foreign":  # the same position of another configuration's cache
        other = build(ints, tmp_path, kernel_kwargs={"offset": 3.0})
        shutil.copy(gram.tile_path(other.cache_dir, 0, 1), path)
        expected_calls, message = 1, "written for configuration"
    else:  # a tile without its checksum (e.g. written by an older version)
        with np.load(path) as z:
            stored = {k: z[k] for k in z.files if k != "sha256"}
        np.savez(path, **stored)
        expected_calls, message = 1, "missing sha256"
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        again = build(ints, tmp_path)
    assert len(CALLS) == expected_calls and again.computed_tiles == expected_calls
    assert message in one_line_warnings(caplog)
    assert_exact(again, ints)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        third = build(ints, tmp_path)  # the repaired cache is used as is
    assert CALLS == [] and third.computed_tiles == 0 and not caplog.records
    assert_exact(third, ints)


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from ntkrepro import gram

def poly(x1, x2=None, *, offset=1.0):
    dot = x1 @ (x1 if x2 is None else x2).T
    class K: pass
    k = K(); k.nngp = dot; k.ntk = (dot + offset) ** 2
    return k

gram.register_kernel(sys.argv[2], poly)
replace, written = os.replace, [0]
def replace_then_die(src, dst):
    if os.path.basename(str(src)).startswith(".tile_"):
        written[0] += 1
        if written[0] == 3:  # SIGKILL while the third tile is a temporary file
            os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = replace_then_die
x = np.load(sys.argv[1])
gram.compute_gram(x, kernel=sys.argv[2], cache_root=sys.argv[3], tile=4, progress=False)
"""


def test_temporary_file_of_a_killed_writer_is_removed_and_its_tile_computed(ints, tmp_path, caplog):
    np.save(tmp_path / "x.npy", ints)
    root = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "x.npy"), KERNEL, str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    directory = gram.cache_dir(gram.make_spec(ints, kernel=KERNEL, tile=4), root)
    temps = list(directory.glob(".tile_*.tmp"))
    assert len(temps) == 1 and len(list(directory.glob("tile_*.npz"))) == 2
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        g = build(ints, root)
    assert "removed stale temporary file" in one_line_warnings(caplog)
    assert not list(directory.glob(".tile_*.tmp"))
    assert g.computed_tiles == 4 and g.cached_tiles == 2  # 6 upper-triangle tiles, 2 written before the kill
    assert_exact(g, ints)


def test_temporary_files_of_live_writers_are_kept(ints, tmp_path):
    g = build(ints, tmp_path)
    live = g.cache_dir / f".tile_0_0.npz.{gram._HOST}.{os.getpid()}.0.tmp"  # this process: alive
    elsewhere = g.cache_dir / ".tile_0_1.npz.othernode.4242.0.tmp"  # another host, recent: maybe writing
    old = g.cache_dir / ".tile_0_2.npz.othernode.4243.0.tmp"  # another host, hours old: stale
    legacy = g.cache_dir / ".tile_1_1.npz.k2x9q.tmp"  # another naming, hours old: stale
    for path in (live, elsewhere, old, legacy):
        path.write_bytes(b"partial")
    hours_ago = time.time() - 2 * gram.STALE_TEMP_SECONDS
    for path in (old, legacy):
        os.utime(path, (hours_ago, hours_ago))
    removed = gram.remove_stale_temps(g.cache_dir)
    assert sorted(removed) == sorted([old, legacy])
    assert live.exists() and elsewhere.exists()
    assert gram.remove_stale_temps(g.cache_dir, (0, 1)) == []


def test_damaged_manifest_is_rewritten(ints, tmp_path, caplog):
    g = build(ints, tmp_path)
    (g.cache_dir / "manifest.json").write_text('{"hash": "nonsense", "identity": {"kernel": "x"}}')
    with caplog.at_level(logging.WARNING, logger="ntkrepro.gram"):
        again = build(ints, tmp_path)
    assert "damaged manifest" in one_line_warnings(caplog)
    assert again.computed_tiles == 0
    assert_exact(again, ints)
    assert gram.read_manifest(g.cache_dir / "manifest.json")["hash"] == g.hash


def test_tile_command_recomputes_a_damaged_tile_and_records_its_checksum(tmp_path, capsys):
    x = np.random.default_rng(4).integers(-3, 4, size=(6, 3)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    root = tmp_path / "cache"
    assert gram.main(["plan", "--x1", str(tmp_path / "x.npy"), "--kernel", "fc", "--kwargs", '{"depth": 2}',
                      "--tile", "4", "--cache-root", str(root)]) == 0
    manifest = next(root.glob("gram/*/manifest.json"))
    done = tmp_path / "done.json"
    assert gram.main(["tile", "--manifest", str(manifest), "--i", "0", "--j", "1", "--done", str(done)]) == 0
    tile = gram.tile_path(manifest.parent, 0, 1)
    with np.load(tile) as z:
        stored = {k: z[k] for k in z.files}
    np.savez(tile, **{k: (v * 1.5 if k in ("nngp", "ntk") else v) for k, v in stored.items()})
    capsys.readouterr()
    assert gram.main(["tile", "--manifest", str(manifest), "--i", "0", "--j", "1", "--done", str(done)]) == 0
    assert "computed tile (0, 1)" in capsys.readouterr().out
    with np.load(tile) as z:  # the same contents and checksum (its compute seconds are this run's)
        assert all(np.array_equal(z[k], stored[k]) for k in ("nngp", "ntk", "sha256", "hash", "i", "j"))
    assert json.loads(done.read_text())["sha256"] == str(stored["sha256"])
