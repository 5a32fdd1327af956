"""Region-phrase inputs of the contrastive task: the regional level of ``multi_granularity`` on
batches that carry boxes (``data.source: digit_scenes``).

One vision pass gives both the global image embedding (the tower's own pool) and the region
features (``align/regions.pool_regions``: the mean of the patch tokens whose centres fall in a
digit's box), projected by the same ``image_proj`` and normalised. The batch's distinct phrases
("a small red 3") go through the text tower. The loss contrasts each valid region with its phrase;
regions that share a phrase are each other's false negatives (``multi_granularity_terms``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.align.regions import pool_regions
from modalab.data.sample import Batch


def wants_regions(objective: Any) -> bool:
    """True for an objective with a regional level of nonzero weight (``multi_granularity``)."""
    weights = getattr(objective, "weights", None)
    return getattr(objective, "takes_regions", False) and weights is not None and weights[1] > 0


def embed_with_regions(model: Any, batch: Batch, needs_tokens: bool) -> dict[str, Tensor]:
    """Embeddings of a batch with ``batch.regions``: ``image_emb`` / ``text_emb`` (B, E), and the
    regional inputs ``region_emb`` (M, E) of the M valid boxes (row by row), ``phrase_emb`` (P, E),
    ``region_index`` = arange(M) and ``phrase_index`` (M,); with ``needs_tokens`` also the token
    embeddings of ``model(..., return_tokens=True)``. ``regions_empty`` counts real boxes that
    hold no patch centre (left out of the loss)."""
    enc = model.image_encoder
    if getattr(enc, "patch_dropout", None) is not None and model.training:
        raise ValueError("region-phrase contrast needs every patch token: set model.vision.patch_dropout: 0")
    reg = batch.regions
    if needs_tokens:
        out = dict(model(batch.images, batch.tokens, return_tokens=True))
        tok = enc.forward_tokens(batch.images)  # second pass only when FILIP is on as well
    else:
        tok = enc.forward_tokens(batch.images)  # (B, 1 + N, Wi)
        out = {"image_emb": F.normalize(model.image_proj(enc.pool_tokens(tok)), dim=-1),
               "text_emb": model.encode_text(batch.tokens)}
    p = enc.patch_embed.patch_size
    grid = (batch.images.shape[-2] // p, batch.images.shape[-1] // p)
    feats, valid = pool_regions(tok[:, 1:], reg.boxes, reg.box_mask, grid, p)  # (B, R, Wi), (B, R)
    out["region_emb"] = F.normalize(model.image_proj(feats[valid]), dim=-1)  # (M, E)
    out["phrase_emb"] = model.encode_text(reg.phrase_tokens)  # (P, E)
    out["phrase_index"] = reg.phrase_index[valid]  # (M,)
    out["region_index"] = torch.arange(out["phrase_index"].shape[0], device=tok.device)
    out["regions_empty"] = (reg.box_mask & ~valid).sum()
    return out


def source_has_regions(dataset: Any) -> bool:
    """True when a map-style dataset's first sample carries ``meta['boxes']`` and ``['phrases']``."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return False
    meta = dataset[0].meta
    return "boxes" in meta and "phrases" in meta


def region_loss_inputs(emb: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The regional keywords of ``multi_granularity`` from :func:`embed_with_regions`'s output
    (none when no box of the batch holds a patch), and the counts the step logs."""
    m = int(emb["region_index"].shape[0])
    logs = {"regions": float(m), "regions_empty": float(emb["regions_empty"])}
    if m == 0:
        return {}, logs
    return {k: emb[k] for k in ("region_emb", "phrase_emb", "region_index", "phrase_index")}, logs
