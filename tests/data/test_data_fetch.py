"""Sources, download, checksum and cache of ``ntkrepro.data`` against a loopback HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import socket
from dataclasses import replace

import pytest
from fake_datasets import fake_mnist_files, sha256

from ntkrepro.data import REGISTRY, DataUnavailable, RemoteFile, load
from ntkrepro.data.fetch import default_cache_dir


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _files_in(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_verifies_then_cache_serves_second_load(fake_mnist, http_server, tmp_path):
    cache = tmp_path / "cache"
    first = load("mnist", "train", cache_dir=cache)
    assert first.provenance.source == "download"
    assert sorted(http_server.requests) == ["/train-images-idx3-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert (cache / "mnist" / name).read_bytes() == (http_server.root / name).read_bytes()
    assert _files_in(cache / "mnist") == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]

    second = load("mnist", "train", cache_dir=cache)
    assert second.provenance.source == "cache"
    assert len(http_server.requests) == 2  # nothing fetched again
    assert second.provenance.sha256 == first.provenance.sha256
    assert (second.x == first.x).all()


def test_provenance_sha256_is_the_listing_of_the_split_files(fake_mnist, http_server, tmp_path):
    prov = load("mnist", "test", cache_dir=tmp_path).provenance
    names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    listing = "".join(f"{sha256((http_server.root / n).read_bytes())}  {n}\n" for n in names)
    assert prov.sha256 == hashlib.sha256(listing.encode()).hexdigest()


def test_checksum_mismatch_leaves_no_file_and_names_file_place_and_url(fake_mnist, http_server, tmp_path):
    (http_server.root / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(DataUnavailable) as info:
        load("mnist", "train", cache_dir=cache)
    msg = str(info.value)
    assert "\n" not in msg
    assert "train-labels-idx1-ubyte.gz" in msg and "checksum mismatch" in msg
    assert str(cache / "mnist" / "train-labels-idx1-ubyte.gz") in msg
    assert http_server.url + "train-labels-idx1-ubyte.gz" in msg
    # the good images file may be cached; the bad labels file and any temporary file are gone
    assert _files_in(cache / "mnist") == ["train-images-idx3-ubyte.gz"]


def test_offline_error_names_file_location_and_url(monkeypatch, tmp_path):
    offline = _closed_port_url()
    spec = REGISTRY["mnist"]
    files = {split: tuple(replace(f, urls=(offline + f.name,)) for f in remotes)
             for split, remotes in spec.files.items()}
    monkeypatch.setitem(REGISTRY, "mnist", replace(spec, files=files))
    with pytest.raises(DataUnavailable) as info:
        load("mnist", "test", cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert "\n" not in msg
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "c" / "mnist" / "t10k-images-idx3-ubyte.gz") in msg
    assert offline + "t10k-images-idx3-ubyte.gz" in msg and "refused" in msg.lower()
    assert not (tmp_path / "c" / "mnist").exists() or _files_in(tmp_path / "c" / "mnist") == []


def test_allow_download_false_never_touches_the_network(fake_mnist, http_server, tmp_path):
    with pytest.raises(DataUnavailable, match="downloads disabled"):
        load("mnist", "train", cache_dir=tmp_path, allow_download=False)
    assert http_server.requests == []


def test_explicit_path_comes_first_and_is_verified(serve, http_server, tmp_path):
    _, files = fake_mnist_files()
    serve("mnist", files, image_shape=(6, 5, 1))
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, content in files["test"]:
        (folder / name).write_bytes(content)
    data = load("mnist", "test", path=folder, cache_dir=tmp_path / "cache")
    assert data.provenance.source == "path" and http_server.requests == []

    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(DataUnavailable, match="t10k-labels-idx1-ubyte.gz fails the SHA-256 check"):
        load("mnist", "test", path=folder, cache_dir=tmp_path / "cache")

    (folder / "t10k-labels-idx1-ubyte.gz").unlink()  # missing at path: the next sources are tried
    data = load("mnist", "test", path=folder, cache_dir=tmp_path / "cache")
    assert data.provenance.source == "path+download"
    assert http_server.requests == ["/t10k-labels-idx1-ubyte.gz"]


def test_corrupt_cached_file_is_replaced_by_a_verified_download(fake_mnist, http_server, tmp_path):
    cached = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    cached.parent.mkdir()
    cached.write_bytes(b"truncated")
    data = load("mnist", "test", cache_dir=tmp_path)
    assert data.provenance.source == "download"
    assert cached.read_bytes() == (http_server.root / cached.name).read_bytes()


def test_system_dir_copy_with_other_gzip_wrapper_verifies_by_payload(serve, http_server, tmp_path):
    arrays, files = fake_mnist_files(seed=3)
    spec = serve("mnist", files, image_shape=(6, 5, 1))
    system = tmp_path / "usr-share"
    system.mkdir()
    remotes = {}
    for split, items in files.items():
        remotes[split] = []
        for (name, content), remote in zip(items, spec.files[split], strict=True):
            payload = gzip.decompress(content)
            recompressed = gzip.compress(payload, compresslevel=1, mtime=12345)
            assert recompressed != content
            (system / name).write_bytes(recompressed)
            remotes[split].append(replace(remote, content_sha256=sha256(payload)))
        remotes[split] = tuple(remotes[split])
    REGISTRY["mnist"] = replace(spec, files=remotes, system_dirs=(str(system),))
    data = load("mnist", "train", cache_dir=tmp_path / "cache")
    assert data.provenance.source == "system" and http_server.requests == []
    assert (data.y == arrays.train_labels).all()

    # a system copy whose payload differs is skipped; the download is used instead
    (system / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    data = load("mnist", "test", cache_dir=tmp_path / "cache")
    assert data.provenance.source == "system+download"
    assert http_server.requests == ["/t10k-labels-idx1-ubyte.gz"]


def test_mirrors_are_tried_in_order(serve, http_server, tmp_path):
    _, files = fake_mnist_files()
    spec = serve("mnist", files, image_shape=(6, 5, 1))
    dead = _closed_port_url()
    REGISTRY["mnist"] = replace(spec, files={
        split: tuple(RemoteFile(f.name, (dead + f.name, *f.urls), f.sha256) for f in remotes)
        for split, remotes in spec.files.items()})
    assert load("mnist", "train", cache_dir=tmp_path).provenance.source == "download"


def test_default_cache_dir_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("NTKREPRO_DATA", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("NTKREPRO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ntkrepro"
