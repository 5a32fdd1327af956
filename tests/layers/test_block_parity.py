"""Parity of every model migrated onto ``layers.Block`` (issue 22, phase 2).

Each test keeps a copy of the block as it was before the move (``Old*`` below, verbatim apart from
names), builds the model with those blocks, loads its state dict into the migrated model (through
the load-time key renames, strictly) and compares outputs in float64 to 1e-6.
"""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Block, multi_head_attention

ATOL = 1e-6


def close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0.0, atol=ATOL)


def swap_blocks(model: nn.Module, make) -> nn.Module:
    """Replace every ``layers.Block`` inside ``model`` by ``make(block)`` (the old class)."""
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Block):
                setattr(parent, child_name, make(child))
    return model


def transplant(old: nn.Module, new: nn.Module) -> nn.Module:
    """Load ``old``'s state dict into ``new`` (strict: every old key renamed onto a new one)."""
    new.load_state_dict(old.state_dict(), strict=True)
    return new


def seeded_(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter distinct random values (zero-initialised gates and projections too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


# ------------------------------------------------------------------ video (video/temporal.py)


class OldVideoAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj(out), k.mean(1)


def old_mlp(dim: int, ratio: float = 4.0) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class OldVideoBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), OldVideoAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), old_mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))[0]
        return x + self.mlp(self.norm2(x))


class OldDividedSpaceTimeBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = OldVideoAttention(dim, heads)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1, self.attn = nn.LayerNorm(dim), OldVideoAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), old_mlp(dim, mlp_ratio)

    def forward(self, x: Tensor, temporal: bool = True) -> Tensor:
        b, t, n, d = x.shape
        if temporal:
            xt = x.permute(0, 2, 1, 3).reshape(b * n, t, d)
            yt = self.temporal_fc(self.attn_t(self.norm_t(xt))[0])
            x = x + yt.reshape(b, n, t, d).permute(0, 2, 1, 3)
        xs = x.reshape(b * t, n, d)
        xs = xs + self.attn(self.norm1(xs))[0]
        xs = xs + self.mlp(self.norm2(xs))
        return xs.reshape(b, t, n, d)


class OldToMeBlock(nn.Module):
    def __init__(self, dim: int, heads: int, r: int, mlp_ratio: float = 4.0, protect_first: bool = False):
        super().__init__()
        self.r, self.protect_first = r, protect_first
        self.norm1, self.attn = nn.LayerNorm(dim), OldVideoAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), old_mlp(dim, mlp_ratio)

    def forward(self, x: Tensor, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
        from modalab.video.merging import bipartite_soft_matching, merge_wavg

        bias = None if size is None else size[..., 0].log()
        out, keys = self.attn(self.norm1(x), bias)
        x = x + out
        if self.r > 0:
            merge = bipartite_soft_matching(keys, self.r, self.protect_first)
            x, size = merge_wavg(merge, x, size)
        elif size is None:
            size = torch.ones_like(x[..., :1])
        return x + self.mlp(self.norm2(x)), size


def test_video_transformer_parity():
    from modalab.video.temporal import FactorisedEncoder, transformer

    torch.manual_seed(0)
    old = FactorisedEncoder(16, nn.Sequential(OldVideoBlock(16, 4), OldVideoBlock(16, 4), nn.LayerNorm(16)),
                            nn.Sequential(OldVideoBlock(16, 4), nn.LayerNorm(16)))
    old = seeded_(old, 1).double().eval()
    new = transplant(old, FactorisedEncoder(16, transformer(16, 2, 4), transformer(16, 1, 4)).double().eval())
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    close(new(x), old(x))


def test_video_divided_encoder_parity():
    from modalab.video.temporal import DividedEncoder

    torch.manual_seed(0)
    old = DividedEncoder(16, 2, 4)
    old.blocks = nn.ModuleList([OldDividedSpaceTimeBlock(16, 4) for _ in range(2)])
    old = seeded_(old, 2).double().eval()
    new = transplant(old, DividedEncoder(16, 2, 4).double().eval())
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    close(new(x), old(x))


def test_video_tome_encoder_parity():
    from modalab.video.merging import ToMeEncoder

    torch.manual_seed(0)
    old = ToMeEncoder(16, 2, 4, r=3)
    old.blocks = nn.ModuleList([OldToMeBlock(16, 4, r=3) for _ in range(2)])
    old = seeded_(old, 3).double().eval()
    new = transplant(old, ToMeEncoder(16, 2, 4, r=3).double().eval())
    x = torch.randn(2, 4, 5, 16, dtype=torch.float64)
    close(new(x), old(x))


# ------------------------------------------------------------------ audio (audio/whisper_encoder.py)


class OldWhisperBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


def test_whisper_encoder_parity_and_key_padding():
    from modalab.audio.whisper_encoder import WhisperStyleEncoder, block

    torch.manual_seed(0)
    old = WhisperStyleEncoder(n_mels=8, dim=16, depth=2, heads=4, max_frames=40)
    old.blocks = nn.ModuleList(OldWhisperBlock(16, 4) for _ in range(2))
    old = seeded_(old, 4).double().eval()
    new = transplant(old, WhisperStyleEncoder(n_mels=8, dim=16, depth=2, heads=4, max_frames=40).double().eval())
    mel = torch.randn(2, 8, 30, dtype=torch.float64)
    (yo, ho), (yn, hn) = old(mel, return_hidden=True), new(mel, return_hidden=True)
    close(yn, yo)
    for a, b in zip(hn, ho):
        close(a, b)
    # the old block's key_padding (True = pad) is the new block's attn_mask (True = attend)
    ob = seeded_(OldWhisperBlock(16, 4), 5).double()
    nb = transplant(ob, block(16, 4).double())
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    close(nb(x, attn_mask=~pad[:, None, None, :]), ob(x, pad))


# ------------------------------------------------------------------ fusion (early_late, agreement)


class OldEncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_mask=key_mask)
        return x + self.ff(self.norm2(x))


