"""``ex4d view``: a live 4D viewer (the DW-Mesh of every frame drawn in the browser with WebGL2).

:mod:`ex4d.view.stream` packs colour + depth frame ranges, :mod:`ex4d.view.source` reads a run folder or a
video + depth file, :mod:`ex4d.view.server` serves the page in ``static/`` on 127.0.0.1.
"""
