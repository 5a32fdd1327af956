"""Loops moved into ``train/engine.fit`` (issue 22): each gives the same losses and weights as the
private loop it replaced. The old loops are kept here, verbatim apart from names, as references:
caption LM pretraining (tasks/caption.py), the unified task's tokenizer branch
(models/unified_builder.py) and the tokenizer sweep with its GAN discriminator
(eval/tokenizer_sweep.py)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from modalab.text.tokenizer import PAD


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=atol, msg=n)


# ------------------------------------------------------------------ caption LM pretraining


def _old_lm_loop(decoder, tokens, d, seed) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(decoder.parameters(), lr=d.pretrain_lr, weight_decay=0.01)
    decoder.train()
    losses = []
    for step in range(d.pretrain_steps):
        idx = torch.randint(len(tokens), (d.pretrain_batch_size,), generator=g)
        inp, tgt = tokens[idx, :-1], tokens[idx, 1:]
        logits = decoder(inp, attention_mask=inp != PAD)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_caption_lm_pretraining_through_the_engine_matches_the_old_loop(steps):
    from modalab.tasks.caption import lm_pretraining_fit
    from modalab.text.decoder import TextDecoder

    torch.manual_seed(0)
    old = TextDecoder(vocab_size=20, dim=16, depth=2, heads=2, max_len=10, dropout=0.1)
    new = copy.deepcopy(old)
    tokens = torch.randint(1, 20, (12, 8))
    tokens[::3, 5:] = PAD
    d = SimpleNamespace(pretrain_lr=3e-3, pretrain_batch_size=4, pretrain_steps=steps)
    torch.manual_seed(1)  # dropout draws from the global generator in both loops
    ref = _old_lm_loop(old, tokens, d, seed=5)
    torch.manual_seed(1)
    assert lm_pretraining_fit(new, tokens, d, seed=5) == ref[-1]
    _same_weights(old, new)


# ------------------------------------------------------------------ unified tokenizer branch


def _old_branch(tok, images, cfg, seed) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(tok.parameters(), lr=cfg.pretrain_lr, betas=(0.5, 0.9), weight_decay=0.0)
    tok.train()
    rec = float("nan")
    for step in range(cfg.pretrain_steps):
        for grp in opt.param_groups:
            grp["lr"] = cfg.pretrain_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.pretrain_steps)))
        idx = torch.randint(len(images), (min(cfg.pretrain_batch_size, len(images)),), generator=g)
        x = images[idx]
        recon, _, aux = tok(x)
        l1 = F.l1_loss(recon, x)
        loss = l1 + aux["loss"] if "loss" in aux else l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = float(l1.detach())
    return rec


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_unified_tokenizer_branch_through_the_engine_matches_the_old_loop(quantizer):
    from modalab.models.unified_builder import TokenizerBranch, train_tokenizer_branch
    from modalab.vision.quantizers import build_quantizer
    from modalab.vision.tokenizer import ImageTokenizer

    torch.manual_seed(0)
    q = build_quantizer(quantizer, 4, 64, **({"dead_code_threshold": 1.0} if quantizer == "vq" else {}))
    old = ImageTokenizer(q, in_channels=1, channels=8, num_down=1, latent_dim=4)
    new = copy.deepcopy(old)
    images = torch.rand(40, 1, 8, 8)
    cfg = TokenizerBranch(quantizer=quantizer, codebook_size=64, channels=8, latent_dim=4,
                          pretrain_steps=5, pretrain_batch_size=8, pretrain_lr=3e-3)
    torch.manual_seed(2)
    ref = _old_branch(old, images, cfg, seed=3)
    torch.manual_seed(2)
    got = train_tokenizer_branch(new, images, cfg, seed=3)
    assert got["steps"] == 5 and got["final_l1"] == pytest.approx(ref, rel=1e-6, abs=1e-7)
    _same_weights(old, new, atol=1e-6)


# ------------------------------------------------------------------ tokenizer sweep (GAN)


def _old_train_tokenizer(steps, disc_start, seed=0, lr=2e-3, batch_size=8, log=None):
    """eval/tokenizer_sweep.train_tokenizer's old loop, for fsq, 8x8 digits, GAN + perceptual."""
    from modalab.eval.reconstruction import evaluate_tokenizer
    from modalab.eval.tokenizer_sweep import digits_splits
    from modalab.vision.quantizers import build_quantizer
    from modalab.vision.tokenizer import ImageTokenizer
    from modalab.vision.vqgan import PatchDiscriminator, StructuralLoss, VQGANLoss

    torch.manual_seed(seed)
    data = digits_splits(8, seed)
    train, held_out = data["train"], data["val"]  # the harness trains on train, scores val by default
    tok = ImageTokenizer(build_quantizer("fsq", 4, 64, None), in_channels=1, channels=8, num_down=1, latent_dim=4)
    disc = PatchDiscriminator(1, 8, n_layers=1)
    objective = VQGANLoss(disc, StructuralLoss(), rec_loss="l1", perceptual_weight=0.5, disc_weight=0.5,
                          disc_start=disc_start)
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    gen = torch.Generator().manual_seed(seed)
    tok.train()
    for step in range(steps):
        x = train[torch.randint(0, len(train), (batch_size,), generator=gen)]
        recon, _, aux = tok(x)
        loss, logs = objective.generator_loss(x, recon, aux["loss"], step, tok.last_layer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if objective.disc_active(step):
            d_loss, d_logs = objective.discriminator_loss(x, recon, step)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(d_logs)
        if "usage" in aux:
            logs.update(batch_usage=float(aux["usage"]), batch_perplexity=float(aux["perplexity"]))
        log(step, logs)
    return evaluate_tokenizer(tok, held_out)


def test_tokenizer_sweep_gan_through_the_engine_matches_the_old_loop():
    from modalab.eval.tokenizer_sweep import train_tokenizer

    old_logs, new_logs = {}, {}
    ref = _old_train_tokenizer(5, disc_start=2, log=lambda s, l: old_logs.__setitem__(s, dict(l)))
    got = train_tokenizer(quantizer="fsq", codebook_size=64, image_size=8, num_down=1, channels=8,
                          latent_dim=4, steps=5, batch_size=8, use_gan=True, disc_start=2,
                          perceptual_weight=0.5, log=lambda s, l: new_logs.__setitem__(s, dict(l)),
                          log_every=1)
    assert old_logs.keys() == new_logs.keys() == set(range(5))
    for s in range(5):
        assert list(new_logs[s]) == list(old_logs[s]), s
        assert new_logs[s] == pytest.approx(old_logs[s], rel=1e-5, abs=1e-6), s
    assert "d_loss" not in new_logs[1] and "d_loss" in new_logs[2]
    for k in ("psnr", "ssim", "codebook_usage", "perplexity"):
        assert got[k] == pytest.approx(ref[k], rel=1e-5), k
