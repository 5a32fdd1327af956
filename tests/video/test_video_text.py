"""Video-text retrieval: the logit-matrix loss against info_nce, caption-conditioned attention
against a per-pair loop, order (in)sensitivity of the pools, hand-computed ranks, the twin-video
generator, and short recipe runs (each pool on moving digits; an MSR-VTT-style folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from modalab.align.logits_info_nce import info_nce_logits
from modalab.align.losses import info_nce, same_label_mask
from modalab.config import from_dict
from modalab.models.video_text import build_video_text
from modalab.tasks.video_text import caption_ids, rank_summary
from modalab.video.text_pooling import FrameCaptionAttention

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["model.dim=16", "model.heads=2", "model.depth=1", "model.text_depth=1", "model.embed_dim=16",
        "train.steps=2", "train.batch_size=4", "train.eval_every=0", "run.progress=false",
        "eval.batch_size=8"]


def test_logits_loss_equals_info_nce_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    t = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    mask = same_label_mask(torch.tensor([0, 1, 0, 2, 1, 3]))
    for m in (None, mask):
        a, b = v.clone().requires_grad_(), t.clone().requires_grad_()
        ref = info_nce(a, b, 7.0, mask=m)
        ref.backward()
        a2, b2 = v.clone().requires_grad_(), t.clone().requires_grad_()
        got = info_nce_logits(7.0 * a2 @ b2.T, m)
        got.backward()
        assert torch.allclose(got, ref) and torch.allclose(a2.grad, a.grad) and torch.allclose(b2.grad, b.grad)
    with pytest.raises(ValueError, match="square"):
        info_nce_logits(torch.zeros(2, 3))


def test_frame_caption_attention_matches_a_per_pair_loop():
    torch.manual_seed(0)
    att = FrameCaptionAttention(8, max_frames=6).double()
    frames, text = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    out = att(frames, text)  # (4, 3, 8)
    for a in range(4):
        for b in range(3):
            x = frames[b] + att.pos[0, :5]  # (T, D)
            w = torch.softmax(att.k(x) @ att.q(text[a]) / 8 ** 0.5, dim=0)  # (T,)
            ref = att.norm(att.out(w @ att.v(x))) + frames[b].mean(0)
            assert torch.allclose(out[a, b], ref)


@pytest.mark.parametrize("pool,order_free", [("mean", True), ("seq_transf", False), ("frame_attention", False)])
def test_only_mean_pooling_ignores_frame_order(pool, order_free):
    """Swapping the two halves of a clip (a twin) leaves the mean pool unchanged, not the others."""
    torch.manual_seed(0)
    model = build_video_text(20, pool, dim=16, heads=2, depth=1, embed_dim=16, image_size=16,
                             max_frames=8, text_depth=1).eval()
    if hasattr(model.pool, "pos"):
        torch.nn.init.normal_(model.pool.pos)  # trained-size position embeddings (init is 0.02)
    video = torch.randn(2, 8, 3, 16, 16)
    twin = torch.cat([video[:, 4:], video[:, :4]], dim=1)  # (B, T, C, H, W), halves swapped
    tokens = torch.randint(1, 20, (3, 6))
    with torch.no_grad():
        text = model.encode_text(tokens)
        s1 = model.similarity(model.encode_video(video), text)  # (3, 2)
        s2 = model.similarity(model.encode_video(twin), text)
    assert s1.shape == (3, 2)
    assert torch.allclose(s1, s2, atol=1e-6) == order_free


def test_conditional_similarity_is_per_pair():
    torch.manual_seed(1)
    model = build_video_text(20, "frame_attention", dim=16, heads=2, embed_dim=16, image_size=16,
                             max_frames=8, text_depth=1).eval()
    video, tokens = torch.randn(3, 4, 3, 16, 16), torch.randint(1, 20, (2, 5))
    with torch.no_grad():
        f, t = model.encode_video(video), model.encode_text(tokens)
        full = model.similarity(f, t)
        one = torch.stack([torch.stack([model.similarity(f[j:j + 1], t[i:i + 1])[0, 0]
                                        for j in range(3)]) for i in range(2)])
    assert torch.allclose(full, one, atol=1e-6)


def test_rank_summary_hand_computed_with_shared_captions():
    caps = ["a", "b", "a", "c"]
    ids = caption_ids(caps)
    assert ids.tolist() == [0, 1, 0, 2]
    match = ids[:, None] == ids[None, :]
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.0],    # "a": best correct 0.5 (video 2), one wrong above: rank 2
                        [0.0, 0.2, 0.3, 0.2],    # "b": own 0.2, 0.3 above and a tie 0.2: rank 3
                        [0.8, 0.1, 0.1, 0.1],    # "a": video 0 correct, rank 1
                        [0.0, 0.0, 0.0, 0.7]])   # "c": rank 1
    r = rank_summary(sim, match, "t2v", [1, 2])
    assert r["t2v_R@1"] == 0.5 and r["t2v_R@2"] == 0.75 and r["t2v_median_rank"] == 1.0
    assert r["t2v_mean_rank"] == pytest.approx(7 / 4)


def test_twin_generator_same_frames_other_order(tmp_path):
    from modalab.data.sources.moving_digits_text import make_caption_videos
    from modalab.video.decode import read_all

    path = make_caption_videos(tmp_path, 3, ("move_left", "zoom_in", "flash"), num_frames=8, size=16,
                               test_fraction=0.34, val_fraction=0.0)
    info = json.loads(path.read_text())
    v0, v1 = info["videos"][:2]
    assert v0["twin"] == "video1" and v0["split"] == v1["split"] and v0["actions"] == v1["actions"][::-1]
    s0 = info["sentences"][0]["caption"]
    assert s0 == v1["swapped_caption"] and s0.startswith(f"a {v0['digit']} ") and ", then " in s0
    a, b = read_all(tmp_path / "video0.mp4").astype(int), read_all(tmp_path / "video1.mp4").astype(int)
    assert np.array_equal(a[:4], b[4:]) and np.array_equal(a[4:], b[:4])  # lossless: same pixels
    assert np.abs(a - b).mean() > 5
    assert sum(v["split"] == "test" for v in info["videos"]) == 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One generated twin-video set for the recipe runs below."""
    return tmp_path_factory.mktemp("vt_cache")


