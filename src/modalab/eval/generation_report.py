"""The generation scores a text-to-image task writes to results.json, in one call.

Given the real training split (to train the in-house feature network and score encoder, cached),
the real test split (the reference distribution) and generated images per path with their prompts,
``generation_report`` returns flat keys:

- ``feature_net_test_accuracy``: the feature CNN's accuracy on the real test split (trust check).
- ``fid_real_floor``: FID between two random halves of the real test features (the noise floor);
  FID is biased upwards at small N, so a halves floor is higher than a full-size real-vs-real FID:
  ``fid_real_train_same_n`` (all real test features vs as many real training images as there are
  generated ones) is the floor at exactly the generated comparison's sample sizes;
  ``generate_fid_<path>``, ``generate_kid_<path>`` (+ ``_se``), ``generate_precision_<path>``,
  ``generate_recall_<path>`` against all real test features.
- ``clip_score_real``: CLIP-S (Hessel, w = 2.5) of real test images with their own captions (the
  ceiling for this encoder); ``generate_clip_score_<path>``; ``r_precision_real`` and
  ``generate_r_precision_<path>`` with R = ``r_candidates`` (own caption + R - 1 of other classes
  from the test captions).
All in-domain: comparable across modalab runs with the same configs, not with published numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from modalab.eval.clip_score import clip_score, mismatched_negatives, r_precision
from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid, kid, precision_recall, real_floor
from modalab.eval.score_encoder import ScoreEncoderConfig, cached_score_encoder


def generation_report(
    train: tuple[Tensor, Tensor, Tensor],
    test: tuple[Tensor, Tensor, Tensor],
    generated: dict[str, Tensor],
    prompts: tuple[Tensor, Tensor],
    vocab_size: int,
    cache_dir: Path,
    feature_cfg: FeatureNetConfig,
    score_cfg: ScoreEncoderConfig,
    seed: int = 0,
    r_candidates: int = 10,
) -> dict[str, float]:
    """Args:
        train, test: (images (N, C, H, W) in [0, 1], caption ids (N, L), labels (N,)).
        generated: path name -> images (P, C, H, W) in [0, 1], row i drawn for prompt i.
        prompts: (caption ids (P, L), prompted labels (P,)).
    """
    (tr_x, tr_ids, tr_y), (te_x, te_ids, te_y), (p_ids, p_y) = train, test, prompts
    net = cached_feature_net(tr_x, tr_y, feature_cfg, cache_dir)
    with torch.no_grad():
        acc = float((net(te_x.float()).argmax(1) == te_y).float().mean())
    real = net.embed(te_x)  # (N_test, F)
    res = {"feature_net_test_accuracy": acc, "fid_real_floor": real_floor(real, seed=seed)}
    n = len(p_ids)
    pick = torch.randperm(len(tr_x), generator=torch.Generator().manual_seed(seed))[:n]
    res["fid_real_train_same_n"] = fid(real, net.embed(tr_x[pick]))  # floor at the generated count
    enc = cached_score_encoder(tr_x, tr_ids, tr_y, vocab_size, score_cfg, cache_dir)
    te_txt = enc.embed(ids=te_ids)  # (N_test, E)
    res["clip_score_real"] = clip_score(enc.embed(images=te_x), te_txt)
    res["r_precision_real"] = r_precision(enc.embed(images=te_x), te_txt,
                                          te_txt[mismatched_negatives(te_y, te_y, r_candidates - 1, seed)])
    p_txt = enc.embed(ids=p_ids)  # (P, E)
    p_neg = te_txt[mismatched_negatives(p_y, te_y, r_candidates - 1, seed)]  # (P, R - 1, E)
    for path, images in generated.items():
        if len(images) != len(p_ids):
            raise ValueError(f"generation_report: {len(images)} {path} images for {len(p_ids)} prompts")
        feats = net.embed(images)
        k = kid(real, feats, seed=seed)
        res.update({f"generate_fid_{path}": fid(real, feats), f"generate_kid_{path}": k["kid"],
                    f"generate_kid_se_{path}": k["kid_se"]})
        res.update({f"generate_{m}_{path}": v for m, v in precision_recall(real, feats).items()})
        img = enc.embed(images=images)
        res[f"generate_clip_score_{path}"] = clip_score(img, p_txt)
        res[f"generate_r_precision_{path}"] = r_precision(img, p_txt, p_neg)
    return res
