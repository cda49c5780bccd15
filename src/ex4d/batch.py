"""``ex4d run --manifest``: many videos × camera paths in one process, one model load, past failures.

A manifest is a CSV file or a folder of videos (see ``docs/run.md``). Each item is one video with its camera
paths and its own output folder; :func:`run_manifest` runs :func:`ex4d.runner.run` on every item, records a failure
and goes on, and writes ``OUT/summary.json``. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) each rank takes
every ``WORLD_SIZE``-th item and writes ``OUT/summary.rank<k>.json``; the last rank to finish merges them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ex4d.errors import InputError
from ex4d.io.atomic import atomic_path
from ex4d.utils.sorting import natural_key

#: CSV columns; only ``input_video`` is required.
COLUMNS = ("input_video", "cam", "depth", "output_dir")
#: Files taken from a manifest folder (image folders inside it are not: list those in a CSV).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"})


@dataclass
class ManifestItem:
    """One unit of work: a video, its camera paths, optional depth file and its output folder."""

    index: int  # position in the manifest (0-based), stable across ranks
    input_video: Path | None
    cams: list[str]
    output_dir: Path
    depth: Path | None = None
    problem: str | None = None  # a row that cannot run (reported as that item's failure)


@dataclass
class ItemStatus:
    """How an item went: ``status`` is ``ok`` or ``failed`` (``error`` says why)."""

    item: ManifestItem
    status: str
    seconds: float
    error: str | None = None
    result: dict = field(default_factory=dict)  # RunResult.record() when it ran

    def record(self) -> dict:
        return {"index": self.item.index, "input_video": str(self.item.input_video or ""), "cams": self.item.cams,
                "depth": str(self.item.depth) if self.item.depth else None,
                "output_dir": str(self.item.output_dir), "status": self.status, "error": self.error,
                "seconds": round(self.seconds, 3), **{k: v for k, v in self.result.items() if k != "output_dir"}}


@dataclass
class BatchResult:
    """What :func:`run_manifest` did in this process.

    Attributes:
        items: this rank's items, in manifest order.
        summary: the whole batch's summary (what ``summary.json`` holds) when this process wrote it — always with
            one rank; with several, only in the rank that finished last and merged — else None.
    """

    items: list[ItemStatus]
    summary: dict | None = None

    @property
    def exit_code(self) -> int:
        """1 if the batch has a failed item, else 0. A rank that did not merge reports 0 whatever its items
        did: under torchrun a failing rank would stop the others mid-work, and the merging rank reports all."""
        if self.summary is None:
            return 0
        return 1 if self.summary["failed"] else 0


def _resolve_cam(cam: str, base: Path) -> str:
    # Trajectory files are paths (relative to the manifest); presets such as "orbit:angle=60" are not.
    from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES

    if Path(cam).suffix.lower() in TRAJECTORY_SUFFIXES and not Path(cam).is_absolute():
        return str(base / cam)
    return cam


def _split_cams(text: str) -> list[str]:
    return [c.strip() for c in re.split(r"[;|]", text) if c.strip()]


def read_manifest(manifest: str | os.PathLike, output_dir: str | os.PathLike,
                  default_cams: list[str] = ("180",)) -> list[ManifestItem]:
    """Items of a CSV manifest or of a folder of videos.

    CSV: a header row naming some of :data:`COLUMNS` (``input_video`` required), one row per video. ``cam`` holds
    one or more presets / trajectory files separated by ``;`` (default ``default_cams``); ``depth`` a ``D.npz``
    (default: estimated); ``output_dir`` the item's folder (default ``OUT/<video stem>``). Relative
    ``input_video``, ``depth`` and trajectory paths are resolved against the CSV's folder, a relative
    ``output_dir`` against ``output_dir``. Rows with the same output folder are merged into one item (their
    cams joined), so no two items ever write to one folder. Folder: every video file in it (natural order), each
    with ``default_cams``.

    Raises:
        InputError: missing manifest, no ``input_video`` column, unknown columns, an empty manifest.
    """
    path, out = Path(manifest), Path(output_dir)
    if path.is_dir():
        videos = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                         and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        rows = [{"input_video": str(v)} for v in videos]
        base = path
    elif path.is_file():
        base = path.parent
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                        for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{path}: not a readable CSV manifest ({exc})", argument="manifest") from None
        if "input_video" not in header:
            raise InputError(f"{path}: the manifest needs an 'input_video' column (columns: {', '.join(COLUMNS)})",
                             argument="manifest")
        unknown = [h for h in header if h not in COLUMNS]
        if unknown:
            raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}",
                             argument="manifest")
    else:
        raise InputError(f"{path}: manifest not found (a .csv file or a folder of videos)", argument="manifest")
    if not rows:
        raise InputError(f"{path}: the manifest lists no videos", argument="manifest")

    items: dict[Path, ManifestItem] = {}
    default_owner: dict[str, Path | None] = {}  # default folder name -> its video
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        video = base / row["input_video"] if row.get("input_video") else None
        cams = [_resolve_cam(c, base) for c in _split_cams(row.get("cam", ""))] or list(default_cams)
        depth = base / row["depth"] if row.get("depth") else None
        if row.get("output_dir"):
            folder = out / row["output_dir"]
        else:
            # Two different videos called clip.mp4 get OUT/clip and OUT/clip-2.
            stem = video.stem if video is not None else f"row{line}"
            name, n = stem, 2
            while name in default_owner and default_owner[name] != video:
                name, n = f"{stem}-{n}", n + 1
            default_owner[name] = video
            folder = out / name
        if folder in items and items[folder].input_video == video and items[folder].depth == depth:
            items[folder].cams += [c for c in cams if c not in items[folder].cams]  # one row per camera path
            continue
        if folder in items:
            raise InputError(f"{path}: two different videos would write to {folder}; give them different "
                             "output_dir values", argument="manifest")
        items[folder] = ManifestItem(len(items), video, cams, folder, depth,
                                     None if video is not None else f"line {line}: empty input_video")
    return list(items.values())


def shard_items(items: list, rank: int, world_size: int) -> list:
    """The items rank ``rank`` of ``world_size`` processes: every ``world_size``-th, starting at ``rank``
    (round robin, so long and short videos spread evenly; over all ranks every item exactly once)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in 0..{world_size - 1} (RANK / WORLD_SIZE)")
    return items[rank::world_size]


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` as torchrun sets them; (0, 1) when unset."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"RANK / WORLD_SIZE must be integers, got {os.environ.get('RANK')!r} / "
                         f"{os.environ.get('WORLD_SIZE')!r}") from None
    shard_items([], rank, world)  # validates
    return rank, world


def rank_device(device: str, world_size: int) -> str:
    """The device of this process: with several ranks on a CUDA host, ``auto``/``cuda`` become ``cuda:LOCAL_RANK``
    (torchrun sets ``LOCAL_RANK``), so ranks do not all share the first GPU; anything else is kept."""
    local = os.environ.get("LOCAL_RANK")
    if world_size > 1 and local is not None and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(local) % torch.cuda.device_count())  # libraries using the current device
            return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


def run_manifest(manifest: str | os.PathLike, output_dir: str | os.PathLike, cams: list[str] = ("180",),
                 rank: int | None = None, world_size: int | None = None, progress: bool = True,
                 summary_json: str | os.PathLike | None = None, **run_options) -> BatchResult:
    """Run :func:`ex4d.runner.run` on every item of ``manifest`` (this rank's share), continuing past failures.

    Args:
        manifest: CSV file or folder of videos (:func:`read_manifest`).
        output_dir: ``OUT``; items write to their own folders inside it by default.
        cams: camera paths for items whose ``cam`` column is empty.
        rank, world_size: default from ``RANK`` / ``WORLD_SIZE`` (0 / 1).
        summary_json: also write the summary there (this rank's, or the merged one when all are done).
        **run_options: passed to every :func:`ex4d.runner.run` call (``fill``, ``depth_options``, ``num_frames``,
            ``device``, ``generate_options``: :class:`~ex4d.generation_options.GenerationOptions`, ...). With
            ``fill="ex4d"`` one pipeline is loaded, on first need,
            and shared by all items.

    Returns:
        A :class:`BatchResult`: one :class:`ItemStatus` per item of this rank, in manifest order, and the batch's
        summary if this process wrote ``OUT/summary.json`` (one rank; with several, each writes
        ``OUT/summary.rank<k>.json`` and the last to finish merges them).

    Raises:
        InputError: an unusable manifest (a bad item only fails that item).
    """
    from tqdm.auto import tqdm

    from ex4d.runner import LazyPipeline, check_generation_options, run

    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    out = Path(output_dir)
    items = read_manifest(manifest, out, cams)
    mine = shard_items(items, rank, world_size)
    run_options["device"] = rank_device(run_options.get("device", "auto"), world_size)
    if run_options.get("fill") == "ex4d" and run_options.get("pipe") is None:
        check_generation_options(run_options.get("generate_options"), run_options.get("device", "auto"))
        run_options["pipe"] = LazyPipeline(run_options.get("generate_options"), run_options.get("device", "auto"),
                                           progress)
    statuses = []
    for item in tqdm(mine, desc=f"videos (rank {rank}/{world_size})" if world_size > 1 else "videos",
                     unit="video", disable=not progress):
        start = time.perf_counter()
        options = dict(run_options)
        if item.depth is not None:  # the manifest's depth file replaces estimating it
            options["depth_backend"] = options["depth_options"] = None
        try:
            if item.problem:
                raise InputError(item.problem)
            result = run(item.input_video, item.output_dir, cams=item.cams, depth=item.depth, progress=progress,
                         **options)
            statuses.append(ItemStatus(item, "ok", time.perf_counter() - start, result=result.record()))
        except Exception as exc:  # noqa: BLE001 - one bad item (or a bug it triggers) must not stop the batch
            message = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, (InputError, OSError)):
                message = f"{type(exc).__name__}: {message}"
            statuses.append(ItemStatus(item, "failed", time.perf_counter() - start, error=message))
    return BatchResult(statuses, write_summary(out, statuses, rank, world_size, len(items), summary_json))


def _summary(records: list[dict], num_items: int, world_size: int) -> dict:
    failed = sum(r["status"] != "ok" for r in records)
    return {"items": records, "total": num_items, "ok": len(records) - failed, "failed": failed,
            "world_size": world_size}


def _write(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def write_summary(out: Path, statuses: list[ItemStatus], rank: int, world_size: int, num_items: int,
                  extra_path: str | os.PathLike | None = None, write_out: bool = True) -> dict | None:
    """Write this rank's summary; with several ranks, merge into ``summary.json`` once every rank's is there.

    ``extra_path`` gets a copy (the merged summary when there is one); ``write_out=False`` (a single
    ``ex4d run``) writes only ``extra_path``. Returns the whole batch's summary when it was written to
    ``summary.json`` (or, with ``write_out=False``, to ``extra_path``), else None.
    """
    records = [s.record() for s in statuses]
    if world_size == 1:
        data = _summary(records, num_items, 1)
        if extra_path:
            _write(Path(extra_path), data)
        if write_out:
            _write(out / "summary.json", data)
        return data
    _write(out / f"summary.rank{rank}.json", {**_summary(records, num_items, world_size), "rank": rank})
    merged = merge_rank_summaries(out, world_size, num_items)
    if merged is None:
        if extra_path:
            _write(Path(extra_path), _summary(records, num_items, world_size))
        return None
    _write(out / "summary.json", merged)
    if extra_path:
        _write(Path(extra_path), merged)
    return merged


def merge_rank_summaries(out: Path, world_size: int, num_items: int) -> dict | None:
    """The merged summary if all ``world_size`` rank files exist and together cover every item exactly once
    (stale files from another run do not), else None."""
    records = []
    for k in range(world_size):
        try:
            data = json.loads((out / f"summary.rank{k}.json").read_text())
        except (OSError, ValueError):
            return None
        if data.get("world_size") != world_size or data.get("total") != num_items:
            return None
        records += data["items"]
    if sorted(r["index"] for r in records) != list(range(num_items)):
        return None
    return _summary(sorted(records, key=lambda r: r["index"]), num_items, world_size)


def format_table(statuses: list[ItemStatus]) -> str:
    """A plain-text table: one line per item (status, seconds, video, cams, output folder or error)."""
    rows = [("#", "status", "seconds", "video", "cams", "output / error")]
    for s in statuses:
        rows.append((str(s.item.index), s.status, f"{s.seconds:.1f}", str(s.item.input_video or ""),
                     ",".join(Path(c).name for c in s.item.cams), s.error or str(s.item.output_dir)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    ok = sum(s.status == "ok" for s in statuses)
    return "\n".join(lines + [f"{ok} ok, {len(statuses) - ok} failed"])
