"""Progress bars (tqdm on stderr), shown only when stderr is a terminal and bars are not disabled."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


def bars_allowed() -> bool:
    """False when stderr is not a TTY or ``HF_HUB_DISABLE_PROGRESS_BARS`` / ``SUBNETSCOPE_NO_PROGRESS`` is set."""
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "SUBNETSCOPE_NO_PROGRESS"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return False
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it") -> Iterator[Any]:
    """A tqdm bar when ``enabled`` and allowed, else an object whose ``update`` does nothing."""
    if not (enabled and bars_allowed()):
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
               file=sys.stderr, leave=False, dynamic_ncols=True)  # fmt: skip
    try:
        yield bar
    finally:
        bar.close()
