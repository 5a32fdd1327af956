"""Registered audio sources: ``sound_events``, ``spoken_digits`` and ``audio_folder``.

Audio plays the image role of :class:`~modalab.data.sample.Sample`: ``Sample.media`` holds the
waveform, a float32 tensor ``(samples,)`` at 16 kHz padded or trimmed to ``clip_seconds``, so that
``collate`` stacks a batch into ``(B, samples)``; ``DataSplits.image_size`` is the clip length in
samples and ``channels`` is 1. Models compute features from the waveform (``audio.frontend``).

:class:`AudioSplits` adds what audio evaluation needs: the sample rate, the speaker of every item
per split (empty without speakers), how the split was made, and extra counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from modalab.audio.io import load_many, pad_or_trim
from modalab.config import DataBase
from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val, stratified_split
from modalab.data.sample import Sample
from modalab.data.sources import sound_events as se
from modalab.data.sources import spoken_digits as sd
from modalab.data.sources.audio_folder import list_audio_folder, split_by_speaker
from modalab.registry import register

SR = 16000
TEMPLATES = ["the spoken word {name}", "a person saying {name}", "someone says {name}",
             "a recording of the word {name}", "a voice saying {name}"]


@dataclass
class AudioSplits(DataSplits):
    sr: int = SR
    split_by: str = "random"
    speakers: dict[str, list[str]] = field(default_factory=dict)  # split -> speaker of each item
    extra_counts: dict[str, int] = field(default_factory=dict)


def _wave(y: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pad_or_trim(y, n), dtype=np.float32))


def _dataset(items: list[dict], make: Any) -> SampleDataset:
    return SampleDataset(len(items), lambda i: make(items[i], i))


# ------------------------------------------------------------------------------ sound events


class SoundEventsConfig(DataBase):
    n_train: int = Field(512, gt=0)
    n_test: int = Field(128, gt=0)
    duration: float = Field(4.0, gt=0.5, description="seconds per scene")
    n_events: tuple[int, int] = (1, 3)
    snr_db: tuple[float, float] = (0.0, 20.0)


@register("source", "sound_events", schema=SoundEventsConfig)
def build_sound_events(cfg: SoundEventsConfig, *, seed: int) -> AudioSplits:
    """Synthetic scenes of 7 event classes with exact onsets/offsets (tagging and detection)."""
    kw = {"duration": cfg.duration, "sr": SR, "n_events": cfg.n_events, "snr_db": cfg.snr_db}
    train = se.generate_scenes(cfg.n_train, seed=seed * 1000 + 1, **kw)
    test = se.generate_scenes(cfg.n_test, seed=seed * 1000 + 2, **kw)  # a disjoint draw
    tr, va = carve_val(range(len(train)), cfg.val_fraction, seed)  # i.i.d. scenes: a random share
    train, val = [train[i] for i in tr], [train[i] for i in va]
    n = int(round(cfg.duration * SR))

    def maker(split: str):
        def make(scene: tuple[np.ndarray, list[dict]], i: int) -> Sample:
            y, events = scene
            text = " and ".join(sorted({e["label"] for e in events}))
            return Sample(id=f"sound_events/{split}/{i}", media=_wave(y, n), text=text, meta={"events": events})
        return make

    return AudioSplits(
        train=_dataset(train, maker("train")), test=_dataset(test, maker("test")),
        val=_dataset(val, maker("val")) if val else None, classnames=list(se.CLASSES), texts=list(se.CLASSES),
        image_size=n, channels=1,
    )


# ------------------------------------------------------------------- spoken digits / folders


class _SplitConfig(DataBase):
    split_by: Literal["speaker", "random"] = "speaker"
    test_fraction: float = Field(0.25, gt=0, lt=1)
    test_speakers: list[str] | None = Field(None, description="held-out speakers (split_by: speaker)")
    clip_seconds: float = Field(1.0, gt=0, description="pad or trim every clip to this length")


def _split(items: list[dict], cfg: _SplitConfig, seed: int, where: str) -> tuple[list[dict], list[dict]]:
    if cfg.split_by == "speaker":
        try:
            return split_by_speaker(items, cfg.test_fraction, seed, cfg.test_speakers)
        except ValueError as e:
            raise DataError(f"{where}: data.split_by=speaker: {e}") from None
    labels = sorted({it["label"] for it in items})
    tr, te = stratified_split([labels.index(it["label"]) for it in items], len(items), cfg.test_fraction, seed)
    return [items[i] for i in tr], [items[i] for i in te]


def _labelled_splits(train: list[dict], test: list[dict], classnames: list[str], cfg: _SplitConfig,
                     name: str, skipped: list[str], extra: dict[str, int], seed: int = 0) -> AudioSplits:
    """Items {audio, label (index), speaker?} -> AudioSplits with captions from TEMPLATES; the
    validation split is ``data.val_fraction`` of train: whole speakers when the test split is by
    speaker, else stratified by label."""
    n = int(round(cfg.clip_seconds * SR))
    by_speaker = cfg.split_by == "speaker" and all("speaker" in it for it in train)
    tr, va = carve_val(range(len(train)), cfg.val_fraction, seed, labels=[it["label"] for it in train],
                       groups=[it["speaker"] for it in train] if by_speaker else None)
    train, val = [train[i] for i in tr], [train[i] for i in va]

    def make_train(it: dict, i: int) -> Sample:
        t = TEMPLATES[int(torch.randint(len(TEMPLATES), ()))].format(name=classnames[it["label"]])
        return Sample(id=f"{name}/{it['id']}", media=_wave(it["audio"], n), text=t, label=it["label"])

    def make_test(it: dict, i: int) -> Sample:
        t = TEMPLATES[i % len(TEMPLATES)].format(name=classnames[it["label"]])
        return Sample(id=f"{name}/{it['id']}", media=_wave(it["audio"], n), text=t, label=it["label"])

    speakers = {}
    if all("speaker" in it for it in train + val + test):
        speakers = {"train": [it["speaker"] for it in train], "val": [it["speaker"] for it in val],
                    "test": [it["speaker"] for it in test]}
    return AudioSplits(
        train=_dataset(train, make_train), test=_dataset(test, make_test), classnames=classnames,
        val=_dataset(val, make_test) if val else None,
        texts=[t.format(name=c) for c in classnames for t in TEMPLATES], image_size=n, channels=1,
        skipped=skipped, split_by=cfg.split_by, speakers=speakers, extra_counts=extra,
    )


class SpokenDigitsConfig(_SplitConfig):
    n_speakers: int = Field(12, ge=2)
    per_digit: int = Field(4, gt=0, description="utterances per digit per speaker")


@register("source", "spoken_digits", schema=SpokenDigitsConfig)
def build_spoken_digits(cfg: SpokenDigitsConfig, *, seed: int) -> AudioSplits:
    """Built-in formant-synthesised "zero".."nine" by several speakers, captions per clip."""
    recs = sd.spoken_digits(cfg.n_speakers, cfg.per_digit, seed=seed, sr=SR)
    items = [{**r, "id": f"{r['label']}_{r['speaker']}_{r['index']}"} for r in recs]
    train, test = _split(items, cfg, seed, "spoken_digits")
    return _labelled_splits(train, test, list(sd.WORDS), cfg, "spoken_digits", [], {}, seed)


class AudioFolderConfig(_SplitConfig):
    root: str = Field(..., description="folder of audio files")
    pattern: str = "{label}_{speaker}_{index}.wav"
    recursive: bool = True
    normalize: Literal["none", "peak", "loudness"] = "peak"
    digit_names: bool = Field(True, description="name labels 0-9 'zero'..'nine' (for text prompts)")


@register("source", "audio_folder", schema=AudioFolderConfig)
def build_audio_folder(cfg: AudioFolderConfig, *, seed: int) -> AudioSplits:
    """Audio files whose label/speaker come from the name; bad files skipped and counted (on_error)."""
    root = Path(cfg.root).expanduser()
    try:
        listing = list_audio_folder(root, cfg.pattern, cfg.recursive)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"data.root={cfg.root}: {e}") from None
    waves, report = load_many([it["path"] for it in listing.items], on_error=cfg.on_error, sr=SR,
                              normalize=cfg.normalize)
    loaded = {str(p) for p in report.loaded}
    items = [it for it in listing.items if str(it["path"]) in loaded]
    if not items:
        raise DataError(f"data.root={cfg.root}: every matching file failed to load; first: "
                        f"{next(iter(report.skipped.values()), '?')}")
    names = sorted({it["label"] for it in items})
    digits = cfg.digit_names and all(x.isdigit() and len(x) == 1 for x in names)
    classnames = [sd.WORDS[int(x)] for x in names] if digits else names
    for it, y in zip(items, waves):
        it.update(audio=y, id=str(Path(it["path"]).relative_to(root)), label=names.index(it["label"]))
    train, test = _split(items, cfg, seed, f"audio_folder {root}")
    skipped = list(report.skipped.values())  # "path: reason"
    extra = {"num_unmatched_names": len(listing.bad_names)}
    return _labelled_splits(train, test, classnames, cfg, "audio_folder", skipped, extra, seed)
