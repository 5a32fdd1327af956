"""NaViT "patch n' pack": images of different sizes share sequences (chapter 5.2.3).

Each image becomes ``num_prefix_tokens`` prefix slots (filled by the encoder with its class token)
followed by its patch tokens; whole images are placed into sequences of length ``max_seq_len`` by
first-fit-decreasing greedy packing, and the rest of each sequence is padding. Attention is block
diagonal: a token attends only to tokens of its own image (padding attends only to padding, so
no attention row is empty). Optional token dropping keeps a random subset of each image's patches
(a fixed rate, or a function of the image's grid).

:class:`PackedBatch` holds the layout; :func:`pool_packed` turns encoder outputs back into one
vector per image (class token, masked mean, or :class:`AttentionPool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from modalab.layers import MultiHeadAttention, rename_on_load, split_on_load
from modalab.vision.masking import keep_indices
from modalab.vision.pos_embed import grid_positions
from modalab.vision.resolution import as_tensor, patchify

DropRate = float | Callable[[tuple[int, int]], float] | None


@dataclass
class PackedBatch:
    """Images packed into S sequences of length L.

    patches (S, L, p*p*C): patch values in (p, p, C) order, zero at prefix and padding slots;
    rows, cols (S, L) int64: 0-based patch positions (0 at prefix/padding);
    image_ids (S, L) int64: index of the image owning each slot, -1 at padding;
    prefix_mask (S, L) bool: True at prefix (class token) slots;
    grids: (rows, cols) of each image before token dropping; seq_index, start (num_images,):
    where each image's segment begins; slots (S, M): image ids in each sequence, -1 padded.
    """

    patches: Tensor
    rows: Tensor
    cols: Tensor
    image_ids: Tensor
    prefix_mask: Tensor
    grids: list[tuple[int, int]]
    seq_index: Tensor
    start: Tensor
    slots: Tensor
    patch_size: int
    num_prefix_tokens: int

    @property
    def num_images(self) -> int:
        return len(self.grids)

    @property
    def valid(self) -> Tensor:
        """(S, L) bool: True at real (prefix or patch) tokens."""
        return self.image_ids >= 0

    def fill(self) -> float:
        """Share of non-padding slots."""
        return float(self.valid.float().mean())

    def attn_mask(self) -> Tensor:
        """(S, 1, L, L) bool SDPA mask, True where query and key belong to the same image."""
        ids = self.image_ids
        return (ids[:, :, None] == ids[:, None, :])[:, None]

    def to(self, device) -> "PackedBatch":
        mv = lambda t: t.to(device)  # noqa: E731
        return PackedBatch(
            mv(self.patches), mv(self.rows), mv(self.cols), mv(self.image_ids), mv(self.prefix_mask),
            self.grids, mv(self.seq_index), mv(self.start), mv(self.slots), self.patch_size,
            self.num_prefix_tokens,
        )


def greedy_pack(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """First-fit decreasing: place items (longest first) into the first sequence with room.

    Returns groups of item indices, each with total length <= ``max_seq_len``.
    """
    too_long = [(i, n) for i, n in enumerate(lengths) if n > max_seq_len]
    if too_long:
        i, n = too_long[0]
        raise ValueError(
            f"greedy_pack: item {i} has {n} tokens, more than max_seq_len={max_seq_len}; raise "
            f"max_seq_len, shrink the image, or drop tokens"
        )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for g, r in enumerate(room):
            if lengths[i] <= r:
                groups[g].append(i)
                room[g] -= lengths[i]
                break
        else:
            groups.append([i])
            room.append(max_seq_len - lengths[i])
    return [sorted(g) for g in groups]


def pack_images(
    images: Sequence,
    patch_size: int,
    max_seq_len: int | None = None,
    num_prefix_tokens: int = 1,
    drop: DropRate = None,
    generator: torch.Generator | None = None,
    groups: list[list[int]] | None = None,
) -> PackedBatch:
    """Patchify images of any sizes (each H, W a multiple of ``patch_size``) and pack them.

    Args:
        images: (C, H, W) tensors or PIL images, same C.
        max_seq_len: sequence length L; None = the longest group's length.
        drop: token dropping rate, or a function grid -> rate; kept patches stay in order.
        groups: image indices per sequence; None = :func:`greedy_pack` into ``max_seq_len``.
    """
    if not images:
        raise ValueError("pack_images: no images")
    flats, rows, cols, grids = [], [], [], []
    for i, img in enumerate(images):
        flat, grid = patchify(as_tensor(img), patch_size)  # (n, p*p*C)
        r, c = grid_positions(grid)
        rate = drop(grid) if callable(drop) else (drop or 0.0)
        if rate > 0:
            keep = keep_indices(1, flat.shape[0], rate, generator)[0]  # (K,)
            flat, r, c = flat[keep], r[keep], c[keep]
        if flats and flat.shape[1] != flats[0].shape[1]:
            raise ValueError(f"pack_images: image {i} has {flat.shape[1] // patch_size**2} channels, "
                             f"image 0 has {flats[0].shape[1] // patch_size**2}")
        flats.append(flat)
        rows.append(r)
        cols.append(c)
        grids.append(grid)
    lengths = [num_prefix_tokens + f.shape[0] for f in flats]
    if groups is None:
        if max_seq_len is None:
            raise ValueError("pack_images: give max_seq_len (or explicit groups)")
        groups = greedy_pack(lengths, max_seq_len)
    total = [sum(lengths[i] for i in g) for g in groups]
    seq_len = max_seq_len if max_seq_len is not None else max(total)
    if max(total) > seq_len:
        raise ValueError(
            f"pack_images: a group needs {max(total)} tokens, more than max_seq_len={seq_len}"
        )
    s, dim = len(groups), flats[0].shape[1]
    patches = flats[0].new_zeros(s, seq_len, dim)
    prow = torch.zeros(s, seq_len, dtype=torch.long)
    pcol = torch.zeros(s, seq_len, dtype=torch.long)
    ids = torch.full((s, seq_len), -1, dtype=torch.long)
    prefix = torch.zeros(s, seq_len, dtype=torch.bool)
    seq_index = torch.zeros(len(images), dtype=torch.long)
    start = torch.zeros(len(images), dtype=torch.long)
    slots = torch.full((s, max(len(g) for g in groups)), -1, dtype=torch.long)
    for si, g in enumerate(groups):
        pos = 0
        for m, i in enumerate(g):
            n, a = flats[i].shape[0], pos + num_prefix_tokens
            seq_index[i], start[i], slots[si, m] = si, pos, i
            ids[si, pos : a + n] = i
            prefix[si, pos:a] = True
            patches[si, a : a + n] = flats[i]
            prow[si, a : a + n] = rows[i]
            pcol[si, a : a + n] = cols[i]
            pos = a + n
    return PackedBatch(patches, prow, pcol, ids, prefix, grids, seq_index, start, slots, patch_size,
                       num_prefix_tokens)


class AttentionPool(nn.Module):
    """Multi-head attention pooling with one learned query (SigLIP's MAP head, without the MLP).

    forward(tokens (B, N, D), mask (B, M, N) bool or None) -> (B, M, D): slot m pools the tokens
    where mask[:, m] is True (M = 1 and all tokens when mask is None). Every slot needs a key.

    The attention is ``layers.MultiHeadAttention``; its projections start from the values the
    former ``q`` / fused ``kv`` / ``proj`` linears drew (same order, same generator), and
    checkpoints with those names load (``kv`` is split into keys and values).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"AttentionPool: width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        dev = torch.empty(0).device  # the ambient default device (``meta`` while a loader builds)
        q, k, v, proj = (nn.utils.skip_init(nn.Linear, dim, dim, device=dev) for _ in range(4))
        with torch.no_grad():
            q.reset_parameters()
            kv = nn.Linear(dim, 2 * dim, device=dev)  # the former fused kv: one (2D, D) draw
            for lin, w, b in zip((k, v), kv.weight.chunk(2), kv.bias.chunk(2)):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            proj.reset_parameters()
        self.attn = MultiHeadAttention(heads, q, k, v, proj)
        rename_on_load(self, {"q.": "attn.q_proj.", "proj.": "attn.out_proj."})
        split_on_load(self, {f"kv.{n}": (f"attn.k_proj.{n}", f"attn.v_proj.{n}") for n in ("weight", "bias")})

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        b, _, d = tokens.shape
        m = 1 if mask is None else mask.shape[1]
        query = self.query.expand(b, m, d)  # (B, M, D)
        return self.attn(query, tokens, attn_mask=mask)  # (B, M, D)


def pool_packed(
    tokens: Tensor, batch: PackedBatch, mode: str = "cls", attn_pool: AttentionPool | None = None
) -> Tensor:
    """One vector per image from packed encoder outputs tokens (S, L, D) -> (num_images, D).

    ``cls``: the image's first prefix token; ``mean``: mean of its patch tokens (prefix excluded);
    ``attn``: ``attn_pool`` over its patch tokens.
    """
    if mode == "cls":
        if batch.num_prefix_tokens < 1:
            raise ValueError("pool_packed: mode 'cls' needs num_prefix_tokens >= 1")
        return tokens[batch.seq_index, batch.start]  # (num_images, D)
    patch = batch.valid & ~batch.prefix_mask  # (S, L)
    if mode == "mean":
        ids = batch.image_ids[patch]  # (T,)
        sums = tokens.new_zeros(batch.num_images, tokens.shape[-1]).index_add_(0, ids, tokens[patch])
        counts = torch.bincount(ids, minlength=batch.num_images).clamp_min(1)
        return sums / counts[:, None].to(tokens.dtype)
    if mode == "attn":
        if attn_pool is None:
            raise ValueError("pool_packed: mode 'attn' needs an AttentionPool")
        slots = batch.slots.to(tokens.device)  # (S, M)
        mask = (batch.image_ids[:, None, :] == slots[:, :, None]) & patch[:, None, :]  # (S, M, L)
        mask[..., 0] |= slots < 0  # empty slots attend to slot 0 (their output is discarded)
        out = attn_pool(tokens, mask)  # (S, M, D)
        result = tokens.new_zeros(batch.num_images, tokens.shape[-1])
        result[slots[slots >= 0]] = out[slots >= 0]
        return result
    raise ValueError(f"pool_packed: unknown mode '{mode}'; expected 'cls', 'mean' or 'attn'")
