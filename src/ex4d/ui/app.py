"""The Gradio page of ``ex4d ui``: upload, design the camera path with a live preview, generate, download.

:class:`Callbacks` holds what each control does (plain methods, testable without a browser); :func:`build_app`
lays out the page and wires the controls to them. Every callback turns any failure into one readable line shown
in the page (``gr.Error``) — never a traceback — and the server keeps serving; the traceback of an unexpected
error goes to the server's log only.
"""

from __future__ import annotations

import html
import logging

from ex4d.errors import InputError
from ex4d.ui import actions
from ex4d.ui.session import DEPTH_SUFFIXES, VIDEO_SUFFIXES, Clip, Workspace

log = logging.getLogger("ex4d.ui")


def readable(exc: BaseException) -> str:
    """One line a person can act on, for any exception a callback may meet."""
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "out of memory: try a shorter or smaller video, the offline fill, or --device cpu"
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, InputError):
        return text
    if isinstance(exc, ImportError):
        return f"a package is missing ({text}): pip install \"ex4d[ui]\" (and \"ex4d[diffusion]\" for the model)"
    if isinstance(exc, OSError):
        return f"file error: {text}"
    return f"internal error ({exc.__class__.__name__}: {text}); the server log has the details"


def _page_error(exc: BaseException):
    import gradio as gr

    if not isinstance(exc, InputError):
        log.exception("ex4d ui: callback failed")
    # gr.Error renders HTML: escape, so that a file name cannot inject markup.
    return gr.Error(html.escape(readable(exc), quote=False), print_exception=False)


