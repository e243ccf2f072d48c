"""Progress with ETA for long work: a tqdm bar on a terminal, plain log lines otherwise.

Plain lines (``[desc] 12/40 (30%) elapsed 5.1s eta 11.9s``) keep Snakemake logs readable; they are
printed at most every ``every_s`` seconds, plus the last one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def _fmt(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def progress(
    items: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    every_s: float = 5.0,
    stream=None,
) -> Iterator[T]:
    """Iterate over ``items`` showing progress and an ETA (disabled: plain iteration)."""
    stream = stream or sys.stderr
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled:
        yield from items
        return
    if stream.isatty():
        yield from tqdm(items, total=total, desc=desc, file=stream, dynamic_ncols=True)
        return
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every_s or (total is not None and done == total):
            last = now
            elapsed = now - start
            if total:
                eta = elapsed / done * (total - done)
                line = (
                    f"[{desc}] {done}/{total} ({100 * done / total:.0f}%) "
                    f"elapsed {_fmt(elapsed)} eta {_fmt(eta)}"
                )
            else:
                line = f"[{desc}] {done} done, elapsed {_fmt(elapsed)}"
            print(line, file=stream, flush=True)
