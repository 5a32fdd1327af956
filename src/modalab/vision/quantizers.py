"""Quantizers that turn encoder features into image tokens (chapter 5.2.3).

Three interchangeable modules with one contract: ``forward(z)`` takes channel-last features
``(..., dim)`` and returns ``(quantized, indices, aux)``:

- ``quantized`` ``(..., dim)``: what the decoder sees; gradients pass straight through to ``z``.
- ``indices`` ``(...)`` long, or ``None`` for the continuous quantizer.
- ``aux``: ``loss`` (add it to the training loss), ``commitment``, ``codebook``, and batch
  statistics ``usage`` (share of codes used) and ``perplexity`` (exp of the code entropy).

``VectorQuantizer`` is the VQ-VAE / VQGAN nearest-code quantizer with commitment weight beta,
optional EMA codebook updates (van den Oord et al. 2017, appendix; Laplace smoothing as in Sonnet),
k-means initialisation on the first training batch, dead-code restart, and optional l2-normalised
low-dimensional codes (ViT-VQGAN). ``FSQ`` is finite scalar quantisation (Mentzer et al. 2023);
``ContinuousQuantizer`` is the identity, for SEED / Emu style continuous tokens.

Under torch.distributed the EMA statistics are all-reduced and k-means / restarts are broadcast
from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def code_stats(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Share of the ``codebook_size`` codes used in ``indices`` and exp(entropy) of their counts."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return (counts > 0).double().mean().float(), entropy.exp().float()


class VectorQuantizer(nn.Module):
    """Nearest-code vector quantisation with a straight-through estimator.

    Args:
        num_codes: codebook size K.
        dim: feature size of the input ``z``.
        code_dim: size of the codes; when it differs from ``dim`` a linear projection maps
            ``dim -> code_dim`` before the lookup and back after (low-dimensional codes).
        beta: commitment weight on ``||z - sg(e)||^2`` (0.25 in VQ-VAE / VQGAN).
        use_ema: update codes as EMA cluster means instead of by the codebook loss gradient.
        decay: EMA decay of cluster sizes and sums (also of the usage counts in any mode).
        eps: Laplace smoothing of the EMA cluster sizes.
        kmeans_init: replace the codebook by k-means centroids of the first training batch.
        kmeans_iters: Lloyd iterations for that initialisation.
        dead_code_threshold: restart codes whose EMA usage (count per batch) falls below this by
            re-sampling encoder outputs of the current batch; 0 disables restarts.
        l2_normalize: compare l2-normalised features with l2-normalised codes (cosine lookup).
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        code_dim: int | None = None,
        beta: float = 0.25,
        use_ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: num_codes={num_codes}, dim={dim}; expected >= 1")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay={decay}; expected 0 <= decay < 1")
        self.codebook_size = num_codes
        self.dim = dim
        self.code_dim = code_dim or dim
        self.beta, self.use_ema, self.decay, self.eps = beta, use_ema, decay, eps
        self.kmeans_iters, self.dead_code_threshold = kmeans_iters, dead_code_threshold
        self.l2_normalize = l2_normalize
        project = self.code_dim != dim
        self.project_in = nn.Linear(dim, self.code_dim) if project else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, dim) if project else nn.Identity()

        embed = torch.randn(num_codes, self.code_dim)
        if l2_normalize:
            embed = F.normalize(embed, dim=-1)
        if use_ema:
            self.register_buffer("embed", embed)
        else:
            self.embed = nn.Parameter(embed)
        # EMA of per-batch code counts (usage) and, for EMA codebooks, of per-code feature sums;
        # initialised so that embed == embed_avg / cluster_size before any update.
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    # ------------------------------------------------------------------ codebook maintenance
    def _norm(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.l2_normalize else x

    def _nearest(self, x: Tensor, embed: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``x`` (N, C) among ``embed`` (K, C)."""
        with torch.autocast(x.device.type, enabled=False):  # no bf16 distances under autocast
            x = x.to(embed.dtype)
            dist2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
        return dist2.argmin(dim=1)

    @torch.no_grad()
    def _kmeans_init(self, x: Tensor) -> None:
        """Lloyd's k-means on the flattened batch ``x`` (N, C); sets codes and EMA statistics."""
        n, k = x.shape[0], self.codebook_size
        pick = torch.randperm(n, device=x.device)[:k] if n >= k else torch.randint(0, n, (k,))
        centroids = x[pick.to(x.device)].clone()
        counts = torch.zeros(k, device=x.device)
        for _ in range(max(self.kmeans_iters, 1)):
            idx = self._nearest(x, centroids)
            counts = torch.bincount(idx, minlength=k).to(x.dtype)
            sums = torch.zeros_like(centroids).index_add_(0, idx, x)
            filled = counts > 0  # empty clusters keep their centroid
            centroids[filled] = self._norm(sums[filled] / counts[filled, None])
        if _dist_on():
            dist.broadcast(centroids, 0)
            dist.broadcast(counts, 0)
        self.embed.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(centroids * self._smoothed_size()[:, None])
        self.initted.fill_(True)

    def _smoothed_size(self) -> Tensor:
        """Laplace-smoothed cluster sizes ``(c_k + eps) / (n + K eps) * n`` with n = sum c_k."""
        n = self.cluster_size.sum()
        return (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n

    @torch.no_grad()
    def _update_stats(self, x: Tensor, indices: Tensor) -> None:
        """EMA of code counts (always) and, with ``use_ema``, of cluster sums -> new codes."""
        counts = torch.bincount(indices, minlength=self.codebook_size).to(x.dtype)
        sums = torch.zeros_like(self.embed_avg).index_add_(0, indices, x)
        if _dist_on():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.use_ema:
            self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            self.embed.copy_(self._norm(self.embed_avg / self._smoothed_size()[:, None]))

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> None:
        """Replace codes with EMA usage below the threshold by random rows of ``x`` (N, C)."""
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        samples = x[torch.randint(0, x.shape[0], (n_dead,), device=x.device)].clone()
        if _dist_on():
            dist.broadcast(samples, 0)
        self.embed.data[dead] = samples
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_avg[dead] = samples * self.dead_code_threshold

    # ------------------------------------------------------------------ forward
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantise ``z`` (..., dim) -> quantized (..., dim), indices (...) long, aux dict."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer: input last dim {z.shape[-1]}, expected {self.dim}")
        lead = z.shape[:-1]
        x = self.project_in(z).reshape(-1, self.code_dim)  # (N, C)
        x = self._norm(x.to(self.embed_avg.dtype))  # distances and statistics at full precision
        if self.training and not bool(self.initted):
            self._kmeans_init(x.detach())
        embed = self._norm(self.embed)  # (K, C)
        indices = self._nearest(x.detach(), embed.detach())  # (N,)
        q = embed[indices]  # (N, C)

        commitment = F.mse_loss(x, q.detach())
        codebook = x.new_zeros(()) if self.use_ema else F.mse_loss(q, x.detach())
        if self.training:
            self._update_stats(x.detach(), indices)
            if self.dead_code_threshold > 0:
                self._restart_dead_codes(x.detach())

        q = q.detach() + (x - x.detach())  # straight-through: forward exactly q, grad identity
        quantized = self.project_out(q.reshape(*lead, self.code_dim))  # (..., dim)
        usage, perplexity = code_stats(indices, self.codebook_size)
        aux = {
            "loss": codebook + self.beta * commitment,
            "commitment": commitment.detach(),
            "codebook": codebook.detach(),
            "usage": usage,
            "perplexity": perplexity,
        }
        return quantized, indices.reshape(lead), aux

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices (...) long -> decoder input (..., dim)."""
        return self.project_out(self._norm(self.embed)[indices])


class FSQ(nn.Module):
    """Finite scalar quantisation: each of ``len(levels)`` channels rounds to ``levels[i]`` values.

    The implicit codebook has ``prod(levels)`` entries (e.g. [8, 5, 5, 5] -> 1000). A channel is
    bounded by ``tanh`` to ``(L - 1) / 2`` (shifted by 1/2 for even L), rounded with a
    straight-through gradient, and scaled to [-1, 1]. ``dim`` != ``len(levels)`` adds projections.
    """

    def __init__(self, levels: list[int], dim: int | None = None, eps: float = 1e-3) -> None:
        super().__init__()
        if not levels or any(int(l) < 2 for l in levels):
            raise ValueError(f"FSQ: levels={levels}; expected a non-empty list of ints >= 2")
        self.levels = [int(l) for l in levels]
        self.code_dim = len(self.levels)
        self.dim = dim or self.code_dim
        self.eps = eps
        self.codebook_size = math.prod(self.levels)
        lv = torch.tensor(self.levels, dtype=torch.float64)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1], dtype=torch.long), 0)
        self.register_buffer("_levels", lv.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_width", (lv // 2).float(), persistent=False)
        project = self.dim != self.code_dim
        self.project_in = nn.Linear(self.dim, self.code_dim) if project else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, self.dim) if project else nn.Identity()

    def bound(self, z: Tensor) -> Tensor:
        """Squash ``z`` (..., d) so that rounding yields exactly ``levels[i]`` integer values."""
        half_l = (self._levels - 1) * (1 - self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.tan(offset / half_l)  # as in the reference code; defined for L = 2 too
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: Tensor) -> Tensor:
        """Bounded, rounded (straight-through) codes in [-1, 1], (..., d)."""
        b = self.bound(z)
        rounded = b + (torch.round(b) - b).detach()
        return rounded / self._half_width

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes (..., d) on the grid -> indices (...) long in [0, prod(levels))."""
        digits = torch.round(codes * self._half_width + self._half_width).long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_grid(self, indices: Tensor) -> Tensor:
        """Indices (...) -> grid codes (..., d) in [-1, 1] (before the output projection)."""
        digits = (indices[..., None] // self._basis) % self._levels.long()
        return (digits.float() - self._half_width) / self._half_width

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices (...) long -> decoder input (..., dim)."""
        return self.project_out(self.indices_to_grid(indices))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantise ``z`` (..., dim) -> quantized (..., dim), indices (...) long, aux dict."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ: input last dim {z.shape[-1]}, expected {self.dim}")
        h = self.project_in(z)
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()  # the grid and index arithmetic need float32
        codes = self.quantize(h)  # (..., d)
        indices = self.codes_to_indices(codes.detach())
        usage, perplexity = code_stats(indices, self.codebook_size)
        zero = z.new_zeros(())
        aux = {"loss": zero, "commitment": zero, "codebook": zero,
               "usage": usage, "perplexity": perplexity}
        return self.project_out(codes), indices, aux


class ContinuousQuantizer(nn.Module):
    """No quantisation: continuous tokens (SEED / LaVIT / Emu style); indices are ``None``.

    ``kl_weight == 0``: the identity, the encoder latents go straight to the decoder.
    ``kl_weight > 0``: a VAE bottleneck with a learned diagonal variance. ``z`` is the posterior
    mean mu, a linear head gives log sigma^2 (initialised to -4: sigma ~ 0.14), training decodes
    ``mu + sigma * eps`` (reparameterised) and evaluation decodes ``mu``. ``aux["loss"]`` is
    ``kl_weight`` times KL(N(mu, sigma^2) || N(0, 1)) averaged over latent elements;
    ``aux["kl_bits"]`` is that KL summed over the channels, in bits per token (the rate).
    """

    codebook_size = None

    def __init__(self, dim: int, kl_weight: float = 0.0) -> None:
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"ContinuousQuantizer: kl_weight={kl_weight}; expected >= 0")
        self.dim, self.kl_weight = dim, kl_weight
        self.to_logvar: nn.Linear | None = None
        if kl_weight > 0:
            self.to_logvar = nn.Linear(dim, dim)
            nn.init.zeros_(self.to_logvar.weight)
            nn.init.constant_(self.to_logvar.bias, -4.0)

    def kl_nats(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) per element, (..., dim)."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)

    def forward(self, z: Tensor) -> tuple[Tensor, None, dict[str, Tensor]]:
        """Continuous tokens from ``z`` (..., dim); see the class docstring for the KL option."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"ContinuousQuantizer: input last dim {z.shape[-1]}, expected {self.dim}")
        zero = z.new_zeros(())
        if self.to_logvar is None:
            return z, None, {"loss": zero, "commitment": zero, "codebook": zero}
        logvar = self.to_logvar(z).clamp(-30.0, 20.0)  # (..., dim)
        kl = self.kl_nats(z, logvar)  # (..., dim)
        out = z + torch.randn_like(z) * (0.5 * logvar).exp() if self.training else z
        aux = {"loss": self.kl_weight * kl.mean(), "commitment": zero, "codebook": zero,
               "kl_bits": (kl.sum(-1) / math.log(2)).mean().detach()}
        return out, None, aux

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Continuous tokens are their own codes: identity on (..., dim)."""
        return indices


# FSQ levels per (approximate) codebook size, from Mentzer et al. 2023, table 1 (64 is ours).
FSQ_LEVELS: dict[int, list[int]] = {
    64: [4, 4, 4], 256: [8, 6, 5], 1024: [8, 5, 5, 5], 4096: [7, 5, 5, 5, 5],
    16384: [8, 8, 8, 6, 5], 65536: [8, 8, 8, 5, 5, 5],
}


def build_quantizer(
    kind: str,
    latent_dim: int,
    codebook_size: int = 256,
    fsq_levels: list[int] | None = None,
    rvq_levels: int = 4,
    **vq_kwargs,
) -> nn.Module:
    """``vq`` | ``rvq`` | ``fsq`` | ``continuous`` quantizer for ``latent_dim`` features.

    ``rvq`` stacks ``rvq_levels`` VectorQuantizers on the residuals (``vision/residual_vq.py``);
    its indices carry a trailing level axis.
    """
    if kind == "rvq":
        from modalab.vision.residual_vq import ResidualVQ

        if rvq_levels < 1:
            raise ValueError(f"build_quantizer: rvq_levels={rvq_levels}; expected >= 1")
        return ResidualVQ([VectorQuantizer(codebook_size, latent_dim, **vq_kwargs) for _ in range(rvq_levels)])
    if kind == "vq":
        return VectorQuantizer(codebook_size, latent_dim, **vq_kwargs)
    if kind == "fsq":
        levels = fsq_levels or FSQ_LEVELS.get(codebook_size)
        if levels is None:
            raise ValueError(
                f"build_quantizer: no default FSQ levels for codebook_size={codebook_size}; "
                f"pass fsq_levels or use one of {sorted(FSQ_LEVELS)}"
            )
        return FSQ(levels, dim=latent_dim)
    if kind == "continuous":
        return ContinuousQuantizer(latent_dim, **vq_kwargs)  # kl_weight only
    raise ValueError(f"build_quantizer: kind='{kind}'; expected 'vq', 'rvq', 'fsq' or 'continuous'")
