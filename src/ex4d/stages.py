"""Cached stages: a stage declares what it reads and writes; its cache key is derived from that declaration.

A :class:`Stage` names its inputs — files and folders, the keys of the upstream stages it reads, plain settings and
a result version — its output files and the function that writes them. Its key is the SHA-256 of the canonical JSON
of that declaration, with every file replaced by its fingerprint (:func:`fingerprint`). :class:`StageRunner` runs a
stage iff its key differs from the one in ``<stage>.json`` or an output is missing, and writes that record last, so
an interrupted stage leaves no record (and a stale record is deleted before a stage reruns, so that an interrupted
rerun never leaves old and new files under the old key). Downstream stages list the upstream stage's key as an
input: a change re-runs exactly the stages downstream of it.

File fingerprints:

* files up to :data:`HASH_WHOLE_BYTES` are keyed by the SHA-256 of their content: a video or depth file replaced by
  another of the same size, or overwritten in place (even with its old modification time), changes the key, while a
  copy of the same file elsewhere does not;
* larger files (model weights: Wan2.1-I2V is ~ 80 GB, hashing it would cost minutes per run) are keyed by their size,
  modification time (ns) and the SHA-256 of their first and last MiB — a replaced or rewritten checkpoint changes
  at least its mtime;
* folders by the fingerprints of every file under them (relative paths, sorted; hidden files skipped).

Paths themselves are not part of a file's fingerprint: what a stage reads is the content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ex4d.io.atomic import atomic_path

#: Files up to this size are hashed whole; larger ones by size + mtime + their first and last MiB.
HASH_WHOLE_BYTES = 64 * 2**20
_EDGE_BYTES = 2**20


def _sha256_file(path: Path, limit: int | None = None, tail: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if tail:
            f.seek(max(0, path.stat().st_size - (limit or 0)))
        remaining = limit
        while remaining is None or remaining > 0:
            block = f.read(2**20 if remaining is None else min(2**20, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict:
    """Content hash of a small file; size + mtime_ns + head/tail hashes of a large one (see the module doc)."""
    path = Path(path)
    stat = path.stat()
    if stat.st_size <= HASH_WHOLE_BYTES:
        return {"sha256": _sha256_file(path)}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_sha256": _sha256_file(path, _EDGE_BYTES), "tail_sha256": _sha256_file(path, _EDGE_BYTES, tail=True)}


def fingerprint(path: str | os.PathLike | None, memo: dict | None = None) -> dict | None:
    """Fingerprint of a file, of every file in a folder, ``{"missing": True}`` for nothing there, None for None.

    ``memo``: fingerprints already computed, by (path, size, mtime_ns), so that one run hashes each file once."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return _memoised(path, memo)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        return {"files": {p.relative_to(path).as_posix(): _memoised(p, memo) for p in files}}
    return {"missing": True}


def _memoised(path: Path, memo: dict | None) -> dict:
    if memo is None:
        return file_fingerprint(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in memo:
        memo[key] = file_fingerprint(path)
    return memo[key]


def canonical(value):
    """``value`` as plain JSON data: dataclasses as dicts, paths as strings, tuples as lists, sorted-key dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # e.g. a torch.dtype


def stable_hash(value) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no whitespace)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Stage:
    """One cached step: what it reads, what it writes and how.

    Attributes:
        name: the record's name (``OUT/<name>.json``) and the key in :attr:`RunResult.stages`.
        compute: writes every output (atomically); its return value is handed back by :meth:`StageRunner.run`
            when the stage ran (None when cached).
        outputs: files the stage writes; all must exist for the stage to count as cached.
        files: input files or folders by role (None = not used); keyed by :func:`fingerprint`.
        upstream: keys of the stages whose outputs this one reads, by role.
        settings: everything else that changes the outputs (JSON-able after :func:`canonical`).
        version: bumped when ex4d's code for this stage changes its results, so that old outputs are recomputed.
    """

    name: str
    compute: Callable[[], object]
    outputs: list[Path]
    files: dict[str, Path | None] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    version: int = 1

    def inputs(self, memo: dict | None = None) -> dict:
        """The declaration that the key is derived from, files replaced by their fingerprints."""
        return {"files": {role: fingerprint(p, memo) for role, p in self.files.items()},
                "upstream": dict(self.upstream), "settings": canonical(self.settings), "version": self.version}


class StageRunner:
    """Runs stages in one output folder, skipping those whose record holds their key and whose outputs exist.

    Attributes:
        states: stage name -> ``"ran"`` | ``"cached"``, in run order.
        seconds: stage name -> seconds, for the stages that ran.
    """

    def __init__(self, out: Path, version: str):
        self.out, self.version = Path(out), version
        self.states: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.fingerprints: dict = {}  # within one run each input file is hashed once

    def record_path(self, name: str) -> Path:
        return self.out / f"{name}.json"

    def recorded_key(self, name: str) -> str | None:
        """The key in ``<name>.json``, or None when there is no readable record."""
        try:
            return json.loads(self.record_path(name).read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            return None

    def run(self, stage: Stage) -> tuple[str, object]:
        """Run ``stage`` unless cached; returns (its key, what ``compute`` returned or None when cached)."""
        inputs = stage.inputs(self.fingerprints)
        key = stable_hash({"stage": stage.name, **inputs})
        if self.recorded_key(stage.name) == key and all(Path(p).is_file() for p in stage.outputs):
            self.states[stage.name] = "cached"
            return key, None
        # A stale record goes first: if this rerun is interrupted, a later run with the old inputs must not take
        # a mix of old and new outputs for the old result.
        self.record_path(stage.name).unlink(missing_ok=True)
        start = time.perf_counter()
        value = stage.compute()
        self.seconds[stage.name] = time.perf_counter() - start
        with atomic_path(self.record_path(stage.name)) as tmp:  # last: an interrupted stage leaves no record
            tmp.write_text(json.dumps({"key": key, "inputs": inputs, "seconds": round(self.seconds[stage.name], 3),
                                       "ex4d": self.version}, indent=2))
        self.states[stage.name] = "ran"
        return key, value
