"""Fixtures of the reliability tests (tiny models written once) and the corpus report at the end of the run."""

import os
from pathlib import Path

import pytest

from .report import STATS, summary, table


@pytest.fixture(scope="session")
def corpus_models(tmp_path_factory):
    """(Wan2.1-I2V folder, ex4d.ckpt): tiny random models in the real layouts (tests/inpaint/tiny.py)."""
    from tests.inpaint.tiny import write_ex4d_ckpt, write_wan_dir

    root = tmp_path_factory.mktemp("corpus_models")
    return write_wan_dir(root / "wan"), write_ex4d_ckpt(root / "ex4d.ckpt")


def pytest_terminal_summary(terminalreporter):
    if STATS["tried"] or STATS["valid"]:
        terminalreporter.write_line(summary())
        if os.environ.get("EX4D_RELIABILITY_TABLE"):
            Path(os.environ["EX4D_RELIABILITY_TABLE"]).write_text(table())
