"""Fixtures: a loopback HTTP server and registry entries pointed at small files served from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_datasets import fake_cifar_files, fake_mnist_files, sha256

from ntkrepro.data import REGISTRY, RemoteFile


@dataclass
class Server:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/www`` that records every GET path."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(root, f"http://127.0.0.1:{httpd.server_port}/", requests)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def serve(http_server, monkeypatch):
    """``serve(name, {split: [(file name, bytes), ...]}, **spec_changes)``: put the files on the
    server and point the registry entry ``name`` at them (URLs, SHA-256; no system dirs, no sizes)."""

    def _serve(name: str, files: dict[str, list[tuple[str, bytes]]], **changes):
        remotes = {}
        for split, items in files.items():
            remotes[split] = []
            for file_name, content in items:
                (http_server.root / file_name).write_bytes(content)
                remotes[split].append(RemoteFile(file_name, (http_server.url + file_name,), sha256(content)))
            remotes[split] = tuple(remotes[split])
        spec = replace(REGISTRY[name], files=remotes, system_dirs=(), sizes=None, **changes)
        monkeypatch.setitem(REGISTRY, name, spec)
        return spec

    return _serve


@pytest.fixture
def fake_mnist(serve):
    arrays, files = fake_mnist_files()
    serve("mnist", files, image_shape=(6, 5, 1))
    return arrays


@pytest.fixture
def fake_cifar(serve):
    arrays, files = fake_cifar_files()
    serve("cifar10", files)
    serve("cifar2", files)
    return arrays
