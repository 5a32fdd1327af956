"""The AR + diffusion pair (models/gen_pair.py): EMA against the plain formula; each generator's loss
reaches only its own parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modalab.models.gen_pair import GenPairConfig, build_gen_pair, ema_update


def test_ema_update_matches_the_formula():
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = copy.deepcopy(live)
    old = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in live.parameters():
            p.add_(torch.randn_like(p))
    live(torch.randn(5, 3))  # moves the BatchNorm buffers
    ema_update(ema, live, 0.9)
    for o, e, m in zip(old, ema.parameters(), live.parameters()):
        torch.testing.assert_close(e, 0.9 * o + 0.1 * m)
    torch.testing.assert_close(ema[1].running_mean, live[1].running_mean)
    with pytest.raises(ValueError, match="decay=1.0"):
        ema_update(ema, live, 1.0)


def test_losses_train_disjoint_parameter_sets():
    cfg = GenPairConfig.model_validate({"name": "gen_pair", "tokenizer": {"pretrain_steps": 0},
                                        "ar": {"dim": 16, "depth": 1, "heads": 2},
                                        "diffusion_text": {"dim": 16, "depth": 1, "heads": 2},
                                        "diffusion": {"channels": 8}})
    m = build_gen_pair(cfg, text_vocab=12, image_size=16, channels=1)
    x, text = torch.rand(4, 1, 16, 16), torch.randint(3, 12, (4, 10))
    pad = torch.zeros(4, 10, dtype=torch.bool)
    codes = m.encode(x)
    assert codes.shape == (4, 16) and m.decode(codes).shape == (4, 1, 16, 16)
    m.ar_loss(text, pad, codes).backward()
    assert all(p.grad is None for p in [*m.diffusion.parameters(), *m.diffusion_text.parameters()])
    assert any(p.grad is not None for p in m.ar.parameters())
    m.zero_grad(set_to_none=True)
    m.diffusion_loss(text, pad, x, p_uncond=0.1).backward()
    assert all(p.grad is None for p in m.ar.parameters())
    assert any(p.grad is not None for p in m.diffusion_text.parameters())
