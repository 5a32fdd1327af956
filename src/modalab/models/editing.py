"""Controllability of the two generators (chapter 5.2.2's table row on control): edit a region.

- AR region editing (token level). The image is N codes in raster order; the codes outside a region
  are kept, the region's codes are resampled under a new caption *given everything else*. A causal
  model only gives p(x_i | text, x_<i); the conditional on the rest, p(x_i | text, x_-i), is
  proportional to the joint p(text-conditioned sequence with x_i = k), so ``region_conditional``
  scores all K candidates of one position by the log-likelihood of the whole sequence (positions
  before i are the same for every k and cancel). ``ar_edit_region`` starts from an ancestral
  left-to-right draw of the region given its prefix and then runs ``sweeps`` Gibbs sweeps over the
  region's positions with that exact conditional.
- Diffusion inpainting (RePaint, Lugmayr et al. 2022, without its resampling jumps). DDIM from pure
  noise; after every update to timestep t' the known pixels are replaced by the original noised to
  t' (``q_sample``), and at the end by the original itself, so only the unknown region is generated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.models.ddim import check_interval, ddim_timesteps, in_interval
from modalab.models.unified import GaussianDiffusion, UnifiedTransformer


def code_loglik(ar: UnifiedTransformer, text: Tensor, text_pad: Tensor | None, codes: Tensor) -> Tensor:
    """log p(code_j | text, codes_<j) for every position: text (B, T), codes (B, N) -> (B, N)."""
    ids = ar.generate_sequence(text, codes)  # (B, T + 2 + N)
    start = text.shape[1] + 2
    h = ar.hidden(ids, ar._prompt_pad(text_pad, ids.shape[1]))[:, start - 1 : -1]  # (B, N, D)
    return _log_probs(ar, h).gather(-1, codes[..., None]).squeeze(-1)  # (B, N)


@torch.no_grad()
def region_conditional(ar: UnifiedTransformer, text: Tensor, text_pad: Tensor | None, codes: Tensor,
                       i: int, chunk: int = 4096, use_cache: bool = True) -> Tensor:
    """log p(x_i = k | text, x_-i) for all k: (B, K), rows normalised; the B * K candidate
    sequences are scored ``chunk`` at a time. With ``use_cache`` the prefix shared by the K
    candidates (text and codes before i) runs once per image and its keys and values are repeated
    K times; only positions i.. run per candidate. ``use_cache=False`` scores every candidate
    sequence whole (the reference)."""
    B, N, K = codes.shape[0], codes.shape[1], ar.K
    if not 0 <= i < N:
        raise ValueError(f"region_conditional: position {i} outside the {N} codes")
    if use_cache:
        rows = max(1, chunk // K)  # images per chunk of ~chunk candidate sequences
        parts = [_cached_joint(ar, text[b : b + rows], None if text_pad is None else text_pad[b : b + rows],
                               codes[b : b + rows], i) for b in range(0, B, rows)]
        joint = torch.cat(parts)  # (B, K)
        return joint - joint.logsumexp(-1, keepdim=True)
    cand = codes[:, None].repeat(1, K, 1)  # (B, K, N)
    cand[:, :, i] = torch.arange(K, device=codes.device)
    flat = cand.reshape(B * K, N)
    rep_text = text.repeat_interleave(K, 0)  # (B * K, T)
    rep_pad = None if text_pad is None else text_pad.repeat_interleave(K, 0)
    out = []
    for s in range(0, B * K, chunk):
        sl = slice(s, s + chunk)
        ll = code_loglik(ar, rep_text[sl], None if rep_pad is None else rep_pad[sl], flat[sl])  # (c, N)
        out.append(ll[:, i:].sum(1))  # positions < i do not depend on x_i
    joint = torch.cat(out).view(B, K)
    return joint - joint.logsumexp(-1, keepdim=True)


def _log_probs(ar: UnifiedTransformer, h: Tensor) -> Tensor:
    """Hidden states (..., D) -> log-probabilities over the K codes (..., K), at least float32
    (float64 stays float64)."""
    logits = ar.head(h)[..., ar.V : ar.V + ar.K]
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)


def _cached_joint(ar: UnifiedTransformer, text: Tensor, text_pad: Tensor | None, codes: Tensor,
                  i: int) -> Tensor:
    """Unnormalised log p(x_i = k, x_>i | text, x_<i) for all k: (B, K); the prefix runs once."""
    B, N, K = codes.shape[0], codes.shape[1], ar.K
    ids = ar.generate_sequence(text, codes)  # (B, L)
    p = text.shape[1] + 2 + i  # position of code i
    pad = ar._prompt_pad(text_pad, ids.shape[1])  # (B, L) or None
    caches = ar.new_caches()
    h = ar.hidden(ids[:, :p], None if pad is None else pad[:, :p], caches=caches)[:, -1]  # (B, D)
    joint = _log_probs(ar, h)  # (B, K): log p(x_i = k | text, x_<i)
    if i == N - 1:
        return joint
    rows = torch.arange(B, device=codes.device).repeat_interleave(K)  # (B * K,) image of each candidate
    for c in caches:  # every candidate continues its image's prefix
        c.reorder(rows)
    cand = codes[:, i:].repeat_interleave(K, 0)  # (B * K, N - i)
    cand[:, 0] = torch.arange(K, device=codes.device).repeat(B)
    hs = ar.hidden(cand + ar.V, None if pad is None else pad.repeat_interleave(K, 0), caches=caches)
    rest = _log_probs(ar, hs[:, :-1]).gather(-1, cand[:, 1:, None]).squeeze(-1)  # (B * K, N - i - 1)
    return joint + rest.sum(1).view(B, K)


def _draw(logp: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One index per row of log-probabilities (B, K) -> (B,); temperature 0 is the argmax."""
    if temperature == 0:
        return logp.argmax(-1)
    return torch.multinomial((logp / temperature).softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def ar_edit_region(ar: UnifiedTransformer, text: Tensor, text_pad: Tensor | None, codes: Tensor,
                   region: Tensor, temperature: float = 1.0, sweeps: int = 2,
                   generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
    """Resample the codes at ``region`` (N,) bool under ``text``; codes (B, N) -> edited (B, N),
    identical to ``codes`` outside the region. ``use_cache``: key/value caches for the shared
    prefixes (the same draws as ``use_cache=False``, which re-encodes whole sequences)."""
    if region.dtype != torch.bool or region.shape != codes.shape[1:]:
        raise ValueError(f"ar_edit_region: region must be a bool mask of shape ({codes.shape[1]},); "
                         f"got {region.dtype} {tuple(region.shape)}")
    if sweeps < 0:
        raise ValueError(f"ar_edit_region: sweeps={sweeps}; expected >= 0")
    out = codes.clone()
    pos = region.nonzero().flatten().tolist()
    pad = None if text_pad is None else ar._prompt_pad(text_pad, text.shape[1] + 2 + codes.shape[1])
    start = text.shape[1] + 2
    caches, done = ar.new_caches() if use_cache else None, 0  # done: positions already cached
    for i in pos:  # ancestral start: x_i ~ p(. | text, x_<i), left to right
        ids = ar.generate_sequence(text, out)[:, : start + i]  # up to code i - 1
        step = ids[:, done:] if caches is not None else ids
        logits = ar.logits_step(step, ids, None if pad is None else pad[:, : start + i], None, caches)
        done = start + i
        out[:, i] = _draw(F.log_softmax(logits[:, ar.V : ar.V + ar.K].float(), -1), temperature, generator)
    for _ in range(sweeps):  # Gibbs: x_i ~ p(. | text, x_-i)
        for i in pos:
            logp = region_conditional(ar, text, text_pad, out, i, use_cache=use_cache)
            out[:, i] = _draw(logp, temperature, generator)
    return out


@torch.no_grad()
def repaint_ddim(diffusion: GaussianDiffusion, known: Tensor, keep: Tensor, cond: Tensor,
                 cond_pad: Tensor | None = None, steps: int = 50, guidance: float = 1.0,
                 guidance_interval: tuple[int, int] | None = None, clip: bool = True,
                 generator: torch.Generator | None = None) -> Tensor:
    """Inpaint: known images (B, C, H, W) in [-1, 1], keep (B or 1, 1 or C, H, W) bool True = known
    pixel -> samples (B, C, H, W) equal to ``known`` where ``keep`` (deterministic DDIM, eta 0).
    With ``keep`` all False this is ``GaussianDiffusion.ddim_sample`` with the same generator."""
    check_interval(guidance_interval, diffusion.T)
    if keep.dtype != torch.bool or keep.dim() != 4:
        raise ValueError(f"repaint_ddim: keep must be a 4-d bool mask; got {keep.dtype} {tuple(keep.shape)}")
    m = keep.to(known.dtype)
    x = torch.randn(known.shape, device=known.device, generator=generator)
    ts = ddim_timesteps(diffusion.T, steps).tolist()
    ab_all = diffusion.alpha_bar
    for n, t in enumerate(ts):
        ab = ab_all[t]
        ab_prev = ab_all[ts[n + 1]] if n + 1 < len(ts) else ab.new_tensor(1.0)
        g = guidance if in_interval(t, guidance_interval) else 1.0
        tt = torch.full((known.shape[0],), t, dtype=torch.long, device=known.device)  # (B,)
        eps = diffusion.guided_eps(x, tt, cond, cond_pad, g)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).clamp_min(0).sqrt() * eps
        if n + 1 < len(ts):  # known pixels: the original noised to the next timestep
            noise = torch.randn(known.shape, device=known.device, generator=generator)
            x = m * (ab_prev.sqrt() * known + (1 - ab_prev).sqrt() * noise) + (1 - m) * x
    return m * known + (1 - m) * x