@pytest.mark.parametrize("kind", ["early", "late", "gated_cross_attention"])
def test_agreement_models_parity(kind):
    """The fusion ablation's models (early/late fusion's and the gated cross-attention model's
    ``EncoderBlock``s are now ``layers.Block``); padded captions included."""
    from modalab.fusion.agreement import agreement_model

    kw = dict(image_size=8, channels=1, patch=4, vocab_size=20, context_length=6, dim=16, depth=2, heads=4)
    torch.manual_seed(0)
    old = swap_blocks(agreement_model(kind, **kw), lambda b: OldEncoderBlock(16, 4))
    assert not any(isinstance(m, Block) for m in old.modules())
    old = seeded_(old, 6).double().eval()
    new = transplant(old, agreement_model(kind, **kw).double().eval())
    images = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    tokens = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12], [2, 0, 0, 0, 0, 0]])
    close(new(images, tokens), old(images, tokens))


# ------------------------------------------------------------------ text (text/decoder.py)


class OldDecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, bias=True, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim), nn.Dropout(dropout)
        )
        self.cross: nn.Module | None = None
        self.adapter: nn.Module | None = None

    def forward(self, x, key_mask, cache, cross_inputs, cross_cache):
        if self.cross is not None:
            x = self.cross(x, cache=cross_cache, **cross_inputs)
        x = x + self.attn(self.norm1(x), key_mask=key_mask, is_causal=True, cache=cache)
        x = x + self.ff(self.norm2(x))
        if self.adapter is not None:
            x = self.adapter(x)
        return x


def _decoder(old: bool):
    from modalab.fusion.cross_attention import GatedCrossAttentionBlock
    from modalab.text.decoder import BottleneckAdapter, TextDecoder

    dec = TextDecoder(vocab_size=30, dim=16, depth=2, heads=4, max_len=24)
    if old:
        dec.blocks = nn.ModuleList(OldDecoderBlock(16, 4, 4, 0.0) for _ in range(2))
    dec.insert_cross_layers(lambda i: GatedCrossAttentionBlock(16, 8, heads=2, head_dim=8) if i == 1 else None)
    dec.insert_adapters(lambda i: BottleneckAdapter(16, 4))
    return dec