class Callbacks:
    """What the page's controls do.

    Args:
        workspace: the work dir and its upload rules.
        device: ``auto``, ``cpu`` or ``cuda``.
        generate_options: :class:`ex4d.generation_options.GenerationOptions` of the EX-4D model (its weights
            included); ``None`` = only the offline fill.
    """

    def __init__(self, workspace: Workspace, device: str = "auto", generate_options: dict | None = None):
        self.ws = workspace
        self.device = device
        self.generate_options = generate_options
        self._clips: dict[str, Clip] = {}

    @property
    def fills(self) -> list[str]:
        return ["offline", "ex4d"] if self.generate_options else ["offline"]

    def _clip(self, key: str | None) -> Clip:
        if not key:
            raise InputError("load a video (or the demo scene) first")
        if key not in self._clips:
            if len(self._clips) >= 4:  # a few decoded clips stay in memory
                self._clips.pop(next(iter(self._clips)))
            self._clips[key] = self.ws.load_clip(key)
        return self._clips[key]

    def _design(self, preset, angle, elevation, radius, zoom, table, imported) -> actions.PathDesign:
        rows = table.values.tolist() if hasattr(table, "values") else (table or [])
        try:
            numbers = [float(v) for v in (angle, elevation, radius, zoom)]
        except (TypeError, ValueError):
            raise InputError("angle, elevation, radius and zoom must be numbers") from None
        # Only an imported file inside the work dir is ever read.
        return actions.PathDesign(preset, *numbers, keyframes=rows,
                                  imported=str(self.ws.inside(imported)) if imported else None)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # every failure becomes a message in the page; the server keeps serving
            raise _page_error(exc) from None

    # -- loading ---------------------------------------------------------------------------------------------

    def load_video(self, video, depth):
        """Upload -> (clip key, input video, mesh GLB, keyframe rows, status)."""
        return self._guard(lambda: self._loaded(self.ws.add_video(video, depth or None)))

    def load_demo(self):
        return self._guard(lambda: self._loaded(self.ws.add_demo()))

    def _loaded(self, clip: Clip):
        self._clips[clip.key] = clip
        T, H, W = clip.depth.shape
        rows = actions.rows_from_trajectory(clip, actions.build_trajectory(clip, actions.PathDesign()))
        status = f"loaded: {T} frames of {W}×{H}, depth cached ({clip.key})"
        return clip.key, str(clip.video_path), str(actions.viewer_glb(clip)), rows, status

    # -- path design and preview -----------------------------------------------------------------------------

    def preview(self, key, preset, angle, elevation, radius, zoom, table, imported, full: bool = False):
        """-> (render/mask strip PNG, render | mask video, path PNG, trajectory JSON, status)."""

        def work():
            clip = self._clip(key)
            trajectory = actions.build_trajectory(clip, self._design(preset, angle, elevation, radius, zoom, table,
                                                                     imported))
            shown = actions.render_preview(clip, trajectory, None if full else actions.PREVIEW_FRAMES, self.device)
            status = (f"preview of {len(shown.frames)} of {clip.num_frames} frames: "
                      f"{100 * shown.seen_fraction:.1f}% of pixels seen, the rest will be generated")
            return (str(shown.strip), str(shown.video), str(actions.plot_path(clip, trajectory)),
                    str(actions.export_trajectory(clip, trajectory)), status)

        return self._guard(work)

    def preview_full(self, *args):
        return self.preview(*args, full=True)

    def import_trajectory(self, key, file):
        """-> (preset, imported path, keyframe rows, status). Keyframe files fill the table."""

        def work():
            from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES, load_trajectory

            clip = self._clip(key)
            path = self.ws.checked_upload(file, TRAJECTORY_SUFFIXES, "trajectory file (.json/.npz)")
            load_trajectory(path, clip.num_frames)  # checked now, so a bad file is reported at once
            rows = actions.keyframe_rows(path)
            if rows is not None:
                return "keyframes", None, rows, f"imported {len(rows)} keyframes from {path.name}"
            return "imported file", str(path), None, f"imported {path.name}"

        preset, imported, rows, status = self._guard(work)
        import gradio as gr

        return preset, imported, gr.update() if rows is None else rows, status

    def table_from_path(self, key, preset, angle, elevation, radius, zoom, table, imported):
        """The current path sampled as 3 keyframes (a starting point to edit)."""

        def work():
            clip = self._clip(key)
            trajectory = actions.build_trajectory(clip, self._design(preset, angle, elevation, radius, zoom, table,
                                                                     imported))
            return actions.rows_from_trajectory(clip, trajectory), "keyframes"

        return self._guard(work)

    def open_viewer(self, key, preset, angle, elevation, radius, zoom, table, imported):
        """-> HTML embedding ``ex4d view`` of the clip (its own localhost server), the designed path in the scene."""

        def work():
            import numpy as np

            from ex4d.view.panel import CameraPath, clip_viewer_url, viewer_html

            clip = self._clip(key)
            trajectory = actions.build_trajectory(clip, self._design(preset, angle, elevation, radius, zoom, table,
                                                                     imported))
            K = trajectory.K if trajectory.K is not None else clip.K
            path = CameraPath("designed path", trajectory.w2c, np.broadcast_to(K, (len(trajectory.w2c), 3, 3)))
            return viewer_html(clip_viewer_url(key, clip.frames, clip.depth, clip.K, clip.fps, path))

        return self._guard(work)

    # -- generation ------------------------------------------------------------------------------------------

    def generate(self, key, preset, angle, elevation, radius, zoom, table, imported, fill, progress=None):
        """-> (input | render | mask | output video, download files, status)."""

        def work():
            if fill not in self.fills:
                raise InputError("the ex4d fill needs --wan-dir and --ex4d-ckpt when starting ex4d ui"
                                 if fill == "ex4d" else f"unknown fill {fill!r}")
            if progress is not None:
                progress(0.05, desc="rendering the DW-Mesh along the path")
            clip = self._clip(key)
            trajectory = actions.build_trajectory(clip, self._design(preset, angle, elevation, radius, zoom, table,
                                                                     imported))
            # The ex4d fill takes its frames, size and rate from the render, as ex4d run's does.
            options = self.generate_options if fill == "ex4d" else None
            result = actions.generate(clip, trajectory, fill, self.device, options, progress=progress is not None)
            if progress is not None:
                progress(1.0, desc="done")
            files = [result.output, result.mask, result.trajectory, result.mesh]
            return (str(result.side_by_side), [str(f) for f in files],
                    f"generated {clip.num_frames} frames with the {fill} fill: {result.output.name}")

        return self._guard(work)


