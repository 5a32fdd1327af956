"""Images that demand gigabytes: refused from the header, before anything is decoded, in every
source that decodes files (manifest, shards), and a bad sample under ``data.on_error``."""

import json
import time
import tracemalloc

import pytest
from fault_helpers import image_samples, png, png_header

from modalab.data.dataset import DataError
from modalab.data.safe_image import open_image
from modalab.data.tar_shards import ShardError, ShardStream, write_shards
from modalab.data.sources.manifest import ManifestConfig, build_manifest
from modalab.data.sources.shards import ShardSamples, header_check


def test_long_thin_png_refused_from_its_header():
    """4.9 KB declaring 5,000,000 x 1 pixels asked for 5.1 GB before."""
    data = png_header(5_000_000, 1)
    assert len(data) < 200
    tracemalloc.start()
    with pytest.raises(DataError, match=r"img\.png: image of 5000000 x 1 has aspect ratio 5000000\.0, "
                                        r"over data\.max_aspect_ratio=20"):
        open_image(data, "img.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000  # nothing decoded


def test_too_many_pixels_refused_from_the_header():
    # over PIL's own guard too: PIL refuses it in Image.open, before modalab's check could
    with pytest.raises(DataError, match=r"big.png: refused as a decompression bomb \(.*400000000 pixels"):
        open_image(png_header(20_000, 20_000), "big.png")
    with pytest.raises(DataError, match=r"9000 x 9000 = 81,000,000 pixels exceeds data.max_image_pixels=64,000,000"):
        open_image(png_header(9_000, 9_000), "big.png")
    with pytest.raises(DataError, match="exceeds data.max_image_pixels=100"):
        open_image(png(20, 20), "small.png", max_pixels=100)


def test_pil_decompression_bomb_error_becomes_a_data_error():
    """With the modalab limit raised, PIL's own guard still fires: a DataError, not a traceback."""
    t = time.perf_counter()
    with pytest.raises(DataError, match="big.png: refused as a decompression bomb"):
        open_image(png_header(20_000, 20_000), "big.png", max_pixels=10**12)
    assert time.perf_counter() - t < 5


def test_corrupt_image_is_a_data_error():
    with pytest.raises(DataError, match="x.png: unreadable image"):
        open_image(png(8, 8)[:40], "x.png")
    with pytest.raises(DataError, match="x.png: unreadable image"):
        open_image(b"not an image", "x.png")


def _manifest(tmp_path, bad: bytes):
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(12):
        (tmp_path / "img" / f"{i}.png").write_bytes(png(8, 8, 20 * i))
        lines.append({"image": f"img/{i}.png", "text": f"digit {i % 2}", "label": str(i % 2)})
    (tmp_path / "img" / "bomb.png").write_bytes(bad)
    lines.append({"image": "img/bomb.png", "text": "digit 0", "label": "0"})
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return m


@pytest.mark.parametrize("bad", [png_header(20_000, 20_000), png_header(5_000_000, 1)])
def test_manifest_source_error_or_counted_skip(tmp_path, bad):
    m = _manifest(tmp_path, bad)
    with pytest.raises(DataError, match=r"m\.jsonl:13: .*bomb\.png"):
        build_manifest(ManifestConfig(source="manifest", path=str(m)), seed=0)
    splits = build_manifest(ManifestConfig(source="manifest", path=str(m), on_error="skip"), seed=0)
    assert splits.num_skipped == 1 and "m.jsonl:13" in splits.skipped[0]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12  # the 12 good images, the bomb counted


def test_pil_bomb_in_manifest_with_on_error_skip_is_counted(tmp_path):
    """Before: DecompressionBombError as a traceback even with on_error=skip."""
    m = _manifest(tmp_path, png_header(20_000, 20_000))
    cfg = ManifestConfig(source="manifest", path=str(m), on_error="skip", max_image_pixels=10**12)
    splits = build_manifest(cfg, seed=0)
    assert splits.num_skipped == 1 and "decompression bomb" in splits.skipped[0]


def test_shard_sources_check_images(tmp_path):
    samples = image_samples(9)
    samples[4]["png"] = png_header(9_000, 9_000)
    write_shards(samples, tmp_path, size=3)
    # held-out shards: checked when read, an error or a counted skip
    check = lambda k, f: header_check(k, f, 64_000_000, 20.0)  # noqa: E731
    with pytest.raises(ShardError,
                       match=r"shard-000001.tar: sample '000000004' \(000000004.png\): image of 9000 x 9000"):
        ShardSamples(tmp_path, lambda k, f: k, "error", check=check)
    ds = ShardSamples(tmp_path, lambda k, f: k, "skip", check=check)
    assert len(ds) == 8 and len(ds.skipped) == 1
    # training stream: the decoder refuses it; counted under skip
    from modalab.data.tar_shards import decode_image_text

    stream = ShardStream(tmp_path, decode_image_text(8, 1), shuffle_buffer=0, seed=0, rank=0, world=1,
                         on_error="skip")
    with pytest.warns(RuntimeWarning, match=r"shard-000001.tar: sample .000000004. could not be decoded .*9000 x 9000"):
        assert len(list(stream)) == 8
    assert len(stream.skipped) == 1
