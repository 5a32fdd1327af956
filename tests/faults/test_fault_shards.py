"""Corrupt tar shards: nothing is lost silently. Each case checks the clear error under
``on_error=error`` and, under ``on_error=skip``, that every lost sample is counted (read + skipped
= what was written)."""

import io
import json
import os
import tarfile

import pytest
from fault_helpers import image_samples

from modalab.data.tar_shards import ShardError, ShardStream, iter_tar, write_shards
from modalab.data.sources.shards import ShardSamples


def _keys(path, on_error="skip", expected=None):
    skipped = []
    keys = [k for k, _ in iter_tar(path, on_error, skipped, expected)]
    return keys, skipped


@pytest.fixture
def shard(tmp_path):
    index = write_shards(image_samples(200), tmp_path / "s", size=200)
    return tmp_path / "s" / index["shards"][0]["name"], 200


def _member_offsets(path):
    with tarfile.open(path) as tar:
        return [(m.name, m.offset) for m in tar]


def test_intact_shard_reads_every_sample(shard):
    path, n = shard
    keys, skipped = _keys(path, "error", n)
    assert len(keys) == n and skipped == []


def test_truncated_at_a_member_boundary_is_detected(shard):
    """tarfile alone returns the first samples and stops without an error (102 of 200 before)."""
    path, n = shard
    name, off = _member_offsets(path)[306]  # the header of sample 102's first member
    path.write_bytes(path.read_bytes()[:off])
    with pytest.raises(ShardError,
                       match=r"shard-000000\.tar: corrupted shard after member '000000101.json'.*truncated"):
        _keys(path, "error", n)
    keys, skipped = _keys(path, "skip", n)
    assert len(keys) + len(skipped) == n  # nothing unaccounted
    assert len(keys) == 101 and all("lost" in s for s in skipped)
    keys, skipped = _keys(path, "skip", None)  # no index: the end-of-archive check alone still fails loudly
    assert len(keys) == 101 and len(skipped) == 1 and "without the end-of-archive marker" in skipped[0]


def test_random_bytes_inside_a_shard_are_detected(shard):
    """4 KB of garbage over headers: before, tarfile gave 2 of 200 samples and no error."""
    path, n = shard
    data = bytearray(path.read_bytes())
    data[4096:8192] = os.urandom(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="corrupted shard"):
        _keys(path, "error", n)
    keys, skipped = _keys(path, "skip", n)
    assert len(keys) + len(skipped) == n and len(skipped) > 150


def test_truncated_inside_member_data(shard):
    path, n = shard
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 + 100])
    with pytest.raises(ShardError, match="corrupted shard"):
        _keys(path, "error", n)
    keys, skipped = _keys(path, "skip", n)
    assert len(keys) + len(skipped) == n


def test_count_mismatch_with_the_index_is_an_error(shard):
    path, n = shard
    with pytest.raises(ShardError, match="holds 200 sample.*recorded 250"):
        _keys(path, "error", 250)
    keys, skipped = _keys(path, "skip", 250)
    assert len(keys) == 200 and len(skipped) == 50


def test_unsafe_member_refused_and_counted_in_the_training_stream(tmp_path):
    """A ``../`` member was refused, but the training stream's skips never reached results."""
    index = write_shards(image_samples(8), tmp_path, size=4)
    path = tmp_path / index["shards"][1]["name"]
    with tarfile.open(path, "a") as tar:  # append a member that escapes the shard root
        info = tarfile.TarInfo("../evil.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    index["shards"][1]["count"] = 5  # the writer of this shard recorded it as a sample
    (tmp_path / "shards.json").write_text(json.dumps(index))
    stream = ShardStream(tmp_path, lambda k, f: k, shuffle_buffer=0, seed=0, rank=0, world=1, on_error="skip")
    assert len(list(stream)) == 8
    assert len(stream.skipped) == 1 and "'../evil.png' leaves the shard root" in stream.skipped[0]
    with pytest.raises(ShardError, match="evil.png"):
        list(ShardStream(tmp_path, lambda k, f: k, shuffle_buffer=0, seed=0, rank=0, world=1, on_error="error"))


def test_training_skips_from_dataloader_workers_are_collected(tmp_path):
    from torch.utils.data import DataLoader

    index = write_shards(image_samples(40), tmp_path, size=10)
    bad = tmp_path / index["shards"][2]["name"]
    bad.write_bytes(bad.read_bytes()[:2048])  # 10 samples -> ~1 readable
    stream = ShardStream(tmp_path, lambda k, f: k, shuffle_buffer=0, seed=0, rank=0, world=1,
                         num_workers=2, on_error="skip")
    seen = [k for batch in DataLoader(stream, batch_size=None, num_workers=2) for k in [batch]]
    assert len(seen) + len(stream.skipped) == 40  # every sample read or counted, across workers
    assert all(str(bad) in s for s in stream.skipped)
    assert len(stream.skipped) == len(set(stream.skipped))


def test_truncated_eval_shard_is_an_error_or_counted(tmp_path):
    """Before: the test set shrank from 450 to 318 with exit code 0 and num_skipped 0."""
    index = write_shards(image_samples(450), tmp_path, size=225)
    path = tmp_path / index["shards"][1]["name"]
    name, off = _member_offsets(path)[3 * 93]
    path.write_bytes(path.read_bytes()[:off])
    with pytest.raises(ShardError, match="shard-000001.tar"):
        ShardSamples(tmp_path, lambda k, f: k, "error")
    ds = ShardSamples(tmp_path, lambda k, f: k, "skip")
    assert len(ds) + len(ds.skipped) == 450 and len(ds) == 225 + 92
