"""Loading real-shaped CLIP / SigLIP checkpoints through modalab: load time, peak memory, images/s.

Builds ViT-B/32-shaped ``CLIPModel`` and ``SiglipModel`` configs with random weights (224 px,
patch 32, vision width 768 x 12 layers; CLIP text 512 x 12 layers, 77 tokens, 49,408 ids; SigLIP
text 768 x 12 layers, 64 tokens, 32,000 ids), writes them with ``save_pretrained``, then in this
process: loads each through ``models/pretrained`` (timed, with the extra peak resident memory),
embeds N random 224 px images and the prompts of 10 classes with modalab's converted model and
with transformers', and checks that the zero-shot predictions agree on every image.

Run:  python benchmarks/pretrained_load.py [--images 64] [--threads 1]
Prints one JSON line per family: load_s, load_peak_mib, params_m, modalab_img_per_s,
transformers_img_per_s, agree (fraction of identical argmax), max_abs_logit_diff.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _memory import fix_malloc, peak_mib  # noqa: E402  benchmarks/_memory.py

from modalab.models.pretrained.load import load_dual_encoder  # noqa: E402


def b32_config(family: str):  # type: ignore[no-untyped-def]
    import transformers

    vision = dict(image_size=224, patch_size=32, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12)
    if family == "clip":
        text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                    num_attention_heads=8, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                    pad_token_id=49407)
        return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    text = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=64, projection_size=768, bos_token_id=1,
                eos_token_id=1, pad_token_id=1)
    return transformers.SiglipConfig(text_config=text, vision_config=vision)


def measure(family: str, n_images: int, folder: Path) -> dict[str, object]:
    import transformers

    cls = transformers.CLIPModel if family == "clip" else transformers.SiglipModel
    torch.manual_seed(0)
    cls(b32_config(family)).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(  # what the released folders ship
        {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
         "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]} if family == "clip" else
        {"size": {"height": 224, "width": 224}, "resample": 3, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    holder: dict[str, object] = {}

    def load() -> None:
        holder["model"] = load_dual_encoder(f"hf:{folder}")[0]

    t0 = time.perf_counter()
    peak = peak_mib(load)
    load_s = time.perf_counter() - t0
    ours = holder["model"]
    ref = cls.from_pretrained(str(folder)).eval()
    g = torch.Generator().manual_seed(1)
    px = torch.randn(n_images, 3, 224, 224, generator=g)
    ctx = 77 if family == "clip" else 64
    ids = torch.randint(3, 30000, (10, ctx), generator=g)
    if family == "clip":
        ids[:, 8] = 49407  # end-of-text
    with torch.no_grad():
        t0 = time.perf_counter()
        img = ours.encode_image(px)  # type: ignore[attr-defined]
        ours_s = time.perf_counter() - t0
        out = ours(px[:1], ids)  # type: ignore[operator]
        txt = out["text_emb"]
        logits = out["logit_scale"] * img @ txt.T
        t0 = time.perf_counter()
        ref_img = ref.get_image_features(pixel_values=px)
        ref_s = time.perf_counter() - t0
        ref_logits = ref(pixel_values=px, input_ids=ids).logits_per_image
    if hasattr(ref_img, "pooler_output"):
        ref_img = ref_img.pooler_output
    bias = out["logit_bias"]
    if bias is not None:
        logits = logits + bias.detach()
    return {
        "family": family, "load_s": round(load_s, 2), "load_peak_mib": round(peak, 1),
        "params_m": round(sum(p.numel() for p in ours.parameters()) / 1e6, 1),  # type: ignore[attr-defined]
        "modalab_img_per_s": round(n_images / ours_s, 1), "transformers_img_per_s": round(n_images / ref_s, 1),
        "agree": float((logits.argmax(1) == ref_logits.argmax(1)).float().mean()),
        "max_abs_logit_diff": float((logits - ref_logits).abs().max()),
    }


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", default="clip,siglip")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fix_malloc()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families.split(","):
            row = measure(fam, args.images, Path(tmp) / fam)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
