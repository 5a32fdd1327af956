"""Tar shards: written from a manifest, every sample exactly once per epoch over 2 processes x 2
workers, resume continues at the right sample, corrupt members are skipped and counted."""

import io
import json
import tarfile

import pytest
from torch.utils.data import DataLoader

from modalab.cli import main
from modalab.data.tar_shards import ShardError, ShardStream, iter_tar, worker_batches, write_shards


def _samples(n):
    for i in range(n):
        yield {"__key__": f"{i:09d}", "txt": f"caption {i}", "json": json.dumps({"label": str(i % 3)})}


def _decode(key, files):
    return key


def _loader(path, rank, epoch=0, position=0, workers=2, batch=3):
    ds = ShardStream(path, _decode, shuffle_buffer=5, seed=1, rank=rank, world=2, num_workers=workers)
    ds.set_epoch(epoch)
    if position:
        ds.set_position(position, batch)
    return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=list)


def test_every_sample_once_per_epoch_2_processes_x_2_workers(tmp_path):
    index = write_shards(_samples(53), tmp_path, size=6)  # 9 shards, the last holds 5
    assert [s["count"] for s in index["shards"]][-1] == 5 and len(index["classnames"]) == 3
    for epoch in (0, 1):
        seen = [k for rank in (0, 1) for b in _loader(tmp_path, rank, epoch) for k in b]
        assert sorted(seen) == [f"{i:09d}" for i in range(53)]
    e0 = [k for b in _loader(tmp_path, 0, 0) for k in b]
    e1 = [k for b in _loader(tmp_path, 0, 1) for k in b]
    assert e0 != e1  # a new order each epoch


def test_resume_continues_at_the_right_sample(tmp_path):
    write_shards(_samples(53), tmp_path, size=6)
    full = [b for b in _loader(tmp_path, 1)]
    for k in (1, 4, len(full) - 1):
        rest = [b for b in _loader(tmp_path, 1, position=k)]
        assert rest == full[k:], k
    assert worker_batches(5, [3, 1]) == ([3, 1], 1) and worker_batches(3, [3, 3]) == ([2, 1], 1)


def test_corrupt_and_unsafe_members(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("a.txt", b"x"), ("../evil.txt", b"y"), ("b.txt", b"z")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    skipped = []
    assert [k for k, _ in iter_tar(path, "skip", skipped)] == ["a", "b"]
    assert "leaves the shard root" in skipped[0]
    with pytest.raises(ShardError, match="leaves the shard root"):
        list(iter_tar(path, "error"))
    trunc = tmp_path / "trunc.tar"
    trunc.write_bytes(path.read_bytes()[:700])
    skipped = []
    list(iter_tar(trunc, "skip", skipped))
    assert skipped and "corrupted shard" in skipped[-1]


def test_shards_write_cli(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    lines = []
    for i in range(7):
        Image.new("L", (8, 8), color=i * 30).save(tmp_path / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "text": f"shade {i}", "label": str(i % 2)}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["shards", "write", str(tmp_path / "m.jsonl"), str(tmp_path / "out"), "--size", "3"]) == 0
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert [s["count"] for s in index["shards"]] == [3, 3, 1]
    from modalab.data.tar_shards import decode_image_text

    ds = ShardStream(tmp_path / "out", decode_image_text(8, 1), shuffle_buffer=0, rank=0, world=1)
    samples = list(ds)
    assert len(samples) == 7 and samples[0].media.shape == (1, 8, 8) and samples[0].text == "shade 0"
