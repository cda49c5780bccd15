"""``argparse`` value types shared by the command-line interfaces (argparse turns their errors into usage lines), and
:func:`flag_of`, the one place a Python argument name becomes the flag a user types."""

from __future__ import annotations

import argparse
import math


def _number(text: str, cast, ok, what: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


# Python argument names (InputError.argument, ex4d.errors.option) whose flag is not simply --name-with-dashes.
FLAG_OF = {"model_dir": "--wan-dir", "adapter": "--ex4d-ckpt", "intrinsics": "--depth"}


def flag_of(args: argparse.Namespace, name: str) -> str | None:
    """The flag of this command (its parsed ``args``) that sets the Python argument ``name``, or None."""
    return FLAG_OF.get(name) or ("--" + name.replace("_", "-") if hasattr(args, name) else None)
