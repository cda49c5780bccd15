"""The error helpers: attribution of an InputError to an argument, and safe wording of loader failures."""

import numpy as np
import pytest

from ex4d.errors import InputError, about, load_failure


def test_about_attributes_only_unattributed_errors():
    with pytest.raises(InputError) as info:
        with about("depth"):
            raise InputError("expected finite z-depth, found NaN")
    assert info.value.argument == "depth" and str(info.value) == "depth: expected finite z-depth, found NaN"
    with pytest.raises(InputError) as info:
        with about("outer"):
            with about("cam"):
                raise InputError("bad")
    assert info.value.argument == "cam"  # the innermost owner wins
    with pytest.raises(ValueError) as info:
        with about("depth"):
            raise ValueError("a bug, not bad input")
    assert not hasattr(info.value, "argument")


def test_loader_failures_never_advise_unsafe_loading(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("plain text")
    with pytest.raises(ValueError) as info:
        np.load(path)
    assert "allow_pickle" in str(info.value)  # numpy's own advice...
    reason = load_failure(info.value)
    assert "allow_pickle" not in reason and "refused" in reason  # ...is not passed on
    assert load_failure(EOFError()) == "the file is empty or truncated"
    assert load_failure(OSError("disk")) == "OSError: disk"
