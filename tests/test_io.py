"""Atomic writes: content, no temporary files left behind, and the umask's file mode (not mkstemp's 0600)."""

import os
import stat

import numpy as np
import pytest

from ntkrepro.io import (
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    new_file_mode,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the previous one back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o027, 0o640)])
def test_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask and new_file_mode() == mode
    written = [atomic_write_bytes(tmp_path / "a.bin", b"x"), atomic_write_text(tmp_path / "b.txt", "y"),
               atomic_write_json(tmp_path / "c.json", {"a": 1}), atomic_save_npy(tmp_path / "d.npy", np.ones(2)),
               atomic_save_npz(tmp_path / "e.npz", a=np.ones(2))]
    for path in written:
        assert _mode(path) == mode, (path.name, oct(_mode(path)))
    # the same mode as a plain open() under that umask
    plain = tmp_path / "plain.txt"
    plain.write_text("z")
    assert _mode(plain) == mode


def test_overwrite_replaces_content_and_mode_and_leaves_no_temporary(tmp_path, umask):
    umask(0o077)
    path = atomic_write_text(tmp_path / "f.txt", "old")
    assert _mode(path) == 0o600
    umask(0o022)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
