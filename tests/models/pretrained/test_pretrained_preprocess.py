"""The checkpoint's tokenizer and image preprocessing give what transformers gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modalab.models.pretrained.load import image_preprocessor, load_tokenizer
from modalab.models.pretrained.preprocess import PixelAdapter
from modalab.models.pretrained.source import PretrainedError

transformers = pytest.importorskip("transformers")

TEXTS = ["a photo of the digit seven", "An image of a CAT", "unknown words here",
         "one two three four five six seven eight nine zero one two three four five"]  # truncated


def test_tokenizer_ids_identical_to_transformers(clip_dir):
    ref = transformers.AutoTokenizer.from_pretrained(str(clip_dir))
    ours = load_tokenizer(f"hf:{clip_dir}", 16)
    want = ref(TEXTS, padding="max_length", max_length=16, truncation=True)["input_ids"]
    assert ours(TEXTS).tolist() == want
    assert ours(TEXTS)[3, -1].item() == 98  # truncation keeps end-of-text
    assert ours.vocab_size == 99 and ours.pad_id == 2
    assert ours.encode("a cat") == ref("a cat")["input_ids"]


def test_tokenizer_without_pad_token_is_an_error(tmp_path, clip_dir):
    import json
    import shutil

    folder = tmp_path / "nopad"
    shutil.copytree(clip_dir, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    del cfg["pad_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match="no pad_token"):
        load_tokenizer(f"hf:{folder}", 16)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for h, w in [(40, 50), (64, 31), (32, 32)]] + [
        Image.fromarray(rng.integers(0, 256, (45, 45), dtype=np.uint8))  # grey
    ]


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_image_preprocessing_matches_transformers(family, tmp_path, clip_dir, siglip_dir):
    import json

    if family == "vit":
        folder = tmp_path
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"height": 24, "width": 24}, "resample": 2, "do_normalize": True,
            "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]}))
        ref = transformers.ViTImageProcessorPil(**json.loads((folder / "preprocessor_config.json").read_text()))
    else:
        folder = clip_dir if family == "clip" else siglip_dir
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        cfg.pop("image_processor_type")
        cls = transformers.CLIPImageProcessorPil if family == "clip" else transformers.SiglipImageProcessorPil
        ref = cls(**cfg)
    ours = image_preprocessor(f"hf:{folder}")
    for im in _images():
        want = torch.as_tensor(np.asarray(ref(images=im.convert("RGB"), return_tensors="np")["pixel_values"][0]))
        torch.testing.assert_close(ours(im), want.float(), atol=1e-5, rtol=1e-5)


def test_pixel_adapter_maps_modalab_images():
    tower = torch.nn.Identity()
    adapter = PixelAdapter(tower, 16, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x = torch.rand(2, 1, 16, 16) * 2 - 1  # modalab: grey, [-1, 1]
    y = adapter(x)
    assert y.shape == (2, 3, 16, 16)
    torch.testing.assert_close(y[:, 0], ((x[:, 0] * 0.5 + 0.5) - 0.5) / 0.25)
    assert adapter(torch.rand(2, 3, 8, 8)).shape == (2, 3, 16, 16)