@pytest.mark.parametrize("pool", ["mean", "seq_transf", "frame_attention"])
def test_video_text_recipe_each_pool(tmp_path, cache, pool):
    from modalab.experiment.runner import run

    raw = yaml.safe_load((RECIPES / "video_text_digits.yaml").read_text())
    recipe = from_dict(raw, [*TINY, f"model.pool={pool}", f"data.cache_dir={cache}",
                             "data.num_pairs=8", "data.size=16", "data.num_frames=8",
                             "data.frames_per_clip=4", "data.test_fraction=0.25", "data.val_fraction=0.25"])
    res = json.loads((run(recipe, tmp_path / "run") / "results.json").read_text())
    assert (res["num_train"], res["num_val"], res["num_test"]) == (8, 4, 4)
    for k in ("text_to_video_R@1", "video_to_text_R@10", "text_to_video_median_rank",
              "val_video_to_text_R@5", "order_probe_acc"):
        assert k in res
    assert res["order_probe_n"] == 4 and 0 <= res["order_probe_acc"] <= 1
    if pool == "mean":  # twins decode to the same frames: the mean pool cannot order them
        assert res["order_probe_acc"] == 0.5


def test_video_text_recipe_on_msrvtt_json(tmp_path):
    """The recipe trains from an MSR-VTT-style folder (``data.source=msrvtt_json``), one bad file skipped."""
    from modalab.data.sources.moving_digits import render_action
    from modalab.experiment.runner import run
    from modalab.video.decode import write_video

    videos, sentences = [], []
    for k in range(10):
        write_video(tmp_path / f"video{k}.mp4", render_action("zoom_in", 8, size=16, seed=k), fps=8)
        videos.append({"video_id": f"video{k}", "split": "test" if k >= 7 else "train"})
        sentences += [{"video_id": f"video{k}", "caption": f"clip {k} view {j}"} for j in range(2)]
    (tmp_path / "video10.mp4").write_bytes(b"\x00" * 512)
    videos.append({"video_id": "video10", "split": "train"})
    sentences.append({"video_id": "video10", "caption": "broken"})
    (tmp_path / "info.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    raw = yaml.safe_load((RECIPES / "video_text_digits.yaml").read_text())
    raw["data"] = {"source": "msrvtt_json", "path": str(tmp_path / "info.json"), "frames_per_clip": 4,
                   "size": 16, "val_fraction": 0.0, "on_error": "skip"}
    res = json.loads((run(from_dict(raw, TINY), tmp_path / "run") / "results.json").read_text())
    assert res["num_train"] == 7 and res["num_test"] == 3 and res["num_skipped"] == 1
    assert "order_probe_acc" not in res and 0 <= res["text_to_video_R@1"] <= 1
