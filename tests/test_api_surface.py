import subprocess
import sys

import ex4d


def test_public_names_resolve_lazily():
    for name in ex4d.__all__:
        assert getattr(ex4d, name) is not None, name
    assert callable(ex4d.recon) and ex4d.recon.__module__ == "ex4d.reconstruction"


def test_import_ex4d_is_cheap():
    code = "import sys, ex4d; print(sorted(m for m in ('torch', 'av', 'warp', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
