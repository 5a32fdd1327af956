"""Tiny random checkpoints written by the libraries' own ``save_pretrained`` (nothing downloaded).

Each fixture builds one folder per test session: a transformers model with random weights, plus
(for the dual encoders) a word-level ``tokenizer.json`` built with the ``tokenizers`` library and a
``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

try:  # the [hf] extra (in [test]); without it the tests here skip, and pytest reports the skips
    import transformers
except ImportError:  # pragma: no cover
    transformers = None

WORDS = ["a", "photo", "of", "the", "digit", "handwritten", "number", "an", "image", "zero", "one", "two",
         "three", "four", "five", "six", "seven", "eight", "nine", "cat", "dog"]
VOCAB = 99  # ids: 0 <unk>, 1 <bos>, 2 <pad>, words, fillers, 98 <eos> (end-of-text is the largest id)
CTX = 16
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def write_tokenizer(folder: Path, ctx: int = CTX) -> None:
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<bos>": 1, "<pad>": 2}
    for w in WORDS:
        vocab[w] = len(vocab)
    while len(vocab) < VOCAB - 1:
        vocab[f"w{len(vocab)}"] = len(vocab)
    vocab["<eos>"] = VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", VOCAB - 1)]
    )
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<bos>",
        "eos_token": "<eos>", "unk_token": "<unk>", "model_max_length": ctx,
    }))


def _need_transformers() -> None:
    if transformers is None:
        pytest.skip("transformers is not installed (pip install -e '.[hf]')")


def tiny_clip_config(image_size: int = 32, patch: int = 8, width: int = 32, text_width: int = 32,
                     depth: int = 2, heads: int = 4, ctx: int = CTX, vocab: int = VOCAB, proj: int = 24,
                     act: str = "quick_gelu"):
    return transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=text_width, intermediate_size=text_width * 4 + 5,
                         num_hidden_layers=depth, num_attention_heads=heads, max_position_embeddings=ctx,
                         bos_token_id=1, pad_token_id=2, eos_token_id=vocab - 1, hidden_act=act),
        vision_config=dict(image_size=image_size, patch_size=patch, hidden_size=width, intermediate_size=width * 4 + 5,
                           num_hidden_layers=depth, num_attention_heads=heads, hidden_act=act),
        projection_dim=proj,
    )


def tiny_siglip_config(image_size: int = 32, patch: int = 8, width: int = 32, depth: int = 2, heads: int = 4,
                       ctx: int = CTX, vocab: int = VOCAB):
    return transformers.SiglipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=width, intermediate_size=width * 4 + 3, num_hidden_layers=depth,
                         num_attention_heads=heads, max_position_embeddings=ctx, projection_size=width,
                         bos_token_id=1, pad_token_id=2, eos_token_id=vocab - 1),
        vision_config=dict(image_size=image_size, patch_size=patch, hidden_size=width, intermediate_size=width * 4 + 3,
                           num_hidden_layers=depth, num_attention_heads=heads),
    )


def _randomize(model: torch.nn.Module) -> None:
    """Non-trivial norms and biases (initialisation leaves them at 1 / 0, which hides layout bugs)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def save_clip(folder: Path) -> Path:
    _need_transformers()
    torch.manual_seed(0)
    m = transformers.CLIPModel(tiny_clip_config()).eval()
    _randomize(m)
    m.save_pretrained(str(folder))
    write_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
        "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD,
    }))
    return folder


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return save_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    _need_transformers()
    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    m = transformers.SiglipModel(tiny_siglip_config()).eval()
    _randomize(m)
    m.save_pretrained(str(folder))
    write_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))
    return folder


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory) -> Path:
    _need_transformers()
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    m = transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    )).eval()
    _randomize(m)
    m.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))
    return folder


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory) -> Path:
    _need_transformers()
    folder = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    m = transformers.WhisperModel(transformers.WhisperConfig(
        vocab_size=99, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=64, max_source_positions=20,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )).eval()
    _randomize(m)
    m.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    _need_transformers()
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    m = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=98,
    )).eval()
    m.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory) -> Path:
    _need_transformers()
    folder = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(0)
    m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=98, pad_token_id=2,
    )).eval()
    m.save_pretrained(str(folder))
    return folder
