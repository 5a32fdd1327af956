"""Integration (slow): resampler + decoder learn to caption synthetic "digit" media, via a visual
prefix and via gated cross-attention; greedy decoding names the right class."""

import pytest
import torch
import torch.nn.functional as F

from modalab.fusion.cross_attention import GatedCrossAttentionBlock
from modalab.fusion.resampler import PerceiverResampler
from modalab.text.decoder import TextDecoder
from modalab.text.generate import greedy

V, BOS, EOS = 16, 1, 2  # 3 = "a", 4 = "handwritten", 5..14 = the ten digit words


def _batch(protos, n, g):
    y = torch.randint(0, 10, (n,), generator=g)
    media = protos[y] + 0.5 * torch.randn(n, 8, 24, generator=g)
    cap = torch.stack([torch.full_like(y, BOS), torch.full_like(y, 3), torch.full_like(y, 4), y + 5,
                       torch.full_like(y, EOS)], 1)
    return media, cap, y


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefix", "xattn"])
def test_tiny_captioner_learns_the_digit_word(mode):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 8, 24, generator=g)
    dec = TextDecoder(V, 32, depth=2, heads=2, max_len=32)
    conn = PerceiverResampler(24, 32, depth=1, heads=2, head_dim=16, num_latents=4)
    if mode == "xattn":
        dec.insert_cross_layers(lambda i: GatedCrossAttentionBlock(32, 32, heads=2, head_dim=16))
    opt = torch.optim.AdamW([*dec.parameters(), *conn.parameters()], lr=3e-3)

    def cond(lat):
        return {"prefix": lat} if mode == "prefix" else {"cross_inputs": {"media": lat}}

    for _ in range(150):
        media, cap, _ = _batch(protos, 32, g)
        logits = dec(cap[:, :-1], **cond(conn(media)[0]))
        loss = F.cross_entropy(logits.reshape(-1, V), cap[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval()
    conn.eval()
    media, cap, y = _batch(protos, 200, g)
    with torch.no_grad():
        out = greedy(dec, cap[:, :1], 4, eos_id=EOS, **cond(conn(media)[0]))
    assert (out[:, :2] == torch.tensor([3, 4])).all()
    assert (out[:, 2] == y + 5).float().mean() >= 0.9
