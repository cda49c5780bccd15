"""``ex4d run --manifest``: manifests, sharding across ranks, failures that do not stop a batch, one model load."""

import json
import types
from pathlib import Path

import numpy as np
import pytest

from ex4d.batch import (
    distributed_rank,
    merge_rank_summaries,
    read_manifest,
    run_manifest,
    shard_items,
)
from ex4d.cli import main
from ex4d.errors import InputError
from ex4d.io.video import load_video


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 9])
def test_shards_cover_every_item_exactly_once(world_size):
    items = list(range(7))
    shards = [shard_items(items, rank, world_size) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == items
    # Round robin: rank k takes items k, k + W, k + 2W, ...; shard sizes differ by at most one.
    assert all(shard == list(range(rank, 7, world_size)) for rank, shard in enumerate(shards))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_rank_comes_from_torchrun_variables(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_rank() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed_rank() == (2, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(InputError):
        distributed_rank()


def test_csv_manifest_paths_defaults_and_merged_rows(tmp_path):
    (tmp_path / "clips" / "a").mkdir(parents=True)
    csv = write_csv(tmp_path / "clips" / "list.csv", "input_video,cam,depth,output_dir",
                    "a/clip.mp4,30;orbit:angle=60,a/d.npz,",
                    "a/clip.mp4,90,a/d.npz,",           # same video and folder: its cam joins the first row's
                    "clip.mp4,,,",                       # another clip.mp4: OUT/clip-2, the default cams
                    "/abs/v.mov,paths/p.json,,custom")   # trajectory files are relative to the CSV too
    out = tmp_path / "OUT"
    items = read_manifest(csv, out, default_cams=["180"])
    base = tmp_path / "clips"
    assert [i.index for i in items] == [0, 1, 2]
    assert items[0].input_video == base / "a" / "clip.mp4" and items[0].depth == base / "a" / "d.npz"
    assert items[0].cams == ["30", "orbit:angle=60", "90"] and items[0].output_dir == out / "clip"
    assert items[1].input_video == base / "clip.mp4" and items[1].cams == ["180"] and items[1].depth is None
    assert items[1].output_dir == out / "clip-2"
    assert items[2].input_video == Path("/abs/v.mov") and items[2].cams == [str(base / "paths" / "p.json")]
    assert items[2].output_dir == out / "custom"


def test_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="input_video"):
        read_manifest(write_csv(tmp_path / "a.csv", "video,cam", "x.mp4,30"), tmp_path)
    with pytest.raises(InputError, match="unknown column"):
        read_manifest(write_csv(tmp_path / "b.csv", "input_video,camera", "x.mp4,30"), tmp_path)
    with pytest.raises(InputError, match="no videos"):
        read_manifest(write_csv(tmp_path / "c.csv", "input_video"), tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "missing.csv", tmp_path)
    with pytest.raises(InputError, match="different"):
        read_manifest(write_csv(tmp_path / "d.csv", "input_video,output_dir", "x.mp4,o", "y.mp4,o"), tmp_path)


def test_folder_manifest_takes_videos_in_natural_order(tmp_path):
    for name in ("clip10.mp4", "clip2.MOV", "notes.txt", ".hidden.mp4", "clip1.webm"):
        (tmp_path / name).write_bytes(b"")
    items = read_manifest(tmp_path, tmp_path / "OUT", default_cams=["30", "60"])
    assert [i.input_video.name for i in items] == ["clip1.webm", "clip2.MOV", "clip10.mp4"]
    assert all(i.cams == ["30", "60"] for i in items)
    assert [i.output_dir.name for i in items] == ["clip1", "clip2", "clip10"]


def test_batch_goes_past_failures_and_reports_them(tiny_inputs, tmp_path, capsys):
    video, depth, _, depth_arr = tiny_inputs
    np.savez(tmp_path / "short.npz", depth=depth_arr[:5])  # 5 frames for a 9-frame video
    (tmp_path / "bad.json").write_text("{not json")
    csv = write_csv(tmp_path / "list.csv", "input_video,cam,depth,output_dir",
                    f"{video.name},30,{depth.name},good",
                    "missing.mp4,30,depth.npz,missing",
                    f"{video.name},30,short.npz,short",
                    f"{video.name},bad.json,{depth.name},badcam",
                    ",30,,empty")
    out = tmp_path / "OUT"
    code = main(["run", "--manifest", str(csv), "--output-dir", str(out), "--num-frames", "9", "--fill", "none",
                 "--device", "cpu", "--quiet"])
    assert code == 1  # some items failed
    table = capsys.readouterr().out
    assert "1 ok, 4 failed" in table and len([ln for ln in table.splitlines() if " failed " in ln]) == 4

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["ok"], summary["failed"]) == (5, 1, 4)
    status = {Path(i["output_dir"]).name: i for i in summary["items"]}
    assert status["good"]["status"] == "ok" and Path(status["good"]["files"]["30"]["output"]).is_file()
    assert load_video(out / "good" / "output_30.mp4", num_frames=None).num_frames == 9
    assert "missing.mp4" in status["missing"]["error"]
    assert "depth has 5 maps" in status["short"]["error"]
    assert "bad.json" in status["badcam"]["error"]
    assert "empty input_video" in status["empty"]["error"]
    assert not (out / "missing").exists()  # a video that cannot be read leaves no empty folder

    # All good: exit 0, and the finished item is reused.
    csv_ok = write_csv(tmp_path / "ok.csv", "input_video,cam,depth,output_dir", f"{video.name},30,{depth.name},good")
    assert main(["run", "--manifest", str(csv_ok), "--output-dir", str(out), "--num-frames", "9", "--fill", "none",
                 "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    item = json.loads((out / "summary.json").read_text())["items"][0]
    assert set(item["stages"].values()) == {"cached"}


def test_ranks_write_their_share_and_the_last_one_merges(tmp_path):
    # Missing videos fail at once: enough to exercise sharding and merging.
    csv = write_csv(tmp_path / "list.csv", "input_video", *[f"v{i}.mp4" for i in range(5)])
    out = tmp_path / "OUT"
    seen = []
    for rank in range(3):
        result = run_manifest(csv, out, rank=rank, world_size=3, progress=False, fill="none")
        seen += [s.item.index for s in result.items]
        assert (out / f"summary.rank{rank}.json").is_file()
        assert (out / "summary.json").is_file() == (rank == 2)  # merged only once every rank is done
        # Only the merging rank reports the failures (under torchrun a failing rank stops the others).
        assert result.exit_code == (1 if rank == 2 else 0) and (result.summary is not None) == (rank == 2)
    assert sorted(seen) == list(range(5))
    merged = json.loads((out / "summary.json").read_text())
    assert [i["index"] for i in merged["items"]] == list(range(5)) and merged["failed"] == 5
    # A rank file from another batch (different size) is never merged in.
    (out / "summary.rank1.json").write_text(json.dumps({"world_size": 3, "total": 4, "items": []}))
    assert merge_rank_summaries(out, 3, 5) is None


def test_torchrun_environment_shards_the_cli(tmp_path, monkeypatch, capsys):
    csv = write_csv(tmp_path / "list.csv", "input_video", *[f"v{i}.mp4" for i in range(4)])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # Rank 1 of 2 fails its items but exits 0: the other rank has not written its summary yet (no merge).
    assert main(["run", "--manifest", str(csv), "--output-dir", str(tmp_path / "OUT"), "--quiet",
                 "--fill", "none"]) == 0
    table = capsys.readouterr().out
    assert "v1.mp4" in table and "v3.mp4" in table and "v0.mp4" not in table
    data = json.loads((tmp_path / "OUT" / "summary.rank1.json").read_text())
    assert [i["index"] for i in data["items"]] == [1, 3] and data["rank"] == 1


def test_ex4d_fill_loads_the_model_once_for_the_whole_batch(tiny_inputs, tmp_path, monkeypatch):
    """The 14B model is replaced by a stand-in that paints holes grey: what is tested is the loading."""
    import ex4d.inpaint.generate as generate_module
    from ex4d.generation_options import GenerationOptions, ModelOptions

    loads = []

    def stand_in(color, mask, *, height, width, num_frames, output_type, **kwargs):
        frames = np.where(mask >= 128, color, 128).astype(np.uint8)
        return types.SimpleNamespace(frames=frames)

    def load(model_dir, adapter, device, **kwargs):
        loads.append(model_dir)
        return stand_in

    monkeypatch.setattr(generate_module, "load_generation_pipeline", load)
    video, depth, _, _ = tiny_inputs
    csv = write_csv(tmp_path / "list.csv", "input_video,cam,depth,output_dir",
                    f"{video.name},30,{depth.name},a", f"{video.name},60,{depth.name},b")
    options = dict(fill="ex4d", num_frames=9, device="cpu", progress=False,
                   generate_options=GenerationOptions(ModelOptions("wan", "ex4d.ckpt")))
    result = run_manifest(csv, tmp_path / "OUT", rank=0, world_size=1, **options)
    assert [s.status for s in result.items] == ["ok", "ok"] and result.exit_code == 0
    assert loads == [Path("wan")]
    for name, cam in (("a", "30"), ("b", "60")):
        out = load_video(tmp_path / "OUT" / name / f"output_{cam}.mp4", num_frames=None).frames
        mask = load_video(tmp_path / "OUT" / name / f"mask_{cam}.mp4", num_frames=None).frames[..., 0] < 64
        assert mask[1:].sum() > 50 and np.abs(out[mask].astype(int) - 128).mean() < 12
    # Everything cached: the model is not even loaded.
    result = run_manifest(csv, tmp_path / "OUT", rank=0, world_size=1, **options)
    assert [s.status for s in result.items] == ["ok", "ok"] and len(loads) == 1


def test_two_processes_under_torchrun_cover_every_item_once(tiny_inputs, tmp_path):
    """A real ``torchrun --nproc-per-node 2`` launch on the CPU: each rank runs its share, one summary has all."""
    import socket
    import subprocess
    import sys

    video, depth, _, _ = tiny_inputs
    rows = [f"{video},30,{depth}", "missing0.mp4", f"{video},60,{depth},b", "missing1.mp4", f"{video},90,{depth},c"]
    csv = write_csv(tmp_path / "list.csv", "input_video,cam,depth,output_dir", *rows)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "ex4d.cli", "run", "--manifest", str(csv), "--output-dir", str(tmp_path / "OUT"), "--quiet",
           "--fill", "none", "--num-frames", "0", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    merged = json.loads((tmp_path / "OUT" / "summary.json").read_text())
    assert sorted(i["index"] for i in merged["items"]) == list(range(5)), proc.stderr[-2000:]
    status = {i["index"]: i["status"] for i in merged["items"]}
    assert [status[k] for k in range(5)] == ["ok", "failed", "ok", "failed", "ok"]
    ranks = [json.loads((tmp_path / "OUT" / f"summary.rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(i["index"] for i in ranks[0]["items"]) == [0, 2, 4]
    assert sorted(i["index"] for i in ranks[1]["items"]) == [1, 3]
    assert proc.returncode == 1  # the merging rank reports the failed items
