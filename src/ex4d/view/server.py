"""The localhost server of ``ex4d view``: the static page, clip metadata, frame chunks and trajectory files.

Routes (all GET unless noted):

* ``/`` and ``/static/<file>``: the page (HTML/JS shipped in ``ex4d/view/static``; no third-party code).
* ``/api/info``: JSON: size, frame count, fps, source intrinsics, chunk size, depth encoding, camera paths.
* ``/api/chunk?start=S&count=N``: colour + depth of frames [S, S+N) (:mod:`ex4d.view.stream`), gzip'd.
* ``/api/output?name=P&start=S&count=N``: frames of path P's output video, same layout without depth.
* POST ``/api/trajectory/export?format=json|npz``: body ``{"w2c": (T,4,4), "K": (T,3,3)}`` (a per-frame flight) or
  ``{"keyframes": [{"frame": i, "w2c": (4,4)}, ...]}`` (written as ``t``/``frame``/``eye``/``look_at``/``up``
  keyframes); answers the trajectory file, read back by ex4d's loader before it is sent (what ``ex4d run --cam``
  will accept).
* POST ``/api/trajectory/load?name=FILE``: body = a trajectory file; answers ``{"name", "w2c", "K"}`` as
  ``ex4d run --cam FILE`` would see it for this clip (keyframes interpolated to every frame).

Bound to 127.0.0.1 only, and answering only requests addressed to 127.0.0.1 or localhost: nothing is reachable from
other machines, and nothing is fetched from the network.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import threading
from collections import OrderedDict
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from ex4d.errors import InputError
from ex4d.view.source import ViewSource
from ex4d.view.stream import DEPTH_ENCODINGS, pack_chunk, pack_frames

HOST = "127.0.0.1"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png"}
#: Frames per chunk: the page keeps a few chunks around the playhead, never the whole clip.
DEFAULT_CHUNK = 8
MAX_BODY = 64 << 20
_CACHE_CHUNKS = 16


class ViewApp:
    """The server's state: the clip, how it is chunked and encoded, and a small cache of packed chunks."""

    def __init__(self, source: ViewSource, chunk_frames: int = DEFAULT_CHUNK, encoding: str = "log16"):
        if encoding not in DEPTH_ENCODINGS:
            raise InputError(f"unknown depth encoding '{encoding}'; choose {', '.join(DEPTH_ENCODINGS)}",
                             "depth_encoding")
        if chunk_frames < 1:
            raise InputError(f"chunk size must be at least 1 frame, got {chunk_frames}", "chunk_frames")
        self.source, self.chunk_frames, self.encoding = source, int(chunk_frames), encoding
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def info(self) -> dict:
        s = self.source
        return {
            "title": s.title, "frames": s.num_frames, "height": int(s.depth.shape[1]), "width": int(s.depth.shape[2]),
            "fps": float(s.fps), "K": s.K.astype(np.float64).tolist(), "chunk": self.chunk_frames,
            "encoding": self.encoding, "border_depth": 100.0, "min_angle_deg": 2.5, "pixel_offset": 0.5,
            "near": 1e-3, "far": 1e3, "alpha_threshold": 125.0 / 255.0,
            "radius": reference_radius_of(s),
            "paths": [{"name": p.name, "w2c": p.w2c.tolist(), "K": np.asarray(p.K, np.float64).tolist(),
                       "output": p.output is not None} for p in s.paths.values()],
        }

    def _range(self, query: dict) -> tuple[int, int]:
        try:
            start = int(query.get("start", ["0"])[0])
            count = int(query.get("count", [str(self.chunk_frames)])[0])
        except ValueError:
            raise InputError("start and count must be integers") from None
        if not 0 <= start < self.source.num_frames or count < 1:
            raise InputError(f"frames [{start}, {start + count}) are outside the clip's {self.source.num_frames}")
        return start, min(count, self.source.num_frames - start, 64)

    def chunk(self, query: dict) -> bytes:
        start, count = self._range(query)
        key = ("chunk", start, count)
        return self._cached(key, lambda: pack_chunk(start, self.source.frames[start:start + count],
                                                    self.source.depth[start:start + count], self.encoding))

    def output(self, query: dict) -> bytes:
        name = query.get("name", [""])[0]
        path = self.source.paths.get(name)
        if path is None or path.output is None:
            raise InputError(f"no output video for path '{name}'")
        start, count = self._range(query)
        frames = self.source.output_frames(name)
        if start >= len(frames):
            raise InputError(f"output video of '{name}' has only {len(frames)} frames")
        key = ("output", name, start, count)
        return self._cached(key, lambda: pack_frames(start, frames[start:start + count]))

    def _cached(self, key, make) -> bytes:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = make()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > _CACHE_CHUNKS:
                self._cache.popitem(last=False)
        return data

    def export_trajectory(self, body: bytes, fmt: str) -> tuple[bytes, str]:
        """A recorded flight or placed keyframes -> trajectory file bytes (checked by reloading it)."""
        from ex4d.geometry.trajectory import Trajectory
        from ex4d.io.trajectory_file import load_trajectory, save_trajectory

        if fmt not in ("json", "npz"):
            raise InputError(f"format must be json or npz, got '{fmt}'")
        doc = json.loads(body)
        with tempfile.TemporaryDirectory(prefix="ex4d-view-") as tmp:
            path = Path(tmp) / f"flight.{fmt}"
            if "keyframes" in doc:
                if fmt != "json":
                    raise InputError("keyframes are written as .json")
                keyframes = sorted((self._keyframe(k) for k in doc["keyframes"]), key=lambda k: k["frame"])
                path.write_text(json.dumps({"keyframes": keyframes}))
            else:
                w2c = np.asarray(doc["w2c"], np.float64)
                K = np.asarray(doc["K"], np.float64) if doc.get("K") is not None else None
                save_trajectory(path, Trajectory(w2c=w2c, K=K, name="flight"))
            load_trajectory(path, self.source.num_frames)  # what ex4d run --cam will do with it
            return path.read_bytes(), path.name

    def _keyframe(self, key: dict) -> dict:
        """A keyframe as ``t`` (and its ``frame``), ``eye``, ``look_at`` and ``up``: ex4d's loader rebuilds exactly
        this camera (roll included: ``up`` is the camera's own y axis), and the web app's keyframe table reads it."""
        frame = int(key["frame"])
        if not 0 <= frame < self.source.num_frames:
            raise InputError(f"keyframe frame {frame} is outside the clip's {self.source.num_frames} frames")
        c2w = np.linalg.inv(np.asarray(key["w2c"], np.float64))
        eye, forward, down = c2w[:3, 3], c2w[:3, 2], c2w[:3, 1]
        distance = reference_radius_of(self.source)
        return {"t": frame / max(self.source.num_frames - 1, 1), "frame": frame, "eye": eye.tolist(),
                "look_at": (eye + distance * forward).tolist(), "up": down.tolist()}

    def load_trajectory(self, body: bytes, name: str) -> dict:
        from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES, load_trajectory

        suffix = Path(name).suffix.lower()
        if suffix not in TRAJECTORY_SUFFIXES:
            raise InputError(f"{name}: trajectory files must end in .npz or .json")
        with tempfile.TemporaryDirectory(prefix="ex4d-view-") as tmp:
            path = Path(tmp) / (Path(name).stem + suffix)
            path.write_bytes(body)
            trajectory = load_trajectory(path, self.source.num_frames)
        K = None if trajectory.K is None else np.asarray(trajectory.K, np.float64).tolist()
        return {"name": trajectory.name, "w2c": trajectory.w2c.tolist(), "K": K}


