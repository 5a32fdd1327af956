"""The streaming memory for long videos: the batched bank against the one-video reference, forward
and backward; window-size independence and the memory bound; the streaming classifier equal to
its plain path when the video fits the window; the one-action long videos; the recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalab.config import load
from modalab.data.sources.moving_digits_stream import make_stream_videos
from modalab.experiment.runner import run
from modalab.models.video_stream import StreamingVideoClassifier, VideoStreamConfig, build_video_stream_classifier
from modalab.tasks.video_long import peak_memory_mb, read_modes
from modalab.video.decode import read_all
from modalab.video.merging import StreamingMemory
from modalab.video.streaming import MemoryBank, stream

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _span_means(frames: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Plain reference: each entry is the mean of the frames its span covers. (B, K, D)."""
    return torch.stack([torch.stack([frames[b, s:e + 1].mean(0) for s, e in spans[b].tolist()])
                        for b in range(frames.shape[0])])


def test_bank_matches_the_one_video_reference():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 23, 6, generator=g, dtype=torch.float64)
    frames[:, 5:11] = frames[:, 5:6] + 0.01 * torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    bank = MemoryBank(5)
    bank.add(frames[:, :9])
    bank.add(frames[:, 9:])
    assert bank.features.shape == (3, 5, 6) and bank.seen == 23
    for b in range(3):
        ref = StreamingMemory(5)
        for t in range(23):
            ref.add(frames[b, t], t)
        assert [tuple(map(int, s)) for s in ref.spans] == [tuple(s) for s in bank.spans[b].tolist()]
        torch.testing.assert_close(bank.features[b], ref.features)
        torch.testing.assert_close(bank.sizes[b], ref.sizes.to(torch.float64))
    # the near-duplicate stretch 5..10 collapses first: one entry covers it
    assert any(s <= 5 and e >= 10 for s, e in bank.spans[0].tolist())


def test_bank_backward_matches_span_means():
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(2, 17, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    bank = MemoryBank(4)
    bank.add(frames)
    (bank.features * w).sum().backward()
    got = frames.grad.clone()
    frames.grad = None
    ref = _span_means(frames, bank.spans)
    torch.testing.assert_close(bank.features, ref)
    (ref * w).sum().backward()
    torch.testing.assert_close(got, frames.grad)
    assert bank.sizes.sum(1).tolist() == [17.0, 17.0]


def test_stream_is_window_independent_and_bounded():
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(3 * 4 * 4, 5, generator=g, dtype=torch.float64)
    seen, lengths = [], []

    def encode(v: torch.Tensor) -> torch.Tensor:  # (B, w, 3, 4, 4) -> (B, w, 5), frame by frame
        seen.append(v.shape[1])
        return v.flatten(2) @ proj

    video = torch.randn(2, 29, 3, 4, 4, generator=g, dtype=torch.float64)
    small = stream(encode, video, 4, 6, on_window=lambda bk: lengths.append(len(bk)))
    assert max(seen) == 4 and sum(seen) == 29 and max(lengths) <= 6  # memory bound
    seen.clear()
    whole = stream(encode, video, 29, 6)
    assert seen == [29]
    torch.testing.assert_close(small.features, whole.features)
    assert torch.equal(small.spans, whole.spans)
    with pytest.raises(ValueError, match="window"):
        stream(encode, video, 0, 6)
    with pytest.raises(ValueError, match="capacity"):
        MemoryBank(0)


def _model(window: int = 4) -> StreamingVideoClassifier:
    torch.manual_seed(0)
    cfg = VideoStreamConfig(name="video_stream_classifier", dim=16, depth=1, heads=2, grid=2,
                            window=window)
    return build_video_stream_classifier(cfg, num_classes=5, image_size=16, channels=3,
                                         max_frames=window).double().eval()


@pytest.mark.parametrize("frames", [2, 4])
def test_streaming_equals_plain_when_the_video_fits(frames):
    model = _model(4)
    video = torch.randn(3, frames, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(video), model.forward_plain(video))


def test_streaming_shapes_on_long_videos_and_clear_errors():
    model = _model(4)
    video = torch.randn(2, 13, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert model(video).shape == (2, 5)
        mem = model.memory(video)
        assert mem.features.shape == (2, 4, 16) and mem.sizes.sum(1).tolist() == [13.0, 13.0]
        torch.testing.assert_close(model.memory(video, window=13).features, mem.features)
        modes = read_modes(model, video)
    assert set(modes) == {"stream", "first_window", "uniform"} and all(v.shape == (2, 5) for v in modes.values())
    with pytest.raises(ValueError, match="exceed the window"):
        model.forward_plain(video)
    logits = model.train()(video.requires_grad_())  # gradients reach the frames through the memory
    logits.sum().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0


def test_stream_videos_one_action_paired_across_lengths(tmp_path):
    short = make_stream_videos(tmp_path / "a", 4, 8, action_frames=8, size=16)
    long = make_stream_videos(tmp_path / "b", 4, 24, action_frames=8, size=16)
    assert [r["label"] for r in short] == [r["label"] for r in long]
    for r in long:
        assert 0 <= r["start_frame"] and r["end_frame"] == r["start_frame"] + 8 <= 24
        frames = read_all(r["path"]).astype(np.float32)  # (24, 16, 16, 3)
        assert frames.shape[0] == 24
        rest = [t for t in range(24) if not r["start_frame"] <= t < r["end_frame"]]
        assert np.abs(frames[rest] - frames[rest[0]]).mean() < 3.0  # rest frames: one pose
    assert all(r["start_frame"] == 0 for r in short)
    with pytest.raises(ValueError, match="action_frames"):
        make_stream_videos(tmp_path / "c", 1, 4, action_frames=8)


def test_peak_memory_probe_sees_a_large_allocation():
    assert peak_memory_mb(lambda: torch.ones(40 * 2**20 // 4).sum()) > 30.0
    assert peak_memory_mb(lambda: None) < 30.0


def test_video_long_stream_recipe(tmp_path):
    recipe = load(RECIPES / "video_long_stream.yaml", [
        f"data.cache_dir={tmp_path / 'cache'}", "data.num_videos=32", "data.num_frames=8",
        "data.action_frames=4", "data.size=16", "model.dim=16", "model.heads=2", "model.depth=1",
        "model.window=4", "train.steps=2", "train.batch_size=8", "train.log_every=1",
        "run.progress=false", "eval.batch_size=8", "eval.lengths=[4,8,16]", "eval.memory_batch=2",
    ])
    res = json.loads((run(recipe, tmp_path / "run") / "results.json").read_text())
    for length in (4, 8, 16):
        for mode in ("stream", "first_window", "uniform"):
            assert 0.0 <= res[f"{mode}/top1@L{length}"] <= 1.0
        assert res[f"stream/entries@L{length}"] == 4
        assert res[f"stream/peak_mb@L{length}"] >= 0.0 and res[f"all_at_once/peak_mb@L{length}"] >= 0.0
    # at the window length all three read the same 4 frames
    assert res["stream/top1@L4"] == res["first_window/top1@L4"] == res["uniform/top1@L4"]
    assert res["stream/top1@L8"] == res["top1"]  # the training length's test split, the same model
    with pytest.raises(ValueError, match="action_frames"):
        load(RECIPES / "video_long_stream.yaml", ["data.action_frames=32"])
