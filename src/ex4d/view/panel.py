"""The web app's 4D viewer panel: ``ex4d view``'s server for a clip of ``ex4d ui``, started on first use.

Each clip gets its own server on a free 127.0.0.1 port (the page is the same as ``ex4d view``'s), kept while the app
runs (the last few clips); the app embeds it in an iframe with the path being designed shown in the scene.
"""

from __future__ import annotations

import html
import threading
import time

import numpy as np

from ex4d.view.server import ViewApp, serve_in_thread
from ex4d.view.source import CameraPath, ViewSource

_MAX_SERVERS = 4
_servers: dict = {}  # clip key -> (server, url, source)
_lock = threading.Lock()


def clip_viewer_url(key: str, frames: np.ndarray, depth: np.ndarray, K: np.ndarray, fps: float,
                    path: CameraPath | None = None) -> str:
    """URL of the viewer of clip ``key`` (frames (T,H,W,3) uint8, depth (T,H,W), K (3,3)), with ``path`` as its
    one camera path (replacing the previous one)."""
    with _lock:
        if key not in _servers:
            if len(_servers) >= _MAX_SERVERS:
                server, _, _ = _servers.pop(next(iter(_servers)))
                server.shutdown()
                server.server_close()
            K_all = np.repeat(np.asarray(K, np.float32).reshape(1, 3, 3), len(depth), 0)
            source = ViewSource(frames, depth, K_all, fps, title=f"clip {key}")
            server, url = serve_in_thread(ViewApp(source))
            _servers[key] = (server, url, source)
        _, url, source = _servers[key]
        source.paths.clear()
        if path is not None:
            source.paths[path.name] = path
    return url


def viewer_html(url: str, height: int = 560) -> str:
    """An iframe of the viewer page and a link opening it in its own tab."""
    src = html.escape(f"{url}?t={time.time_ns()}")  # a new src reloads the page with the current path
    return (f'<p><a href="{src}" target="_blank" rel="noopener">open the 4D viewer in a new tab</a></p>'
            f'<iframe src="{src}" style="width:100%;height:{int(height)}px;border:0" title="ex4d view"></iframe>')
