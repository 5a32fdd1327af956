"""data.source=webdataset: img2dataset-layout shards (brace ranges, jpg/png/webp + txt/json, no
index) are read, split by process, resumed, written by `shards write --format webdataset`, and a
damaged sample is named or skipped and counted."""

import io
import json
import tarfile

import pytest
from source_helpers import png, source_cfg
from torch.utils.data import DataLoader

from modalab.cli import main
from modalab.data.dataset import DataError
from modalab.data.sources.webdataset import build_webdataset, expand_urls, write_webdataset


def _img2dataset_shards(folder, n_shards=4, per=5, broken=None):
    """Shards as img2dataset writes them: 00000.tar with KEY.jpg/.webp/.png, KEY.txt, KEY.json."""
    folder.mkdir(parents=True, exist_ok=True)
    exts = ["jpg", "png", "webp"]
    for s in range(n_shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for j in range(per):
                i = s * per + j
                key = f"{s:05d}{j:04d}"
                ext = exts[i % 3]
                fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
                members = {ext: png(i, fmt), "json": json.dumps({"caption": f"colour {i}", "key": key,
                                                                 "status": "success"}).encode()}
                if i % 2 == 0:
                    members["txt"] = f"colour {i}".encode()
                if broken == i:
                    members[ext] = b"not an image at all"
                for e, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{e}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _cfg(urls, **kw):
    return source_cfg("webdataset", urls=urls, shuffle_buffer=3, **kw)


def test_brace_expansion():
    assert expand_urls("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert expand_urls("a{1..2}-{x,y}.tar::b.tar") == ["a1-x.tar", "a1-y.tar", "a2-x.tar", "a2-y.tar", "b.tar"]
    with pytest.raises(DataError, match="backwards"):
        expand_urls("d-{3..1}.tar")


def test_reads_img2dataset_layout_and_splits_by_rank(tmp_path):
    _img2dataset_shards(tmp_path)
    data = build_webdataset(_cfg(str(tmp_path / "{00000..00003}.tar")), seed=0)
    assert len(data.train) == 15 and len(data.test) == 5  # the last shard is held out (test_fraction 0.25)
    s = data.test[0]
    assert s.media.shape == (3, 8, 8) and s.text == "colour 15" and data.skipped == []
    assert "colour 3" in data.texts  # captions from json when there is no txt
    data.train.world, data.train.rank = 2, 0
    a = [x.id for x in data.train]
    data.train.rank = 1
    b = [x.id for x in data.train]
    assert sorted(a + b) == sorted(f"{s:05d}{j:04d}" for s in range(3) for j in range(5)) and not set(a) & set(b)


def test_resume_position(tmp_path):
    _img2dataset_shards(tmp_path, n_shards=4, per=6)
    cfg = _cfg(str(tmp_path / "{00000..00003}.tar"), eval_urls=str(tmp_path / "00003.tar"))
    data = build_webdataset(cfg, seed=1)
    full = [[s.id for s in b] for b in DataLoader(data.train, batch_size=4, collate_fn=list, drop_last=True)]
    data.train.set_position(2, 4)
    rest = [[s.id for s in b] for b in DataLoader(data.train, batch_size=4, collate_fn=list, drop_last=True)]
    assert rest == full[2:]


def test_corrupt_sample_named_or_skipped(tmp_path):
    _img2dataset_shards(tmp_path, broken=17)  # in the held-out shard 3
    cfg = _cfg(str(tmp_path / "{00000..00003}.tar"))
    data = build_webdataset(cfg, seed=0)
    with pytest.raises(DataError, match=r"00003.tar: sample '000030002'.*unreadable image"):
        [data.test[i] for i in range(len(data.test))]
    # a sample without an image member, and a truncated shard
    with tarfile.open(tmp_path / "00000.tar", "a") as tar:
        info = tarfile.TarInfo("999.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match=r"00000.tar: sample '999': no image member"):
        build_webdataset(cfg, seed=0)
    raw = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(raw[: len(raw) // 2])
    data = build_webdataset(_cfg(str(tmp_path / "{00000..00003}.tar"), on_error="skip"), seed=0)
    assert any("'999'" in m for m in data.skipped) and any("corrupted shard" in m for m in data.skipped)


def test_missing_shard_and_remote_url(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_webdataset(_cfg(str(tmp_path / "x-{0..1}.tar")), seed=0)
    with pytest.raises(DataError, match="remote"):
        build_webdataset(_cfg("https://example.com/x-{0..1}.tar"), seed=0)


def test_write_webdataset_and_cli(tmp_path):
    pattern = write_webdataset(({"__key__": f"{i:04d}", "png": png(i), "txt": f"c {i}"} for i in range(7)),
                               tmp_path / "w", size=3)
    assert pattern.endswith("data-{000000..000002}.tar") and not list((tmp_path / "w").glob("*.json"))
    assert main(["shards", "write", "--digits", str(tmp_path / "d"), "--format", "webdataset", "--size", "200"]) == 0
    assert len(list((tmp_path / "d" / "train").glob("data-*.tar"))) == 7


def test_recipe_trains_from_webdataset(tmp_path, train_smoke):
    _img2dataset_shards(tmp_path / "s", n_shards=4, per=6)
    res = train_smoke(tmp_path, ["data.source=webdataset", f"data.urls={tmp_path}/s/{{00000..00003}}.tar",
                                 "data.channels=3", "data.shuffle_buffer=4"])
    assert res["num_test"] == 6 and res["eval_match"] == "pair" and 0 <= res["image_to_text_R@1"] <= 1
