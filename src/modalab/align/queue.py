"""Cross-batch negative queue (MoCo style) and the loss that uses it.

``NegativeQueue`` is a preallocated (size, D) ring buffer with FIFO order and wrap-around; each
row can carry a sample id and a label so that a later batch can exclude its own earlier copies
(self-positives) and same-label rows. Being an ``nn.Module`` whose state lives in buffers, it is
saved and restored with the ordinary ``state_dict`` / ``load_state_dict`` and moved with ``.to()``.

The training step uses it in this order, so that a batch never sees its own embeddings as
negatives::

    q_mask = image_queue.exclusion_mask(ids=batch_ids, labels=labels)        # (B, Q)
    loss = queue_info_nce(img, txt, scale, text_queue.features(), image_queue.features(),
                          queue_mask=q_mask)
    ... backward, optimizer step ...
    image_queue.enqueue(img_keys, ids=batch_ids, labels=labels)   # keys: img.detach() or EMA
    text_queue.enqueue(txt_keys, ids=batch_ids, labels=labels)
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import Tensor, nn

from modalab.align.losses import NEG_INF, _check_pair, _exclusion
from modalab.constants import acc_dtype


class NegativeQueue(nn.Module):
    """Ring buffer of the last ``size`` embeddings.

    Args:
        size: capacity in rows (MoCo: 65,536); dim: embedding width D;
        dtype: storage dtype (float32 default; bfloat16 halves memory).
    Buffers: ``queue`` (size, D), ``ids`` (size,) long (-1 = unknown), ``labels`` (size,) long
    (-1 = unknown), ``ptr`` (next write slot) and ``count`` (rows filled so far, <= size).
    """

    def __init__(self, size: int = 65536, dim: int = 256, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"NegativeQueue: size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("queue", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.count)

    @torch.no_grad()
    def enqueue(self, features: Tensor, ids: Tensor | None = None, labels: Tensor | None = None) -> None:
        """Append (n, D) rows (detached), overwriting the oldest; keeps the last ``size`` if n > size."""
        if features.dim() != 2 or features.shape[1] != self.queue.shape[1]:
            raise ValueError(
                f"NegativeQueue.enqueue: expected (n, {self.queue.shape[1]}) features, got "
                f"{tuple(features.shape)}"
            )
        n = features.shape[0]
        ids = torch.full((n,), -1, dtype=torch.long) if ids is None else ids.long()
        labels = torch.full((n,), -1, dtype=torch.long) if labels is None else labels.long()
        if ids.shape != (n,) or labels.shape != (n,):
            raise ValueError(f"NegativeQueue.enqueue: ids and labels must be ({n},)")
        if n > self.size:
            features, ids, labels, n = features[-self.size :], ids[-self.size :], labels[-self.size :], self.size
        start = int(self.ptr)
        first = min(n, self.size - start)  # rows before the wrap
        for buf, src in ((self.queue, features), (self.ids, ids), (self.labels, labels)):
            src = src.to(device=buf.device, dtype=buf.dtype)
            buf[start : start + first] = src[:first]
            buf[: n - first] = src[first:]
        self.ptr.fill_((start + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def features(self) -> Tensor:
        """(Q, D) the filled rows (a view, no copy; storage order, not FIFO order)."""
        return self.queue[: int(self.count)]

    def ordered(self) -> Tensor:
        """(Q, D) the filled rows oldest first (a copy)."""
        c, p = int(self.count), int(self.ptr)
        if c < self.size:
            return self.queue[:c].clone()
        return torch.cat([self.queue[p:], self.queue[:p]])

    def exclusion_mask(self, ids: Tensor | None = None, labels: Tensor | None = None) -> Tensor | None:
        """(B, Q) bool, True where a queue row is the same sample (same id) or, if ``labels`` is
        given, has the same label as the anchor; rows with id/label -1 never match. None if both
        are None."""
        if ids is None and labels is None:
            return None
        q = int(self.count)
        out = None
        for own, stored in ((ids, self.ids[:q]), (labels, self.labels[:q])):
            if own is None:
                continue
            m = (own.long().to(stored.device)[:, None] == stored[None, :]) & (stored[None, :] >= 0)
            out = m if out is None else out | m
        return out

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, replacement: bool = False) -> Tensor:
        """(min(n, Q), D) rows drawn uniformly, without replacement unless ``replacement`` (faster:
        no permutation of the whole queue; then n rows even if Q < n)."""
        q = int(self.count)
        if q == 0:
            return self.queue[:0]
        dev = self.queue.device
        if replacement:
            idx = torch.randint(0, q, (n,), generator=generator, device=dev)
        else:
            idx = torch.randperm(q, generator=generator, device=dev)[: min(n, q)]
        return self.queue.index_select(0, idx)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "queue"
        if key in state_dict and state_dict[key].shape != self.queue.shape:
            self.queue = torch.empty_like(state_dict[key], device=self.queue.device)
            n = state_dict[key].shape[0]
            self.ids = torch.empty(n, dtype=torch.long, device=self.queue.device)
            self.labels = torch.empty(n, dtype=torch.long, device=self.queue.device)
            self.size = n
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MomentumEncoder(nn.Module):
    """An EMA copy of an encoder (MoCo key encoder): ``k <- m * k + (1 - m) * q`` per parameter,
    buffers copied. Its forward runs without gradient.

    Args:
        encoder: the online (query) encoder; momentum: m, default 0.999.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MomentumEncoder: momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.encoder = copy.deepcopy(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """One EMA step towards ``online`` (same architecture); call after each optimizer step."""
        mine = list(self.encoder.parameters())
        theirs = [p.detach() for p in online.parameters()]
        if len(mine) != len(theirs):
            raise ValueError("MomentumEncoder.update: online encoder has a different architecture")
        torch._foreach_lerp_(mine, theirs, 1.0 - self.momentum)
        for b, src in zip(self.encoder.buffers(), online.buffers()):
            b.copy_(src)

    @torch.no_grad()
    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.encoder(*args, **kwargs)


def queue_info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    queue_text: Tensor | None,
    queue_image: Tensor | None,
    *,
    mask: Tensor | None = None,
    queue_mask: Tensor | None = None,
    image_keys: Tensor | None = None,
    text_keys: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE with the queues as extra negatives.

    Without keys, image row i is a softmax over ``[image_i . text_j for j in batch] + [image_i . q
    for q in queue_text]``; text row i likewise over the batch images and ``queue_image``.

    With keys (MoCo / ALBEF: ``image_keys`` and ``text_keys`` (B, D) from the momentum encoder,
    detached), every candidate of a row comes from the key encoder, the positive included: image
    row i is a softmax over ``[image_i . text_keys_j] + [image_i . q for q in queue_text]``, text
    row i over ``[text_i . image_keys_j] + [text_i . q for q in queue_image]``. Positive and queue
    negatives then come from one slowly moving encoder; mixing an online positive (which moves
    with the anchor) with queued negatives of older models lets both towers lower the loss by
    drifting away from the queue together, which collapses them.

    Masked pairs are dropped (a row left with only its positive gives 0).

    Args:
        image_emb, text_emb: (B, D) online (query) embeddings; logit_scale: scalar;
        queue_text: (Qt, D) text negatives or None; queue_image: (Qi, D) image negatives or None;
        mask: (B, B) bool in-batch false negatives; queue_mask: (B, Q) bool, True = exclude queue
            row for anchor i (both queues, so it needs Qt == Qi == Q);
        image_keys, text_keys: (B, D) momentum-encoder keys of the batch, both or neither.
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check_pair("queue_info_nce", image_emb, text_emb)
    if (image_keys is None) != (text_keys is None):
        raise ValueError("queue_info_nce: pass image_keys and text_keys together, or neither")
    dt = acc_dtype(image_emb, text_emb)
    img, txt = image_emb.to(dt), text_emb.to(dt)
    b = img.shape[0]
    if image_keys is None or text_keys is None:
        batch = logit_scale * (img @ txt.T)  # (B, B) image rows; its transpose gives text rows
        batch_t = batch.T
    else:
        _check_pair("queue_info_nce keys", image_keys, image_emb)
        _check_pair("queue_info_nce keys", text_keys, text_emb)
        batch = logit_scale * (img @ text_keys.detach().to(dt).T)  # (B, B) image i . text key j
        batch_t = logit_scale * (txt @ image_keys.detach().to(dt).T)  # (B, B) text i . image key j
    excl = _exclusion("queue_info_nce", mask, b, batch.device)
    if excl is not None:
        batch = batch.masked_fill(excl, NEG_INF)
        batch_t = batch_t.masked_fill(excl.T, NEG_INF)

    def rows(in_batch: Tensor, anchors: Tensor, queue: Tensor | None) -> Tensor:
        parts = [in_batch]
        if queue is not None and queue.shape[0] > 0:
            extra = logit_scale * (anchors @ queue.to(dt).T)  # (B, Q)
            if queue_mask is not None:
                if queue_mask.shape != extra.shape:
                    raise ValueError(
                        f"queue_info_nce: queue_mask must be {tuple(extra.shape)}, got "
                        f"{tuple(queue_mask.shape)}"
                    )
                extra = extra.masked_fill(queue_mask, NEG_INF)
            parts.append(extra)
        logits = torch.cat(parts, dim=1)  # (B, B + Q)
        return (torch.logsumexp(logits, dim=1) - in_batch.diagonal()).mean()

    return 0.5 * (rows(batch, img, queue_text) + rows(batch_t, txt, queue_image))


def sample_ids(keys: list[str] | list[int]) -> Tensor:
    """Stable non-negative int64 ids for string keys (sample ids, or captions to find identical
    ones): the first 63 bits of blake2b. (n,) long."""
    out = []
    for k in keys:
        if isinstance(k, int):
            out.append(k)
        else:
            digest = hashlib.blake2b(str(k).encode("utf-8"), digest_size=8).digest()
            out.append(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.tensor(out, dtype=torch.long)
