"""Tests for ex4d.io.atomic: results appear complete or not at all."""

import numpy as np
import pytest

from ex4d.io import atomic
from ex4d.io.atomic import atomic_path, save_npz_atomic


def test_atomic_path_moves_temp_onto_final(tmp_path):
    final = tmp_path / "video.mp4"
    with atomic_path(final) as tmp:
        # Same folder and suffix (format detection), hidden, not the final name, not yet created.
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".mp4"
        assert tmp.name.startswith(".video.tmp-")
        assert tmp != final and not tmp.exists()
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


def test_atomic_path_replaces_existing_file(tmp_path):
    final = tmp_path / "a.txt"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_path_removes_temp_on_exception(tmp_path, exc):
    final = tmp_path / "a.txt"
    final.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise exc
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_without_write_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "a.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_creates_parent_folders(tmp_path):
    final = tmp_path / "x" / "y" / "a.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("hi")
    assert final.read_text() == "hi"


@pytest.mark.parametrize("compressed", [False, True])
def test_save_npz_atomic_round_trip(tmp_path, compressed):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([True, False])
    out = save_npz_atomic(tmp_path / "arrays.npz", compressed=compressed, a=a, b=b)
    assert out == tmp_path / "arrays.npz"
    with np.load(out) as data:
        assert sorted(data.files) == ["a", "b"]
        np.testing.assert_array_equal(data["a"], a)
        np.testing.assert_array_equal(data["b"], b)
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


def test_save_npz_atomic_keeps_path_verbatim(tmp_path):
    save_npz_atomic(tmp_path / "cache.bin", x=np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["cache.bin"]
    with np.load(tmp_path / "cache.bin") as data:
        assert data["x"].shape == (3,)


def test_save_npz_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    final = tmp_path / "arrays.npz"
    final.write_bytes(b"previous")

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(atomic.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_npz_atomic(final, x=np.zeros(3))
    assert final.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]
