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


def test_ex4d_run_is_callable_as_the_pipeline(tiny_inputs, tmp_path):
    """``ex4d.run(...)`` (the issue's Python API) is the function :func:`ex4d.runner.run`, a plain function: no
    module of that name shadows it, whatever was imported before."""
    import importlib
    import pkgutil
    import types

    import ex4d.runner as module

    for info in pkgutil.iter_modules(ex4d.__path__):
        if info.name in ("cli", "runner", "batch"):
            importlib.import_module(f"ex4d.{info.name}")
    video, depth, frames, _ = tiny_inputs
    assert ex4d.run is module.run and isinstance(ex4d.run, types.FunctionType)
    result = ex4d.run(video, tmp_path / "out", cams=["30"], depth=depth, fill="none", num_frames=None,
                      progress=False)
    assert isinstance(result, module.RunResult) and result.outputs["30"].is_file()
    assert ex4d.run(video, tmp_path / "out", cams=["30"], depth=depth, fill="none", num_frames=None,
                    progress=False).stages["fill_30"] == "cached"
