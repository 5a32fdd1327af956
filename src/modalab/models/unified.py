"""One model that understands and generates images (chapter 5.2.2, CM3Leon / Emu style).

A shared causal transformer reads one vocabulary: text ids ``[0, V)``, image codes ``[V, V + K)``
(the tokenizer's indices shifted by V) and four task / boundary tokens. The task switch:

- ``understand``: ``[UND, BOI, image codes, EOI, text]``, next-token loss on the text only;
  ``answer`` decodes text greedily after the image.
- ``generate`` (autoregressive): ``[GEN, text, BOI, image codes]``, loss on the image codes only;
  ``generate_codes`` samples the N codes, restricted to the image range, and the tokenizer decodes.
  Decoding (``answer``, ``generate_codes``) keeps a key/value cache per block, so each step runs
  one position; ``use_cache=False`` re-encodes the whole prefix (the tested reference).
- ``generate`` (diffusion): ``text_condition`` runs the shared transformer over ``[GEN, text]`` and
  hands its hidden states to a ``GaussianDiffusion`` decoder (DDPM epsilon loss, DDIM sampling,
  classifier-free guidance), whose ``Denoiser`` cross-attends to them (both in
  ``models/diffusion.py``, re-exported here).

Training wiring (the three stages: branches, interface with the diffusion side frozen, joint) lives
in the recipe; every part here is a plain module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Attention, Block, KVCache, Mlp, causal_mask, rename_on_load
from modalab.models.diffusion import Denoiser, GaussianDiffusion, timestep_embedding

__all__ = ["Denoiser", "GaussianDiffusion", "UnifiedModel", "UnifiedTransformer", "timestep_embedding",
           "unified_block"]


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

    def hidden(self, ids: Tensor, pad: Tensor | None = None, features: Tensor | None = None,
               caches: list[KVCache] | None = None) -> Tensor:
        """Causal hidden states: ids (B, L) long, pad (B, L) bool True = padding -> (B, L, D).
        ``features`` (B, N, F): continuous image features that replace the embeddings of the N
        image positions of an understand sequence (positions 2 .. N + 1, after UND and BOI).
        ``caches`` (one :class:`KVCache` per block, incremental decoding): ``ids`` continue the
        cached sequence at position ``caches[0].length``, and ``pad`` covers every position so far
        (cached + new)."""
        start = caches[0].length if caches else 0
        L = start + ids.shape[1]
        if L > self.max_len:
            raise ValueError(f"UnifiedTransformer: sequence of {L} tokens > max_len {self.max_len}")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"UnifiedTransformer: {len(caches)} caches for {len(self.blocks)} blocks")
        h = self.tok_emb(ids)  # (B, l, D)
        if features is not None:
            if self.image_in is None:
                raise ValueError("UnifiedTransformer: features given but built without feature_dim")
            if start:
                raise ValueError("UnifiedTransformer: features go with the first (uncached) call")
            h = torch.cat([h[:, :2], self.image_in(features), h[:, 2 + self.N :]], 1)  # (B, L, D)
        h = h + self.pos_emb[:, start:L]
        kw: dict = {"is_causal": True}
        if pad is not None:
            # one mask for every block; position 0 (a task token) is never padding, so no query
            # has all keys masked
            see = causal_mask(ids.shape[1], L, start, ids.device)  # (l, L) True = may see
            kw = {"attn_mask": see[None, None] & ~pad[:, None, None, :]}  # (B, 1, l, L)
        for i, blk in enumerate(self.blocks):
            h = blk(h, **kw, **({"cache": caches[i]} if caches is not None else {}))
        return self.norm(h)

    def new_caches(self) -> list[KVCache]:
        """Empty key/value caches, one per block, for ``hidden(..., caches=...)``."""
        return [KVCache() for _ in self.blocks]

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
               features: Tensor | None = None, use_cache: bool = True) -> Tensor:
        """Greedy text after image codes (B, N) (or ``features`` (B, N, F) in their place) ->
        text ids (B, max_new_tokens) in [0, V). ``use_cache=False`` re-encodes the whole
        sequence at every step (the reference the cached path is tested against)."""
        ids = self.understand_sequence(codes, codes[:, :0])
        caches = self.new_caches() if use_cache else None
        step, out = ids, []
        for _ in range(max_new_tokens):
            logits = self.logits_step(step, ids, None, features if step is ids else None, caches)
            nxt = logits[:, : self.V].argmax(-1, keepdim=True)  # (B, 1)
            out.append(nxt)
            ids = torch.cat([ids, nxt], 1)
            step = nxt if use_cache else ids
        text = torch.cat(out, 1)
        if eos_id is not None:  # everything after the first EOS becomes EOS
            after = (text == eos_id).long().cumsum(1) > 0
            text = text.masked_fill(after, eos_id)
        return text

    def logits_step(self, step: Tensor, ids: Tensor, pad: Tensor | None,
                    features: Tensor | None, caches: list[KVCache] | None) -> Tensor:
        """Next-token logits (B, vocab) after ``ids`` (B, L): with ``caches``, only ``step`` (the
        ids not cached yet) is run; without, the whole of ``ids`` (``step`` is ``ids``)."""
        if caches is None:
            return self.logits(ids, pad, features)[:, -1]
        return self.head(self.hidden(step, pad, features, caches)[:, -1])

    @torch.no_grad()
    def generate_codes(self, text: Tensor, text_pad: Tensor | None = None,
                       temperature: float = 1.0, top_k: int | None = None,
                       generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
        """Sample N image codes for text (B, T) -> (B, N) in [0, K); temperature 0 is greedy.
        With ``use_cache`` (default) each step runs one position against cached keys and values
        (O(L) per step, not O(L^2)); ``use_cache=False`` is the plain re-encoding reference."""
        ids = self.generate_sequence(text)
        caches = self.new_caches() if use_cache else None
        step = ids
        for _ in range(self.N):
            pad = self._prompt_pad(text_pad, ids.shape[1])
            logits = self.logits_step(step, ids, pad, None, caches)[:, self.V : self.V + self.K]
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, self.K), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, nxt + self.V], 1)
            step = nxt + self.V if use_cache else ids
        return ids[:, -self.N :] - self.V

    def text_condition(self, text: Tensor, text_pad: Tensor | None = None) -> Tensor:
        """Shared-model hidden states of [GEN, text] (B, T + 1, D): the diffusion condition."""
        ids = torch.cat([self._const(text.shape[0], self.GEN, text.device), text], 1)
        return self.hidden(ids, self._prompt_pad(text_pad, ids.shape[1]))


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
