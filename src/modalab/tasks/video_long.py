"""Long video through a streaming memory (chapter 5.4.3 is an empty heading; the claims are ours).

Task ``video_long_stream``: train ``video_stream_classifier`` on one-action videos of
``data.num_frames`` frames (``moving_digits_stream``), then, for each length in ``eval.lengths``,
classify the paired test videos of that length three ways with the same weights:

- ``stream``: every frame, ``model.window`` frames per encoder call, into a memory of
  ``model.window`` entries (``video/streaming.py``);
- ``first_window``: only the first ``model.window`` frames (the plain model, truncation);
- ``uniform``: ``model.window`` evenly spaced frames (the plain model, sparse sampling).

Keys: ``<mode>/top1@L<frames>``; ``stream/peak_mb@L<frames>`` and ``all_at_once/peak_mb@L<frames>``
(peak resident memory growth of one no-grad batch of ``eval.memory_batch`` videos, measured in a
forked child: streamed window by window vs every frame encoded in one call, same output);
``stream/entries@L<frames>`` (memory entries the classifier reads).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Callable

import torch
from pydantic import Field

from modalab import registry
from modalab.config import Recipe
from modalab.experiment.rundir import RunDir
from modalab.registry import register
from modalab.data.sample import collate
from modalab.tasks.video import ActionsEval, VideoActionsTask, _loader
from modalab.video.sampling import uniform
from modalab.video.streaming import stream


class LongStreamEval(ActionsEval):
    lengths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1,
                               description="test video lengths (frames) evaluated after training")
    memory_batch: int = Field(16, ge=0, description="videos in the peak-memory probe (0: skip it)")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _child(fn: Callable[[], Any], conn: Any) -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        before = _status_kb("VmRSS")
        fn()
        conn.send((_status_kb("VmHWM") - before) / 1024.0)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(e)
    finally:
        conn.close()


def peak_memory_mb(fn: Callable[[], Any]) -> float:
    """Peak resident-memory growth (MB) of running ``fn`` in a forked child (Linux /proc)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(fn, child))
    p.start()
    out = parent.recv()
    p.join()
    if isinstance(out, Exception):
        raise out
    return float(out)


@torch.no_grad()
def read_modes(model: torch.nn.Module, videos: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits (N, C) of ``videos`` (N, T, C, H, W) per read mode (stream, first_window, uniform)."""
    w = model.window
    idx = torch.from_numpy(uniform(videos.shape[1], w).indices)  # (w,)
    return {"stream": model(videos), "first_window": model.forward_plain(videos[:, :w]),
            "uniform": model.forward_plain(videos[:, idx])}


def length_eval(task: VideoActionsTask) -> dict[str, Any]:
    """Accuracy per read mode and peak memory, for every test length in ``eval.lengths``."""
    cfg: LongStreamEval = task.eval_cfg  # type: ignore[assignment]
    recipe, model = task.recipe, task.model
    model.eval()
    flat: dict[str, Any] = {}
    rows = []
    for length in cfg.lengths:
        data_cfg = recipe.data.model_copy(update={"num_frames": length})
        data = registry.build("source", recipe.data.source, data_cfg, seed=recipe.data_seed)
        logits: dict[str, list[torch.Tensor]] = {}
        labels, first = [], None
        for b in _loader(data.test, cfg.batch_size, collate, False):
            first = b.images if first is None else first
            for mode, lg in read_modes(model, b.images).items():
                logits.setdefault(mode, []).append(lg)
            labels.append(b.labels)
        y = torch.cat(labels)
        row: dict[str, Any] = {"frames": length, "test_videos": len(y),
                               "entries": min(length, model.window)}
        for mode, lg in logits.items():
            row[f"{mode}_top1"] = float((torch.cat(lg).argmax(1) == y).float().mean())
        if cfg.memory_batch and os.path.exists("/proc/self/clear_refs"):
            x = first[: cfg.memory_batch]
            with torch.no_grad():
                row["stream_peak_mb"] = peak_memory_mb(lambda: model(x))
                row["all_at_once_peak_mb"] = peak_memory_mb(
                    lambda: model.classify(stream(model.encode_frames, x, length, model.window).features))
        rows.append(row)
        for mode in logits:
            flat[f"{mode}/top1@L{length}"] = row[f"{mode}_top1"]
        flat[f"stream/entries@L{length}"] = row["entries"]
        for mode in ("stream", "all_at_once"):
            if f"{mode}_peak_mb" in row:
                flat[f"{mode}/peak_mb@L{length}"] = row[f"{mode}_peak_mb"]
    task.run.write_artifact("length_sweep", {"rows": rows})
    return flat


@register("task", "video_long_stream", schema=LongStreamEval)
def build_video_long_stream(recipe: Recipe, run: RunDir) -> VideoActionsTask:
    """Recognition over videos longer than the model window via a streaming memory; accuracy
    and peak memory vs video length."""
    if recipe.model.name != "video_stream_classifier":
        raise ValueError(f"task video_long_stream needs model.name: video_stream_classifier, "
                         f"got '{recipe.model.name}'")
    return VideoActionsTask(recipe, run, extra_eval=length_eval)
