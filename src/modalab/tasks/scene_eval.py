"""What the contrastive task adds on compositional scenes (``data.source: digit_scenes``):
hard-negative caption tokens for the batch, the compositional probe on the held-out scenes (and on
the held-out-composition scenes), and a grid of example images with their captions for the report.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from modalab.eval.composition import composition_probe
from modalab.eval.retrieval import retrieval_metrics


def negative_tokens(samples: list, tokenizer: Callable[[list[str]], Tensor]) -> Tensor:
    """(B, K, L) tokens of each sample's ``meta["negatives"]`` captions (K equal for all)."""
    negs = [s.meta.get("negatives") for s in samples]
    if any(not n for n in negs) or len({len(n) for n in negs}) != 1:
        raise ValueError("this loss adds hard-negative captions, but the samples carry none (or differing "
                         "numbers) in meta['negatives']; use data.source=digit_scenes")
    b, k = len(negs), len(negs[0])
    tokens = tokenizer([c for n in negs for c in n])  # (B*K, L)
    return tokens.reshape(b, k, -1)  # (B, K, L)


def _held_out(dataset: Dataset) -> tuple[Tensor, list[Any]]:
    samples = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if any("scene" not in s.meta for s in samples):
        raise ValueError("eval.probe=[composition] needs scenes in the held-out samples (data.source=digit_scenes)")
    return torch.stack([s.media for s in samples]), [s.meta["scene"] for s in samples]


def scene_results(task: Any, final: bool, split: str = "test") -> dict[str, Any]:
    """Probe accuracies (``probe/<type>``) on the ``split`` scenes and, on test with held-out
    compositions, retrieval and probe on the novel-composition scenes (``novel/...``,
    ``novel_probe/...``). On val (the held-out training scenes) only the probe runs: the novel set
    is a test set."""
    model, cfg = task.model, task.eval_cfg
    dev = model.logit_scale.device
    enc_img = lambda x: model.encode_image(x.to(dev)).float().cpu()  # noqa: E731
    enc_txt = lambda t: model.encode_text(task.tokenizer(t).to(dev)).float().cpu()  # noqa: E731
    seed = task.recipe.run.seed
    res: dict[str, Any] = {}
    model.eval()
    sets = [("", task.data.val if split == "val" else task.data.test)]
    novel = task.data.extras.get("novel_test") if split == "test" else None
    if novel is not None:
        sets.append(("novel_", novel))
        image_emb, text_emb, _, tokens = task.embed(novel)
        res.update({f"novel/{k}": v
                    for k, v in retrieval_metrics(image_emb, text_emb, None, "pair", cfg.ks, texts=tokens).items()})
    if "composition" in cfg.probe:
        for prefix, ds in sets:
            images, scenes = _held_out(ds)
            probe = composition_probe(images, scenes, enc_img, enc_txt, cfg.batch_size, seed)
            res.update({f"{prefix}probe/{k}": v for k, v in probe.items()})
    return res


def example_grid(dataset: Dataset, n: int) -> dict[str, list[str]]:
    """The first ``n`` held-out images as base64 PNGs with their captions (the report draws them)."""
    images, captions = [], []
    for i in range(min(n, len(dataset))):  # type: ignore[arg-type]
        s = dataset[i]
        x = ((s.media.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (C, H, W)
        arr = x.permute(1, 2, 0).numpy()  # (H, W, C)
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else np.ascontiguousarray(arr)).save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        captions.append(s.text or "")
    return {"images": images, "captions": captions}
