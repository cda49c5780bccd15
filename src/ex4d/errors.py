"""Exceptions raised for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """A user-supplied file, array or option is unusable; the message says which one and why."""
