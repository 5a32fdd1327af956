"""data.source=hf_table (parquet / save_to_disk via pyarrow) and data.source=idx (MNIST-format
arrays): fixtures written here in each format, damaged records named or skipped and counted."""

import gzip
import json
import struct

import numpy as np
import pytest
from source_helpers import png, source_cfg

from modalab.data.dataset import DataError
from modalab.data.sources.idx import build_idx, read_idx

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")



def _table(n, start=0, broken=None, labels=True):
    images = [{"bytes": b"junk" if i == broken else png(i), "path": None} for i in range(start, start + n)]
    meta = {"info": {"features": {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
                                  "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}}}
    cols = {"image": images, "text": [[f"pet {i}", f"animal {i}"] for i in range(start, start + n)]}
    if labels:
        cols["label"] = [i % 2 for i in range(start, start + n)]
    return pa.table(cols).replace_schema_metadata({"huggingface": json.dumps(meta)})


def test_parquet_hub_layout(tmp_path):
    from modalab.data.sources.hf_table import build_hf_table

    (tmp_path / "data").mkdir()
    pq.write_table(_table(12), tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(_table(4, start=12), tmp_path / "data" / "test-00000-of-00001.parquet")
    data = build_hf_table(source_cfg("hf_table", path=str(tmp_path), label_column="label"), seed=0)
    assert len(data.train) == 12 and len(data.test) == 4 and data.classnames == ["cat", "dog"]
    s = data.test[1]
    assert s.text == "pet 13" and s.label == 1 and s.media.shape == (3, 8, 8)


def test_save_to_disk_folder(tmp_path):
    from modalab.data.sources.hf_table import build_hf_table

    for split, n, start in (("train", 8, 0), ("test", 4, 8)):
        d = tmp_path / split
        d.mkdir()
        t = _table(n, start, labels=False)
        with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
            w.write_table(t)
        (d / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (tmp_path / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    data = build_hf_table(source_cfg("hf_table", path=str(tmp_path)), seed=0)
    assert len(data.train) == 8 and len(data.test) == 4 and data.classnames is None
    assert data.test[0].text == "pet 8"


def test_table_bad_rows(tmp_path):
    from modalab.data.sources.hf_table import build_hf_table

    path = tmp_path / "x.parquet"
    pq.write_table(_table(8, broken=3), path)
    with pytest.raises(DataError, match=r"x.parquet:row 3: unreadable image"):
        build_hf_table(source_cfg("hf_table", path=str(path)), seed=0)
    data = build_hf_table(source_cfg("hf_table", path=str(path), on_error="skip"), seed=0)
    assert data.num_skipped == 1 and len(data.train) + len(data.test) == 7
    with pytest.raises(DataError, match=r"no column 'caption' \(data.text_column\); the table has"):
        build_hf_table(source_cfg("hf_table", path=str(path), text_column="caption"), seed=0)


def _idx(path, arr, code=0x08):
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def test_idx_mnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10
    _idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    _idx(tmp_path / "t10k-images-idx3-ubyte", x[:6])
    _idx(tmp_path / "t10k-labels-idx1-ubyte", y[:6])
    assert (read_idx(tmp_path / "train-images-idx3-ubyte.gz") == x).all()
    data = build_idx(source_cfg("idx", images=str(tmp_path / "train-images-idx3-ubyte.gz"),
                          labels=str(tmp_path / "train-labels-idx1-ubyte.gz"),
                          test_images=str(tmp_path / "t10k-images-idx3-ubyte"),
                          test_labels=str(tmp_path / "t10k-labels-idx1-ubyte"), classnames="fashion"), seed=0)
    assert len(data.train) == 20 and len(data.test) == 6 and len(data.classnames) == 10
    s = data.test[1]
    assert s.media.shape == (1, 8, 8) and data.classnames[s.label] == "trouser" and s.text == "a photo of a trouser"


def test_idx_truncated_and_bad_label(tmp_path):
    x, y = np.zeros((10, 4, 4)), np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12])
    _idx(tmp_path / "img", x)
    _idx(tmp_path / "lab", y)
    raw = (tmp_path / "img").read_bytes()
    (tmp_path / "img").write_bytes(raw[:-20])
    cfg = source_cfg("idx", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"))
    with pytest.raises(DataError, match=r"img: record 8 of 10 is incomplete"):
        build_idx(cfg, seed=0)
    cfg.on_error = "skip"
    data = build_idx(cfg, seed=0)
    assert len(data.train) + len(data.test) == 8 and data.num_skipped == 2
    (tmp_path / "img").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        build_idx(cfg, seed=0)
    _idx(tmp_path / "img", x)
    cfg.on_error = "error"
    with pytest.raises(DataError, match=r"lab:record 9: label 12 is outside the 10 class names"):
        build_idx(cfg, seed=0)


def test_recipe_trains_from_parquet_and_idx(tmp_path, train_smoke):
    pq.write_table(_table(16), tmp_path / "t.parquet")
    res = train_smoke(tmp_path / "a", ["data.source=hf_table", f"data.path={tmp_path}/t.parquet",
                                       "data.label_column=label", "data.channels=3"])
    assert res["num_test"] == 4 and 0 <= res["zeroshot_top1"] <= 1
    rng = np.random.default_rng(0)
    _idx(tmp_path / "i.gz", rng.integers(0, 256, (40, 8, 8)))
    _idx(tmp_path / "l.gz", np.arange(40) % 10)
    res = train_smoke(tmp_path / "b", ["data.source=idx", f"data.images={tmp_path}/i.gz",
                                       f"data.labels={tmp_path}/l.gz"])
    assert res["num_test"] == 10 and 0 <= res["zeroshot_top1"] <= 1


def test_noise_on_a_reader(tmp_path):
    x, y = np.random.default_rng(0).integers(0, 256, (40, 8, 8)), np.arange(40) % 10
    _idx(tmp_path / "i", x)
    _idx(tmp_path / "l", y)
    data = build_idx(source_cfg("idx", images=str(tmp_path / "i"), labels=str(tmp_path / "l"), templates=["a {label}"],
                                noise={"swap": 0.5}), seed=0)
    rec = data.extras["noise"]
    assert len(rec["swapped"]) == 15 and rec["num_train"] == 30
    i, donor = next(iter(rec["swapped"].items()))
    assert data.train[int(i)].text == data.train.base[donor].text
    assert data.train[int(i)].meta["noise_swapped_from"] == donor
