"""What the in-house generation metrics say about known image sets (digits, 16 px, test split).

    python benchmarks/generation_metrics_digits.py [--seed 0]

Trains the feature CNN and the score encoder on the stratified training split (1347 images; the
same 1347 / 450 split as the unified recipe for this seed, which further holds out data.val_fraction
of the 1347 as validation; this script does not), then scores "generated" sets of 450 images
against the 450 real test images: other real digits (training split), noisy digits, blurred digits,
blank canvases; and the CLIP score / R-precision of real test images with their own vs another class's
captions. The numbers calibrate what a generator's FID / KID / CLIP-S mean on this domain.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from modalab.data.dataset import stratified_split
from modalab.data.sources.digits import caption, load_digit_images
from modalab.eval.clip_score import clip_score, mismatched_negatives, r_precision
from modalab.eval.feature_net import FeatureNetConfig, train_feature_net
from modalab.eval.generation import generation_scores, real_floor
from modalab.eval.score_encoder import ScoreEncoderConfig, train_score_encoder
from modalab.text.tokenizer import WordTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    seed = ap.parse_args().seed
    torch.set_num_threads(1)
    images, labels = load_digit_images(16)  # (1797, 1, 16, 16) in [0, 1]
    tr, te = stratified_split(labels.tolist(), len(labels), 0.25, seed)
    net = train_feature_net(images[tr], labels[tr], FeatureNetConfig(seed=seed))
    with torch.no_grad():
        acc = float((net(images[te]).argmax(1) == labels[te]).float().mean())
    real, n = net.embed(images[te]), len(te)
    g = torch.Generator().manual_seed(seed)
    other = images[tr][torch.randperm(len(tr), generator=g)[:n]]
    sets = {
        "real_train_digits": other,
        "noise_0.1": (other + 0.1 * torch.randn(other.shape, generator=g)).clamp(0, 1),
        "noise_0.3": (other + 0.3 * torch.randn(other.shape, generator=g)).clamp(0, 1),
        "blur_2x": F.interpolate(F.avg_pool2d(other, 2), scale_factor=2, mode="nearest"),
        "blank": torch.zeros_like(other),
    }
    out = {"feature_net_test_accuracy": acc, "fid_real_floor": real_floor(real, seed=seed)}
    for name, x in sets.items():
        out[name] = generation_scores(real, net.embed(x), seed=seed)
    caps = [caption(int(y), i % 3) for i, y in enumerate(labels.tolist())]
    tok = WordTokenizer.build(caps, 10)
    ids = tok(caps)
    enc = train_score_encoder(images[tr], ids[tr], labels[tr], tok.vocab_size, ScoreEncoderConfig(seed=seed))
    img, txt = enc.embed(images=images[te]), enc.embed(ids=ids[te])
    wrong = mismatched_negatives(labels[te], labels[te], 1, seed)[:, 0]
    out["clip_score_real_own_caption"] = clip_score(img, txt)
    out["clip_score_real_other_class_caption"] = clip_score(img, txt[wrong])
    out["r_precision_real_R10"] = r_precision(img, txt, txt[mismatched_negatives(labels[te], labels[te], 9, seed)])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
