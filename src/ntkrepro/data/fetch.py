"""Finding a dataset file: explicit path, cache, system dataset folders, then a verified download.

Every file is checked against the registry's SHA-256 before use. A file whose gzip wrapper differs
from the published one (Debian recompresses Fashion-MNIST) is accepted when the SHA-256 of its
decompressed payload matches ``RemoteFile.content_sha256``. Downloads go to a temporary file in the
cache folder and are renamed into place only after the checksum matched: no partial file is ever
left under the final name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ntkrepro.data.registry import DatasetSpec, RemoteFile
from ntkrepro.io import new_file_mode

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0
CACHE_ENV = "NTKREPRO_DATA"


class DataUnavailable(RuntimeError):
    """A dataset file could not be found or verified; the message (one line) names the file, where
    it is expected and the URL it comes from."""


@dataclass(frozen=True)
class FoundFile:
    path: Path
    source: str  # "path" | "cache" | "system" | "download"
    sha256: str  # of the bytes on disk


def default_cache_dir() -> Path:
    """The cache root when none is passed: ``$NTKREPRO_DATA`` if set, else ``~/.cache/ntkrepro``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ntkrepro"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _payload_sha256(path: Path) -> str | None:
    """SHA-256 of a gzip file's decompressed payload; None if it is not valid gzip."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
    except (OSError, EOFError):
        return None
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> str | None:
    """The file's SHA-256 if it matches ``remote`` (file or payload checksum), else None."""
    digest = sha256_file(path)
    if digest == remote.sha256:
        return digest
    if remote.content_sha256 is not None and _payload_sha256(path) == remote.content_sha256:
        return digest
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def download(url: str, dest: Path, remote: RemoteFile, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Stream ``url`` into a temporary file next to ``dest``, verify, ``os.replace`` into place.

    Returns the SHA-256; raises ``OSError``/``HTTPException`` (network) or ``ValueError`` (checksum)
    and removes the temporary file in every case."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "ntkrepro"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = verify(tmp, remote)
        if digest is None:
            raise ValueError(f"checksum mismatch (SHA-256 {sha256_file(tmp)}, expected {remote.sha256})")
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 -> the umask's mode, as a plain write would give
        os.replace(tmp, dest)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def find_file(spec: DatasetSpec, remote: RemoteFile, *, path: Path | None, cache_dir: Path,
              allow_download: bool) -> FoundFile:
    """Locate ``remote`` in order: ``path``, ``cache_dir/<folder>/``, the spec's system folders, a
    download into the cache. A file present at ``path`` that fails verification is an error (the
    caller pointed at it); a bad cached or system copy is skipped (a download replaces the cached one).
    """
    cached = cache_dir / spec.cache_folder / remote.name
    if path is not None:
        candidate = path if path.is_file() else path / remote.name
        if candidate.is_file():
            digest = verify(candidate, remote)
            if digest is None:
                raise DataUnavailable(f"{spec.name}: {candidate} fails the SHA-256 check (expected "
                                      f"{remote.sha256}); replace it with the file from {remote.urls[0]}")
            return FoundFile(candidate, "path", digest)
    tried = []
    for source, candidate in [("cache", cached)] + [("system", Path(d) / remote.name)
                                                    for d in spec.system_dirs]:
        if candidate.is_file():
            digest = verify(candidate, remote)
            if digest is not None:
                return FoundFile(candidate, source, digest)
            tried.append(f"{candidate} fails the SHA-256 check")
        else:
            tried.append(f"not in {candidate.parent}/")
    if not allow_download:
        tried.append("downloads disabled")
    else:
        for url in remote.urls:
            log.info("downloading %s from %s", remote.name, url)
            try:
                return FoundFile(cached, "download", download(url, cached, remote))
            except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts: OSError
                tried.append(f"download from {url} failed ({_one_line(exc)})")
    raise DataUnavailable(f"{spec.name}: file {remote.name} unavailable: {'; '.join(tried)}. Put the "
                          f"file at {cached} (or pass path=) — it is published at {remote.urls[0]}")
