"""One model that understands and generates images (chapter 5.2.2, CM3Leon / Emu style).

A shared causal transformer reads one vocabulary: text ids ``[0, V)``, image codes ``[V, V + K)``
(the tokenizer's indices shifted by V) and four task / boundary tokens. The task switch:

- ``understand``: ``[UND, BOI, image codes, EOI, text]``, next-token loss on the text only;
  ``answer`` decodes text greedily after the image.
- ``generate`` (autoregressive): ``[GEN, text, BOI, image codes]``, loss on the image codes only;
  ``generate_codes`` samples the N codes, restricted to the image range, and the tokenizer decodes.
- ``generate`` (diffusion): ``text_condition`` runs the shared transformer over ``[GEN, text]`` and
  hands its hidden states to a ``GaussianDiffusion`` decoder (DDPM epsilon loss, DDIM sampling,
  classifier-free guidance), whose ``Denoiser`` cross-attends to them.

Training wiring (the three stages: branches, interface with the diffusion side frozen, joint) lives
in the recipe; every part here is a plain module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Attention, Block, Mlp, rename_on_load, torch_mha_attention
from modalab.models.ddim import cfg_combine, check_interval, ddim_loop, ddim_timesteps, in_interval


# ``nn.TransformerEncoderLayer`` parameter names (the blocks before they became ``layers.Block``).
LEGACY_BLOCK_KEYS = {
    "self_attn.in_proj_weight": "attn.qkv.weight", "self_attn.in_proj_bias": "attn.qkv.bias",
    "self_attn.out_proj.": "attn.proj.", "linear1.": "mlp.fc1.", "linear2.": "mlp.fc2.",
}


def unified_block(dim: int, heads: int, dropout: float = 0.0) -> Block:
    """Pre-norm causal block with ``nn.TransformerEncoderLayer(norm_first=True, gelu)``'s dropout
    placement (attention probabilities, attention output, after the activation, after the MLP);
    its checkpoints load (``LEGACY_BLOCK_KEYS``)."""
    blk = Block(dim, heads, attn=Attention(dim, heads, dropout=dropout, out_dropout=dropout),
                mlp=Mlp(dim, 4 * dim, dropout=dropout, hidden_dropout=dropout))
    rename_on_load(blk, LEGACY_BLOCK_KEYS)
    return blk


class UnifiedTransformer(nn.Module):
    """Decoder-only transformer over text ids and image codes with task tokens.

    Args:
        text_vocab: V text ids; image codebook: K codes; image_tokens: N codes per image.
        dim, depth, heads: transformer size; max_text: longest text (for position embeddings).
        feature_dim: when set, ``understand_loss`` / ``answer`` may read continuous image features
            (B, N, feature_dim) instead of the codes (``image_in``: LayerNorm + Linear to ``dim``);
            generation always writes codes.
    """

    def __init__(self, text_vocab: int, codebook_size: int, image_tokens: int, dim: int = 128,
                 depth: int = 4, heads: int = 4, max_text: int = 16, dropout: float = 0.0,
                 feature_dim: int | None = None) -> None:
        super().__init__()
        self.V, self.K, self.N = text_vocab, codebook_size, image_tokens
        self.UND, self.GEN, self.BOI, self.EOI = range(text_vocab + codebook_size,
                                                       text_vocab + codebook_size + 4)
        self.vocab = text_vocab + codebook_size + 4
        self.max_len = image_tokens + max_text + 3
        self.tok_emb = nn.Embedding(self.vocab, dim)
        self.pos_emb = nn.Parameter(torch.randn(1, self.max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(unified_block(dim, heads, dropout) for _ in range(depth))
        rename_on_load(self, {"blocks.layers.": "blocks."})  # nn.TransformerEncoder's names
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.vocab, bias=False)
        self.image_in = (nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, dim))
                         if feature_dim else None)
        self.dim = dim

    def hidden(self, ids: Tensor, pad: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """Causal hidden states: ids (B, L) long, pad (B, L) bool True = padding -> (B, L, D).
        ``features`` (B, N, F): continuous image features that replace the embeddings of the N
        image positions of an understand sequence (positions 2 .. N + 1, after UND and BOI)."""
        L = ids.shape[1]
        if L > self.max_len:
            raise ValueError(f"UnifiedTransformer: sequence of {L} tokens > max_len {self.max_len}")
        h = self.tok_emb(ids)  # (B, L, D)
        if features is not None:
            if self.image_in is None:
                raise ValueError("UnifiedTransformer: features given but built without feature_dim")
            h = torch.cat([h[:, :2], self.image_in(features), h[:, 2 + self.N :]], 1)  # (B, L, D)
        h = h + self.pos_emb[:, :L]
        kw: dict = {"is_causal": True}
        if pad is not None:
            # position 0 (a task token) is never padding, so no query has all keys masked
            causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()  # (L, L) True = see
            kw = {"attn_mask": causal[None, None] & ~pad[:, None, None, :]}  # (B, 1, L, L)
        for blk in self.blocks:
            h = blk(h, **kw)
        return self.norm(h)

    def logits(self, ids: Tensor, pad: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """(B, L) -> next-token logits (B, L, vocab)."""
        return self.head(self.hidden(ids, pad, features))

    def _const(self, b: int, tok: int, device) -> Tensor:
        return torch.full((b, 1), tok, dtype=torch.long, device=device)

    def understand_sequence(self, codes: Tensor, text: Tensor) -> Tensor:
        """codes (B, N), text (B, T) -> ids (B, N + T + 3) = [UND, BOI, codes + V, EOI, text]."""
        b, dev = codes.shape[0], codes.device
        return torch.cat([self._const(b, self.UND, dev), self._const(b, self.BOI, dev),
                          codes + self.V, self._const(b, self.EOI, dev), text], dim=1)

    def generate_sequence(self, text: Tensor, codes: Tensor | None = None) -> Tensor:
        """text (B, T), codes (B, n) -> ids [GEN, text, BOI, codes + V] (B, T + 2 + n)."""
        b, dev = text.shape[0], text.device
        parts = [self._const(b, self.GEN, dev), text, self._const(b, self.BOI, dev)]
        return torch.cat(parts + ([codes + self.V] if codes is not None else []), dim=1)

    def understand_loss(self, codes: Tensor, text: Tensor, text_pad: Tensor | None = None,
                        features: Tensor | None = None) -> Tensor:
        """Cross-entropy of the text (B, T) given image codes (B, N) (or ``features`` (B, N, F)
        in their place); padded text ignored."""
        ids = self.understand_sequence(codes, text)
        start = self.N + 3  # first text position
        pad = None
        if text_pad is not None:
            pad = torch.cat([torch.zeros_like(ids[:, :start], dtype=torch.bool), text_pad], 1)
        logits = self.logits(ids, pad, features)[:, start - 1 : -1]  # text predictions (B, T, vocab)
        target = text.masked_fill(text_pad, -100) if text_pad is not None else text
        return F.cross_entropy(logits.reshape(-1, self.vocab), target.reshape(-1),
                               ignore_index=-100)

    def generate_loss(self, text: Tensor, codes: Tensor, text_pad: Tensor | None = None) -> Tensor:
        """Cross-entropy of the image codes (B, N) given text (B, T)."""
        ids = self.generate_sequence(text, codes)
        pad = self._prompt_pad(text_pad, ids.shape[1])
        start = text.shape[1] + 2  # first image-code position
        logits = self.logits(ids, pad)[:, start - 1 : -1, self.V : self.V + self.K]  # (B, N, K)
        return F.cross_entropy(logits.reshape(-1, self.K), codes.reshape(-1))

    def _prompt_pad(self, text_pad: Tensor | None, length: int) -> Tensor | None:
        if text_pad is None:
            return None
        b, t = text_pad.shape
        out = torch.zeros(b, length, dtype=torch.bool, device=text_pad.device)
        out[:, 1 : 1 + t] = text_pad
        return out

    @torch.no_grad()
    def answer(self, codes: Tensor, max_new_tokens: int, eos_id: int | None = None,
               features: Tensor | None = None) -> Tensor:
        """Greedy text after image codes (B, N) (or ``features`` (B, N, F) in their place) ->
        text ids (B, max_new_tokens) in [0, V)."""
        ids = self.understand_sequence(codes, codes[:, :0])
        out = []
        for _ in range(max_new_tokens):
            nxt = self.logits(ids, None, features)[:, -1, : self.V].argmax(-1, keepdim=True)  # (B, 1)
            out.append(nxt)
            ids = torch.cat([ids, nxt], 1)
        text = torch.cat(out, 1)
        if eos_id is not None:  # everything after the first EOS becomes EOS
            after = (text == eos_id).long().cumsum(1) > 0
            text = text.masked_fill(after, eos_id)
        return text

    @torch.no_grad()
    def generate_codes(self, text: Tensor, text_pad: Tensor | None = None,
                       temperature: float = 1.0, top_k: int | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """Sample N image codes for text (B, T) -> (B, N) in [0, K); temperature 0 is greedy."""
        ids = self.generate_sequence(text)
        for _ in range(self.N):
            pad = self._prompt_pad(text_pad, ids.shape[1])
            logits = self.logits(ids, pad)[:, -1, self.V : self.V + self.K]  # (B, K)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, self.K), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, nxt + self.V], 1)
        return ids[:, -self.N :] - self.V

    def text_condition(self, text: Tensor, text_pad: Tensor | None = None) -> Tensor:
        """Shared-model hidden states of [GEN, text] (B, T + 1, D): the diffusion condition."""
        ids = torch.cat([self._const(text.shape[0], self.GEN, text.device), text], 1)
        return self.hidden(ids, self._prompt_pad(text_pad, ids.shape[1]))


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class _Res(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.n2, self.c2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Denoiser(nn.Module):
    """Small conditional U-Net: x_t (B, C, H, W), t (B,), cond (B, T, Dc) -> epsilon (B, C, H, W).

    Time and mean-pooled condition are added in every residual block; at the half resolution the
    features cross-attend to the condition tokens. ``null_cond`` is the learned "no text"
    condition used for classifier-free guidance. H and W must be even.
    """

    def __init__(self, in_channels: int, cond_dim: int, channels: int = 32, heads: int = 4) -> None:
        super().__init__()
        if channels % 8:
            raise ValueError(f"Denoiser: channels={channels}; expected a multiple of 8 (GroupNorm)")
        c, e = channels, channels * 4
        self.t_mlp = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.c_proj = nn.Linear(cond_dim, e)
        self.null_cond = nn.Parameter(torch.zeros(1, 1, cond_dim))
        self.inp = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down1, self.down = _Res(c, c, e), nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.mid1, self.mid2 = _Res(2 * c, 2 * c, e), _Res(2 * c, 2 * c, e)
        self.attn_norm = nn.LayerNorm(2 * c)
        # initialised and loadable as nn.MultiheadAttention(2c, heads, kdim=vdim=cond_dim) was
        self.attn = torch_mha_attention(2 * c, heads, kv_dim=cond_dim)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * c, c, 3, padding=1))
        self.up1 = _Res(2 * c, c, e)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(),
                                 nn.Conv2d(c, in_channels, 3, padding=1))
        self.channels = c

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, cond_pad: Tensor | None = None) -> Tensor:
        if cond_pad is None:
            keep = torch.ones_like(cond[..., :1])
        else:
            keep = (~cond_pad).to(cond.dtype)[..., None]  # (B, T, 1)
        pooled = (cond * keep).sum(1) / keep.sum(1).clamp_min(1)  # (B, Dc)
        temb = timestep_embedding(t, self.channels).to(x.dtype)  # (B, c); float64 runs too
        e = self.t_mlp(temb) + self.c_proj(pooled)
        h0 = self.down1(self.inp(x), e)  # (B, c, H, W)
        h = self.mid1(self.down(h0), e)  # (B, 2c, H/2, W/2)
        b, ch, hh, ww = h.shape
        seq = h.flatten(2).transpose(1, 2)  # (B, H/2 * W/2, 2c)
        real = None if cond_pad is None else ~cond_pad  # (B, T) True = a real condition token
        att = self.attn(self.attn_norm(seq), cond, key_mask=real)  # (B, H/2 * W/2, 2c)
        h = (seq + att).transpose(1, 2).reshape(b, ch, hh, ww)  # (B, 2c, H/2, W/2)
        h = self.up(self.mid2(h, e))  # (B, c, H, W)
        return self.out(self.up1(torch.cat([h, h0], 1), e))


class GaussianDiffusion(nn.Module):
    """DDPM training (epsilon prediction, linear betas) and DDIM sampling with CFG.

    ``denoiser(x_t, t, cond, cond_pad) -> eps``; images are expected in [-1, 1].
    """

    def __init__(self, denoiser: nn.Module, timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        super().__init__()
        self.denoiser, self.T = denoiser, timesteps
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0 (B, ...), t (B,)."""
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def _drop(self, cond: Tensor, cond_pad: Tensor | None, drop: Tensor) -> tuple[Tensor, Tensor]:
        """Replace rows where ``drop`` (B,) is True by the null condition (one valid token)."""
        null = self.denoiser.null_cond.expand(cond.shape[0], cond.shape[1], -1)
        pad = cond_pad if cond_pad is not None else torch.zeros(cond.shape[:2], dtype=torch.bool,
                                                                 device=cond.device)
        null_pad = torch.ones_like(pad)
        null_pad[:, 0] = False
        return (torch.where(drop[:, None, None], null, cond),
                torch.where(drop[:, None], null_pad, pad))

    def loss(self, x0: Tensor, cond: Tensor, cond_pad: Tensor | None = None,
             p_uncond: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
        """Epsilon-prediction MSE on x0 (B, C, H, W); condition dropped with prob ``p_uncond``."""
        b = x0.shape[0]
        t = torch.randint(0, self.T, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        drop = torch.rand(b, device=x0.device, generator=generator) < p_uncond
        cond, cond_pad = self._drop(cond, cond_pad, drop)
        return F.mse_loss(self.denoiser(self.q_sample(x0, t, noise), t, cond, cond_pad), noise)

    def guided_eps(self, x: Tensor, t: Tensor, cond: Tensor, cond_pad: Tensor | None,
                   guidance: float, rescale: float = 0.0) -> Tensor:
        """eps_u + guidance * (eps_c - eps_u) (``models/ddim.cfg_combine``); guidance 1 is plain
        conditional."""
        eps_c = self.denoiser(x, t, cond, cond_pad)
        if guidance == 1.0:
            return eps_c
        ucond, upad = self._drop(cond, cond_pad, torch.ones(x.shape[0], dtype=torch.bool,
                                                            device=x.device))
        return cfg_combine(eps_c, self.denoiser(x, t, ucond, upad), guidance, rescale)

    @torch.no_grad()
    def ddim_sample(self, shape: tuple[int, ...], cond: Tensor, cond_pad: Tensor | None = None,
                    steps: int = 50, guidance: float = 3.0, eta: float = 0.0, clip: bool = True,
                    generator: torch.Generator | None = None, guidance_interval: tuple[int, int] | None = None,
                    guidance_rescale: float = 0.0) -> Tensor:
        """DDIM (Song et al. 2021) from pure noise to x0 of ``shape`` in ``steps`` steps
        (``models/ddim.py``); guidance only at timesteps in ``guidance_interval`` [lo, hi] if given."""
        check_interval(guidance_interval, self.T)
        x = torch.randn(shape, device=cond.device, generator=generator)

        def eps_fn(x: Tensor, t: int) -> Tensor:
            g = guidance if in_interval(t, guidance_interval) else 1.0
            tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
            return self.guided_eps(x, tt, cond, cond_pad, g, guidance_rescale)

        return ddim_loop(eps_fn, self.alpha_bar, x, ddim_timesteps(self.T, steps), eta, clip, generator)


class UnifiedModel(nn.Module):
    """The task switch: ``understand`` (image -> text) and ``generate`` (text -> image).

    Args:
        transformer: the shared ``UnifiedTransformer``.
        tokenizer: image tokenizer with ``encode`` (B, C, H, W) -> (B, h, w) and ``decode``;
            needed for image inputs and for the autoregressive generation path.
        diffusion: ``GaussianDiffusion`` whose denoiser takes the transformer's hidden states.
        image_shape: (C, H, W) of generated images; diffusion samples live in [-1, 1] and are
            returned in [0, 1], like the tokenizer's images.
        token_grid: (h, w) of the tokenizer's code grid.
    """

    def __init__(self, transformer: UnifiedTransformer, tokenizer: nn.Module | None = None,
                 diffusion: GaussianDiffusion | None = None,
                 image_shape: tuple[int, int, int] = (1, 16, 16),
                 token_grid: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.transformer, self.tokenizer, self.diffusion = transformer, tokenizer, diffusion
        self.image_shape, self.token_grid = tuple(image_shape), tuple(token_grid)

    def _need(self, part: str):
        mod = getattr(self, part)
        if mod is None:
            raise ValueError(
                f"UnifiedModel: this task needs a {part}; pass {part}=... when building"
            )
        return mod

    @torch.no_grad()
    def image_features(self, image: Tensor) -> Tensor:
        """The tokenizer encoder's continuous latents before quantization: (B, C, H, W) ->
        (B, N, latent_dim), positions in the codes' raster order."""
        z = self._need("tokenizer").encoder(image)  # (B, D, h, w)
        return z.flatten(2).transpose(1, 2)  # (B, h * w, D)

    @torch.no_grad()
    def forward(self, task: str, *, image: Tensor | None = None, codes: Tensor | None = None,
                text: Tensor | None = None, text_pad: Tensor | None = None, path: str = "ar",
                max_new_tokens: int = 4, **sample_kw) -> Tensor:
        """understand: image (B, C, H, W) or codes (B, N) -> text ids (B, max_new_tokens); a
            transformer built with ``feature_dim`` reads the image's continuous latents.
        generate: text (B, T) -> images (B, C, H, W) in [0, 1] via ``path`` 'ar' or 'diffusion'.
        """
        if task == "understand":
            feats = None
            if image is not None and self.transformer.image_in is not None:
                feats = self.image_features(image)  # (B, N, F): read instead of the codes
            if codes is None:
                codes = self._need("tokenizer").encode(image).flatten(1)  # (B, N)
            return self.transformer.answer(codes, max_new_tokens, sample_kw.get("eos_id"), feats)
        if task != "generate":
            raise ValueError(f"UnifiedModel: task='{task}'; expected 'understand' or 'generate'")
        if text is None:
            raise ValueError("UnifiedModel: task 'generate' needs text=(B, T) token ids")
        if path == "ar":
            codes = self.transformer.generate_codes(text, text_pad, **sample_kw)
            grid = codes.view(codes.shape[0], *self.token_grid)  # (B, h, w)
            return self._need("tokenizer").decode(grid).clamp(0, 1)
        if path == "diffusion":
            cond = self.transformer.text_condition(text, text_pad)  # (B, T + 1, D)
            pad = self.transformer._prompt_pad(text_pad, cond.shape[1])
            x = self._need("diffusion").ddim_sample((text.shape[0], *self.image_shape), cond, pad,
                                                    **sample_kw)
            return ((x + 1) / 2).clamp(0, 1)
        raise ValueError(f"UnifiedModel: path='{path}'; expected 'ar' or 'diffusion'")
