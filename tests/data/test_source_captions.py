"""data.source=coco and data.source=flickr: caption files + image folders as released, several
captions per image, Karpathy splits; bad records named, unreadable images skipped and counted."""

import json

import pytest
from source_helpers import png, source_cfg

from modalab.data.dataset import DataError
from modalab.data.sources.coco import build_coco
from modalab.data.sources.flickr import build_flickr


def _coco(tmp_path, n=12, broken=None):
    img = tmp_path / "val2014"
    img.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        name = f"COCO_val2014_{i:012d}.jpg"
        (img / name).write_bytes(b"garbage" if i == broken else png(i, "JPEG"))
        images.append({"id": 100 + i, "file_name": name, "width": 8, "height": 8})
        anns += [{"id": 5 * i + k, "image_id": 100 + i, "caption": f" A  photo {i} number {k} "} for k in range(5)]
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    karpathy = tmp_path / "dataset_coco.json"
    splits = ["train", "restval", "val", "test"]
    karpathy.write_text(json.dumps({"images": [{"cocoid": 100 + i, "filename": f"COCO_val2014_{i:012d}.jpg",
                                                "filepath": "val2014", "split": splits[i % 4],
                                                "sentences": []} for i in range(n)]}))
    return path, img, karpathy



def test_coco_five_captions_and_karpathy_split(tmp_path):
    ann, img, karpathy = _coco(tmp_path)
    data = build_coco(source_cfg("coco", annotations=[str(ann)], images=[str(img)], karpathy=str(karpathy)), seed=0)
    assert len(data.train) == 6 and len(data.test) == 3  # train + restval / test; val kept out
    assert data.test[0].text == "A photo 3 number 0"  # first caption, whitespace normalised
    assert {f"A photo 0 number {k}" for k in range(5)} <= set(data.texts)
    assert "3 Karpathy 'val' images kept out" in data.skipped[-1]
    seen = {data.train[0].text for _ in range(30)}
    assert len(seen) > 1  # training draws among the five captions
    plain = build_coco(source_cfg("coco", annotations=[str(ann)], images=[str(img)], test_fraction=0.25), seed=0)
    assert len(plain.train) == 9 and len(plain.test) == 3


def test_coco_bad_records(tmp_path):
    ann, img, _ = _coco(tmp_path, broken=4)
    cfg = source_cfg("coco", annotations=[str(ann)], images=[str(img)], test_fraction=0.25)
    with pytest.raises(DataError, match=r"captions_val2014.json:image 104: unreadable image"):
        build_coco(cfg, seed=0)
    cfg.on_error = "skip"
    data = build_coco(cfg, seed=0)
    assert data.num_skipped == 1 and len(data.train) + len(data.test) == 11
    d = json.loads(ann.read_text())
    d["annotations"].append({"id": 999, "image_id": 7, "caption": "x"})
    ann.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"annotations\[60\] names image_id 7"):
        build_coco(cfg, seed=0)
    d["annotations"].pop()
    d["images"][0]["file_name"] = "../../etc/passwd"
    ann.write_text(json.dumps(d))
    with pytest.raises(DataError, match="leaves the image root"):
        build_coco(cfg, seed=0)


def _flickr(tmp_path, n=8, broken=None, pipe=True):
    img = tmp_path / "flickr30k_images"
    img.mkdir(parents=True, exist_ok=True)
    rows = ["image_name| comment_number| comment" if pipe else "image,caption"]
    for i in range(n):
        (img / f"{1000 + i}.jpg").write_bytes(b"\x00" if i == broken else png(i, "JPEG"))
        for k in range(5):
            rows.append(f"{1000 + i}.jpg| {k}| a dog {i} runs {k}" if pipe else f"{1000 + i}.jpg,a dog {i} runs {k}")
    path = tmp_path / ("results.csv" if pipe else "captions.txt")
    path.write_text("\n".join(rows) + "\n")
    return path, img


@pytest.mark.parametrize("pipe", [True, False])
def test_flickr_results_csv(tmp_path, pipe):
    path, img = _flickr(tmp_path, pipe=pipe)
    data = build_flickr(source_cfg("flickr", captions=str(path), images=str(img)), seed=0)
    assert len(data.train) == 6 and len(data.test) == 2 and data.test[0].media.shape == (3, 8, 8)
    assert data.test[0].text.endswith("runs 0") and len(data.texts) == 30


def test_flickr_bad_rows_and_images(tmp_path):
    path, img = _flickr(tmp_path, broken=2)
    with pytest.raises(DataError, match=r"results.csv:1002.jpg: unreadable image"):
        build_flickr(source_cfg("flickr", captions=str(path), images=str(img)), seed=0)
    data = build_flickr(source_cfg("flickr", captions=str(path), images=str(img), on_error="skip"), seed=0)
    assert data.num_skipped == 1
    path.write_text(path.read_text() + "1001.jpg\n")
    with pytest.raises(DataError, match=r"results.csv:42: expected 3"):
        build_flickr(source_cfg("flickr", captions=str(path), images=str(img)), seed=0)
    path.write_text("file,words\nx.jpg,y\n")
    with pytest.raises(DataError, match=r"results.csv:1: the header must name"):
        build_flickr(source_cfg("flickr", captions=str(path), images=str(img)), seed=0)


def test_recipe_trains_from_coco(tmp_path, train_smoke):
    ann, img, karpathy = _coco(tmp_path / "c", n=24)
    res = train_smoke(tmp_path, ["data.source=coco", f"data.annotations=[{ann}]", f"data.images=[{img}]",
                                 f"data.karpathy={karpathy}"])
    assert res["num_test"] == 6 and 0 <= res["text_to_image_R@1"] <= 1


def test_recipe_trains_from_flickr(tmp_path, train_smoke):
    path, img = _flickr(tmp_path / "f", n=16)
    res = train_smoke(tmp_path, ["data.source=flickr", f"data.captions={path}", f"data.images={img}"])
    assert res["num_test"] == 4 and 0 <= res["image_to_text_R@1"] <= 1