def reference_radius_of(source: ViewSource) -> float:
    """The reference's orbit radius of the clip (nearest frame-0 depth + 0.15): where the viewer's camera looks."""
    from ex4d.geometry.trajectory import reference_radius

    return reference_radius(source.depth[0])


def static_file(name: str) -> bytes | None:
    """A file of the shipped page, or None."""
    if "/" in name or name.startswith(".") or Path(name).suffix not in STATIC_TYPES:
        return None
    entry = resources.files("ex4d.view").joinpath("static", name)
    return entry.read_bytes() if entry.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    app: ViewApp
    quiet = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None,
              compress: bool = False) -> None:
        gz = compress and "gzip" in self.headers.get("Accept-Encoding", "")
        if gz:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if gz:
            self.send_header("Content-Encoding", "gzip")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 <= length <= MAX_BODY:
            raise InputError(f"request body of {length} bytes is too large")
        return self.rfile.read(length)

    def _foreign_host(self) -> bool:
        """True (and answered 403) for a request naming another host: a page elsewhere that points a name at
        127.0.0.1 (DNS rebinding) cannot read the clip."""
        port = self.server.server_address[1]
        if self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return False
        self._error(403, "this server answers requests for 127.0.0.1 only")
        return True

    def do_GET(self):  # noqa: N802 - http.server's name
        if self._foreign_host():
            return
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                self._send(200, static_file("index.html"), STATIC_TYPES[".html"])
            elif url.path.startswith("/static/"):
                name = url.path[len("/static/"):]
                body = static_file(name)
                if body is None:
                    self._error(404, f"no such file: {name}")
                else:
                    self._send(200, body, STATIC_TYPES[Path(name).suffix])
            elif url.path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif url.path == "/api/info":
                self._json(self.app.info())
            elif url.path == "/api/chunk":
                self._send(200, self.app.chunk(query), "application/octet-stream", compress=True)
            elif url.path == "/api/output":
                self._send(200, self.app.output(query), "application/octet-stream", compress=True)
            else:
                self._error(404, f"no such page: {url.path}")
        except InputError as exc:
            self._error(400, str(exc))

    def do_POST(self):  # noqa: N802
        if self._foreign_host():
            return
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            if url.path == "/api/trajectory/export":
                data, name = self.app.export_trajectory(self._body(), query.get("format", ["json"])[0])
                self._send(200, data, "application/octet-stream",
                           {"Content-Disposition": f'attachment; filename="{name}"'})
            elif url.path == "/api/trajectory/load":
                self._json(self.app.load_trajectory(self._body(), query.get("name", ["trajectory.json"])[0]))
            else:
                self._error(404, f"no such endpoint: {url.path}")
        except (InputError, ValueError, KeyError, TypeError) as exc:
            self._error(400, str(exc) if isinstance(exc, InputError) else f"bad request: {exc}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # the page dropped a request it no longer needs (a chunk behind the playhead, a closed tab): not an error
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(app: ViewApp, port: int = 0, quiet: bool = True) -> ThreadingHTTPServer:
    """A threading HTTP server for ``app`` on 127.0.0.1 (``port`` 0: any free port; see ``server_address``)."""
    handler = type("ViewHandler", (_Handler,), {"app": app, "quiet": quiet})
    server = _Server((HOST, port), handler)
    return server


def serve_in_thread(app: ViewApp, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a background thread; returns (server, its URL). Stop with ``server.shutdown()``."""
    server = make_server(app, port)
    threading.Thread(target=partial(server.serve_forever, poll_interval=0.1), daemon=True).start()
    return server, f"http://{HOST}:{server.server_address[1]}/"