def build_app(workspace: Workspace, device: str = "auto", generate_options: dict | None = None):
    """The ``gr.Blocks`` page. Launch it with :func:`launch` (which sets the upload limit and allowed paths)."""
    import gradio as gr

    cb = Callbacks(workspace, device, generate_options)
    design_defaults = actions.PathDesign()
    with gr.Blocks(title="ex4d", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown("## ex4d: new camera paths for one video\nUpload a video (and its depth, or let the depth "
                    "model estimate it once), design the path with a live DW-Mesh preview, then generate.")
        clip_key, imported = gr.State(None), gr.State(None)
        status = gr.Textbox(label="status", interactive=False, elem_id="status", max_lines=1)
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### 1. Video")
                video_in = gr.File(label=f"video ({', '.join(VIDEO_SUFFIXES)})", file_types=list(VIDEO_SUFFIXES),
                                   type="filepath", elem_id="video_upload")
                depth_in = gr.File(label="depth D.npz (optional)", file_types=list(DEPTH_SUFFIXES),
                                   type="filepath", elem_id="depth_upload")
                with gr.Row():
                    load_btn = gr.Button("Load video", variant="primary", elem_id="load_btn")
                    demo_btn = gr.Button("Use the demo scene", elem_id="demo_btn")
                source = gr.Video(label="input", interactive=False, elem_id="input_video")
            with gr.Column(scale=1):
                gr.Markdown("### 2. Camera path")
                preset = gr.Dropdown(list(actions.PRESETS), value=design_defaults.preset, label="preset",
                                     elem_id="preset")
                angle = gr.Slider(-180, 180, value=design_defaults.angle, step=1, label="angle (°)",
                                  elem_id="angle")
                elevation = gr.Slider(-60, 60, value=design_defaults.elevation, step=1, label="elevation (°)",
                                      elem_id="elevation")
                radius = gr.Slider(0.25, 3, value=design_defaults.radius_scale, step=0.05,
                                   label="radius (× nearest depth)", elem_id="radius")
                zoom = gr.Slider(0.5, 3, value=design_defaults.zoom, step=0.05, label="zoom at the last frame",
                                 elem_id="zoom")
                table = gr.Dataframe(headers=list(actions.KEYFRAME_COLUMNS), datatype="number", type="array",
                                     column_count=len(actions.KEYFRAME_COLUMNS), label="keyframes (preset 'keyframes')",
                                     interactive=True, elem_id="keyframes")
                table_btn = gr.Button("Copy the path into the table")
                traj_in = gr.File(label="import a trajectory (.json/.npz)", file_types=[".json", ".npz"],
                                  type="filepath", elem_id="trajectory_upload")
                traj_out = gr.File(label="export: this path as a trajectory file", interactive=False,
                                   elem_id="trajectory_download")
            with gr.Column(scale=2):
                gr.Markdown("### 3. Preview")
                strip = gr.Image(label="DW-Mesh render (top) and mask (bottom), a few frames", type="filepath",
                                 interactive=False, elem_id="preview_strip")
                with gr.Row():
                    preview_video = gr.Video(label="render | mask", interactive=False, elem_id="preview_video")
                    path_img = gr.Image(label="camera path (top and side views)", type="filepath", interactive=False,
                                        elem_id="path_plot")
                full_btn = gr.Button("Render the whole clip", elem_id="full_btn")
                mesh = gr.Model3D(label="frame 0's DW-Mesh (visible surface; the download has it all)",
                                  clear_color=(0.15, 0.15, 0.15, 1.0), elem_id="mesh")
        with gr.Accordion("4D viewer: fly through the clip, record a path (ex4d view)", open=False):
            view_btn = gr.Button("Open the 4D viewer with this path", elem_id="view_btn")
            view_html = gr.HTML(elem_id="view_panel")
        gr.Markdown("### 4. Generate")
        with gr.Row():
            fill = gr.Radio(cb.fills, value="offline", label="fill", elem_id="fill",
                            info=None if generate_options else "ex4d (the video model) needs --wan-dir and "
                                                               "--ex4d-ckpt when starting ex4d ui")
            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate_btn")
        result_video = gr.Video(label="input | render | mask | output", interactive=False, elem_id="result_video")
        downloads = gr.File(label="downloads: output video, mask, trajectory, mesh", file_count="multiple",
                            interactive=False, elem_id="downloads")

        design = [clip_key, preset, angle, elevation, radius, zoom, table, imported]
        preview_out = [strip, preview_video, path_img, traj_out, status]
        loaded_out = [clip_key, source, mesh, table, status]
        load_btn.click(cb.load_video, [video_in, depth_in], loaded_out).success(cb.preview, design, preview_out)
        demo_btn.click(cb.load_demo, None, loaded_out).success(cb.preview, design, preview_out)
        for control in (preset, angle, elevation, radius, zoom):
            control.change(cb.preview, design, preview_out, trigger_mode="always_last")
        table.input(cb.preview, design, preview_out, trigger_mode="always_last")
        full_btn.click(cb.preview_full, design, preview_out)
        table_btn.click(cb.table_from_path, design, [table, preset])
        view_btn.click(cb.open_viewer, design, [view_html])
        traj_in.upload(cb.import_trajectory, [clip_key, traj_in], [preset, imported, table, status]).success(
            cb.preview, design, preview_out)

        def generate(*args, progress=gr.Progress(track_tqdm=True)):
            return cb.generate(*args, progress=progress)

        gen_btn.click(generate, design + [fill], [result_video, downloads, status], concurrency_limit=1)
    app.callbacks = cb
    return app


def launch(app, workspace: Workspace, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 200.0,
           quiet: bool = False, block: bool = True):
    """Serve the page; only files inside the work dir may be served."""
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, max_file_size=f"{int(max_upload_mb * 1024)}kb",
        allowed_paths=[str(workspace.root)], quiet=quiet, ssr_mode=False, show_error=False,
        prevent_thread_lock=not block, footer_links=[])


__all__ = ["Callbacks", "build_app", "launch", "readable"]
