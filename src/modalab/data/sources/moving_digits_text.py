"""Moving-digit videos with order-dependent captions, written as an MSR-VTT-style dataset.

Each video shows one sklearn digit doing two actions one after the other (each half of the clip
starts from the neutral pose: a cut in the middle), captioned in order:
"a 3 moving left, then zooming in". Videos come in twins: the same digit, colour, background and
the same two rendered halves in the other order ("a 3 zooming in, then moving left"). The two twins
hold the same frames (lossless H.264, ``crf=0``: decoded pixels are identical, tested), so any
order-free pool (the mean of frame features) gives both the same
embedding and cannot tell their captions apart; the order probe of ``tasks/video_text.py`` scores
each video's caption against its order-swapped caption (kept in the record as ``swapped_caption``).

``make_caption_videos`` writes H.264 files and ``videodatainfo.json`` ({"videos", "sentences"}, the
MSR-VTT layout; twins share a split: ``test_fraction`` and ``val_fraction`` of the pairs are
``test`` / ``validate``). The registered source ``moving_digits_text`` writes them once into
``cache_dir`` (generation seed 0) and reads them back through ``msrvtt_json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.data.sources.moving_digits import ACTIONS, _render, _trajectory, _video_parts
from modalab.registry import register
from modalab.video.decode import write_video

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits

VERBS = {"move_left": "moving left", "move_right": "moving right", "move_up": "moving up",
         "move_down": "moving down", "rotate": "rotating", "zoom_in": "zooming in",
         "zoom_out": "zooming out", "flash": "flashing"}


def caption(digit: int, first: str, second: str) -> str:
    """``a {digit} {verb}, then {verb}``."""
    return f"a {digit} {VERBS[first]}, then {VERBS[second]}"


def make_caption_videos(
    out_dir: str | Path, num_pairs: int, actions: tuple[str, ...] = ("move_left", "move_up", "zoom_in",
                                                                     "rotate", "flash"),
    num_frames: int = 16, size: int = 32, fps: int = 8, test_fraction: float = 0.25,
    val_fraction: float = 0.1, seed: int = 0,
) -> Path:
    """Write ``2 * num_pairs`` videos (twins) and ``videodatainfo.json``; returns the JSON path."""
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or len(actions) < 2:
        raise ValueError(f"actions {list(actions)}: need >= 2 of {', '.join(ACTIONS)}")
    if num_frames % 2:
        raise ValueError(f"num_frames={num_frames} must be even (two equal halves)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_fraction * num_pairs))
    n_val = round(val_fraction * num_pairs)
    splits = ["test"] * n_test + ["validate"] * n_val + ["train"] * (num_pairs - n_test - n_val)
    rng.shuffle(splits)
    half = num_frames // 2
    videos, sentences = [], []
    for p in range(num_pairs):
        glyph, bg, color, digit = _video_parts(rng, size)
        a, b = rng.choice(len(actions), size=2, replace=False)
        first, second = actions[int(a)], actions[int(b)]
        parts = {name: np.stack([_render(glyph, bg, color, *st)
                                 for st in _trajectory(name, half, size, rng)])
                 for name in (first, second)}  # (T/2, S, S, 3) each
        for k, (x, y) in enumerate(((first, second), (second, first))):
            vid = f"video{2 * p + k}"
            write_video(out / f"{vid}.mp4", np.concatenate([parts[x], parts[y]]), fps=fps,
                        crf=0)  # lossless: twin halves decode to identical pixels
            videos.append({"video_id": vid, "split": splits[p], "digit": digit, "actions": [x, y],
                           "twin": f"video{2 * p + 1 - k}", "swapped_caption": caption(digit, y, x)})
            sentences.append({"video_id": vid, "caption": caption(digit, x, y),
                              "sen_id": len(sentences)})
    path = out / "videodatainfo.json"
    path.write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return path


class MovingDigitsTextConfig(DataBase):
    cache_dir: str = "runs/cache/moving_digits"
    num_pairs: int = Field(480, gt=1, description="twin pairs (2 videos each)")
    actions: list[str] = Field(default_factory=lambda: ["move_left", "move_up", "zoom_in", "rotate", "flash"])
    num_frames: int = Field(16, gt=1, description="frames written per video (two halves)")
    size: int = Field(32, ge=16)
    fps: int = Field(8, gt=0)
    frames_per_clip: int = Field(8, gt=0, description="frames the model sees (uniform)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of pairs held out (fixed at generation)")


@register("source", "moving_digits_text", schema=MovingDigitsTextConfig)
def build_moving_digits_text(cfg: MovingDigitsTextConfig, *, seed: int) -> "DataSplits":
    """Twin moving-digit videos with ordered captions, read through ``msrvtt_json``."""
    from modalab.data.sources.msrvtt_json import MsrvttJsonConfig, build_msrvtt_json

    key = (f"text_lossless_n{cfg.num_pairs}_t{cfg.num_frames}_s{cfg.size}_f{cfg.fps}_te{cfg.test_fraction}"
           f"_va{cfg.val_fraction}_{'-'.join(cfg.actions)}")
    path = Path(cfg.cache_dir) / key / "videodatainfo.json"
    if not path.is_file():
        make_caption_videos(path.parent, cfg.num_pairs, tuple(cfg.actions), cfg.num_frames, cfg.size,
                            cfg.fps, cfg.test_fraction, cfg.val_fraction, seed=0)
    inner = MsrvttJsonConfig(source="msrvtt_json", path=str(path), frames_per_clip=cfg.frames_per_clip,
                             sampling="uniform", size=cfg.size, on_error=cfg.on_error,
                             num_workers=cfg.num_workers, val_fraction=cfg.val_fraction)
    return build_msrvtt_json(inner, seed=seed)
