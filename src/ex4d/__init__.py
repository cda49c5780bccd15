"""ex4d: extreme-viewpoint 4D video synthesis from one monocular video.

The public API is importable from here; heavy modules load on first use (``import ex4d`` stays cheap)::

    import ex4d
    result = ex4d.recon("input.mp4", "depth.npz", cam="90")   # DW-Mesh render + mask along a camera path
    ex4d.run("input.mp4", "out", cams=["90"], depth="depth.npz")  # the whole pipeline, cached stage by stage
"""

import logging
from importlib import import_module

__version__ = "0.1.0"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


# diffusers 0.42 warns on import whenever torchao ≥ 0.17 is installed (our 'fp8' extra) that it cannot register
# torchao's old tensor classes for unpickling; ex4d loads no torchao-serialised checkpoint, so the line is noise.
logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").addFilter(
    _DropMessage("Unable to import `torchao` Tensor objects"))

_LAZY = {
    "recon": "ex4d.reconstruction",
    "write_recon_outputs": "ex4d.reconstruction",
    "ReconResult": "ex4d.reconstruction",
    "run": "ex4d.runner",
    "run_demo": "ex4d.demo",
    "estimate_depth": "ex4d.depth.api",
    "generate": "ex4d.inpaint.generate",
    "evaluate_pair": "ex4d.eval.harness",
    "make_trajectory": "ex4d.geometry.trajectory",
    "load_trajectory": "ex4d.io.trajectory_file",
    "save_trajectory": "ex4d.io.trajectory_file",
    "build_dw_mesh": "ex4d.mesh.build",
    "MeshSettings": "ex4d.mesh.build",
    "render_dw_mesh": "ex4d.render.dwmesh",
    "RenderSettings": "ex4d.render.dwmesh",
    "load_video": "ex4d.io.video",
    "save_video": "ex4d.io.video",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ex4d' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
