"""recipes/pretrain's exports: a ViT as a ViTModel folder, a caption LM as GPT-2 + tokenizer.json,
each checked against transformers / modalab on the same weights (float32, 1e-5)."""

from __future__ import annotations

import pytest
import torch

from modalab.models.pretrained.causal_lm import load_hf_decoder
from modalab.models.pretrained.load import adapt_pixels, load_image_tower, preprocessor_settings
from modalab.models.pretrained.source import PretrainedError
from modalab.models.pretrained.word_tokenizer_hf import CaptionTokenizer
from modalab.text.generate import greedy
from tests.tasks.pretrained_towers import DIGIT_TEXTS, lm_folder, tiny_vit

transformers = pytest.importorskip("transformers")


def test_exported_vit_gives_vitmodel_hidden_states_and_reloads_into_the_same_tower(tmp_path):
    from modalab.models.pretrained.export_vit import export_vit_hf

    vit = tiny_vit().eval()
    out = export_vit_hf(vit, tmp_path / "vit", [0.5] * 3, [0.5] * 3)
    x = torch.randn(3, 3, 16, 16)
    hf = transformers.ViTModel.from_pretrained(str(out)).eval()
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state  # (B, 17, 32)
        ours = vit.forward_tokens(x)
        loaded, width = load_image_tower(f"hf:{out}")
        again = loaded.forward_tokens(x)
    assert width == 32 and ref.shape == (3, 17, 32)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, ref, atol=1e-5, rtol=1e-5)
    # a grey 16 px modalab image in [-1, 1] goes in unchanged (mean/std 0.5, same size)
    grey = torch.rand(2, 1, 16, 16) * 2 - 1
    adapter = adapt_pixels(loaded, preprocessor_settings(f"hf:{out}"))
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward_tokens(grey), loaded.forward_tokens(grey.expand(-1, 3, -1, -1)))


def test_vit_export_refuses_a_clip_layout_tower(tmp_path):
    from modalab.models.pretrained.export_vit import export_vit_hf
    from modalab.vision.clip_vit import PretrainedViT

    clip_like = PretrainedViT(16, 4, 3, 32, 1, 4, 64, pre_norm=True, patch_bias=False)
    with pytest.raises(PretrainedError, match="pre-norm"):
        export_vit_hf(clip_like, tmp_path / "x", [0.5] * 3, [0.5] * 3)


def test_caption_tokenizer_json_gives_modalab_ids_and_decodes_back(tmp_path):
    folder, _, tok = lm_folder(tmp_path / "lm")
    ours = CaptionTokenizer(folder, tok.context_length)
    texts = DIGIT_TEXTS + ["The number 7, handwritten!", "a zebra of the digit 12", ""]
    assert torch.equal(ours(texts), tok(texts))
    long = ["a handwritten seven " * 6]  # truncated with <eos> kept last, as modalab does
    assert torch.equal(ours(long), tok(long))
    fast = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert fast("the digit 7 written by hand")["input_ids"] == tok(["the digit 7 written by hand"])[0][:8].tolist()
    assert ours.decode(tok(["the digit 7 written by hand"])[0].tolist()) == "the digit 7 written by hand"


def test_hf_decoder_matches_textdecoder_with_a_visual_prefix_and_in_greedy_decoding(tmp_path):
    folder, dec, tok = lm_folder(tmp_path / "lm")
    dec.eval()
    lm = load_hf_decoder(folder).eval()
    tokens = tok(["a handwritten seven", "the digit 3 written by hand"])[:, :-1]  # right-padded
    mask = tokens != 0
    prefix = torch.randn(2, 5, 32)
    real = mask[..., None].expand(-1, -1, tok.vocab_size)  # padded positions may differ
    with torch.no_grad():
        plain_hf, plain = lm(tokens, attention_mask=mask), dec(tokens, attention_mask=mask)
        torch.testing.assert_close(plain_hf[real], plain[real], atol=1e-5, rtol=1e-5)
        ref = dec(tokens, prefix=prefix, attention_mask=mask)
        got = lm(tokens, prefix, None, mask)
        torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=1e-5)
        prompt = torch.ones(2, 1, dtype=torch.long)
        a = greedy(dec, prompt, 8, eos_id=2, prefix=prefix, use_cache=False)
        b = greedy(lm, prompt, 8, eos_id=2, prefix=prefix)
    assert torch.equal(a, b)


def test_caption_tokenizer_refuses_other_special_ids(tmp_path):
    import json

    folder, _, _ = lm_folder(tmp_path / "lm")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["pad_token"] = "<unk>"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "special_tokens_map.json").unlink()
    with pytest.raises(PretrainedError, match="pad/bos/eos ids 0/1/2"):
        CaptionTokenizer(folder, 12)