def test_text_decoder_parity_full_and_cached():
    torch.manual_seed(0)
    old = seeded_(_decoder(old=True), 7).double().eval()
    new = transplant(old, _decoder(old=False).double().eval())
    tokens = torch.randint(1, 30, (2, 7))
    mask = torch.tensor([[False, False, True, True, True, True, True], [True] * 7])  # left padding
    prefix = torch.randn(2, 3, 16, dtype=torch.float64)
    cross = {"media": torch.randn(2, 5, 8, dtype=torch.float64)}
    close(new(tokens, prefix=prefix, attention_mask=mask, cross_inputs=cross),
          old(tokens, prefix=prefix, attention_mask=mask, cross_inputs=cross))
    # incremental decoding with the KV caches: prompt, then one token at a time
    co, cn = old.new_cache(), new.new_cache()
    close(new(tokens[:, :4], prefix=prefix, attention_mask=mask[:, :4], cross_inputs=cross, cache=cn),
          old(tokens[:, :4], prefix=prefix, attention_mask=mask[:, :4], cross_inputs=cross, cache=co))
    for t in range(4, 7):
        close(new(tokens[:, t:t + 1], cross_inputs=cross, cache=cn),
              old(tokens[:, t:t + 1], cross_inputs=cross, cache=co))


def test_text_decoder_lora_targets_and_adapter_patterns_unchanged():
    """Recipes select ``decoder.blocks.*.adapter.*`` and LoRA wraps ``q_proj k_proj v_proj
    out_proj``: both names survive the move."""
    new = _decoder(old=False)
    names = {n for n, _ in new.named_modules()}
    assert {"blocks.0.adapter", "blocks.0.attn.q_proj", "blocks.1.attn.out_proj", "blocks.1.cross"} <= names
    assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in _decoder(old=True).parameters())


# ------------------------------------------------------------------ unified (models/unified.py)


def _old_unified():
    from modalab.models.unified import UnifiedTransformer

    class OldUnifiedTransformer(UnifiedTransformer):
        def __init__(self, *a, dim: int, heads: int, depth: int, dropout: float = 0.0, **kw):
            super().__init__(*a, dim=dim, heads=heads, depth=depth, dropout=dropout, **kw)
            layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

        def hidden(self, ids, pad=None, features=None):  # the old model read codes only
            assert features is None
            L = ids.shape[1]
            causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=ids.device), 1)
            h = self.tok_emb(ids) + self.pos_emb[:, :L]
            h = self.blocks(h, mask=causal, src_key_padding_mask=pad)
            return self.norm(h)

    return OldUnifiedTransformer


def test_unified_transformer_parity():
    from modalab.models.unified import UnifiedTransformer

    kw = dict(text_vocab=12, codebook_size=8, image_tokens=4, dim=16, depth=2, heads=4, max_text=5, dropout=0.1)
    torch.manual_seed(0)
    old = seeded_(_old_unified()(**kw), 8).double().eval()
    assert any(k.startswith("blocks.layers.0.self_attn.in_proj_weight") for k in old.state_dict())
    new = transplant(old, UnifiedTransformer(**kw).double().eval())
    codes = torch.randint(0, 8, (3, 4))
    text = torch.randint(0, 12, (3, 5))
    text_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    ids = new.understand_sequence(codes, text)
    close(new.logits(ids), old.logits(ids))  # causal, no padding
    close(new.understand_loss(codes, text, text_pad), old.understand_loss(codes, text, text_pad))
    close(new.generate_loss(text, codes, text_pad), old.generate_loss(text, codes, text_pad))
    close(new.text_condition(text, text_pad), old.text_condition(text, text_pad))
    assert torch.equal(new.answer(codes, 3), old.answer(codes, 3, use_cache=False))  # cached vs not


def test_unified_block_dropout_is_active_in_training():
    """dropout > 0 still regularises (attention, attention output, MLP hidden and output)."""
    from modalab.models.unified import unified_block

    blk = unified_block(16, 4, dropout=0.5).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.manual_seed(0)
    a = blk(x, is_causal=True)
    torch.manual_seed(1)
    b = blk(x, is_causal=True)
    assert not torch.allclose(a, b)
    blk.eval()
    close(blk(x, is_causal=True), blk(x, is_causal=True))
