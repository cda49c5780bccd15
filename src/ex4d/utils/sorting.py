"""Natural file-name order, the one order every folder of frames or videos is read in."""

from __future__ import annotations

import re

__all__ = ["natural_key"]


def natural_key(name: str) -> tuple:
    """Sort key putting ``frame2.png`` before ``frame10.png`` (case-insensitive)."""
    # re.split with a capture group alternates text, number, text, ..., so the tuples compare type-safely.
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name.lower())))
