"""A folder of audio files whose label (and speaker) come from the file name.

The pattern names fields in braces, default ``{label}_{speaker}_{index}.wav``; each field matches
one run of characters without ``_`` or ``/``; an audio extension in the pattern stands for any of
.wav/.flac/.ogg. Files that do not match are counted and reported, not
silently dropped. ``split_by_speaker`` holds out whole speakers so that no voice is in both splits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUDIO_EXTS = (".wav", ".flac", ".ogg")


def pattern_regex(pattern: str) -> re.Pattern:
    """Compile ``{field}`` placeholders to named groups; everything else matches literally."""
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", pattern)
    rx = "".join(f"(?P<{p[1:-1]}>[^_/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p)
                 for p in parts)
    return re.compile(rx + r"\Z")


@dataclass
class FolderListing:
    items: list[dict] = field(default_factory=list)  # {path, label, speaker?, ...}
    bad_names: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return sorted({it["label"] for it in self.items})


def list_audio_folder(root: str | Path, pattern: str = "{label}_{speaker}_{index}.wav",
                      recursive: bool = True) -> FolderListing:
    """List audio files under ``root`` whose names match ``pattern`` (must contain ``{label}``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio_folder: root {root} is not a directory")
    if "{label}" not in pattern:
        raise ValueError(f"audio_folder: pattern {pattern!r} must contain '{{label}}'")
    stem_only = Path(pattern).suffix.lower() in AUDIO_EXTS  # "x.wav" patterns accept any audio extension
    rx = pattern_regex(pattern[: -len(Path(pattern).suffix)] if stem_only else pattern)
    out = FolderListing()
    files = sorted(root.rglob("*") if recursive else root.iterdir())
    for p in files:
        if not p.is_file() or p.suffix.lower() not in AUDIO_EXTS:
            continue
        m = rx.match(p.stem if stem_only else p.name)
        if m is None:
            out.bad_names.append(str(p))
            continue
        out.items.append({"path": p, **m.groupdict()})
    if not out.items:
        raise ValueError(f"audio_folder: no file under {root} matches {pattern!r} "
                         f"({len(out.bad_names)} audio files with other names)")
    return out


def split_by_speaker(items: list[dict], test_fraction: float = 0.2, seed: int = 0,
                     test_speakers: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Split so that every speaker is entirely in train or in test.

    ``test_speakers`` fixes the held-out speakers; otherwise round(test_fraction * n_speakers)
    (at least 1) are drawn with ``seed``.
    """
    if any("speaker" not in it for it in items):
        raise ValueError("split_by_speaker: items have no 'speaker' field; add {speaker} to the pattern")
    speakers = sorted({it["speaker"] for it in items})
    if test_speakers is None:
        if len(speakers) < 2:
            raise ValueError(f"split_by_speaker needs >= 2 speakers, found {speakers}")
        k = min(len(speakers) - 1, max(1, round(test_fraction * len(speakers))))
        rng = np.random.default_rng(seed)
        test_speakers = sorted(rng.choice(speakers, size=k, replace=False).tolist())
    unknown = set(test_speakers) - set(speakers)
    if unknown:
        raise ValueError(f"split_by_speaker: unknown speakers {sorted(unknown)}; known: {speakers}")
    held = set(test_speakers)
    return [it for it in items if it["speaker"] not in held], [it for it in items if it["speaker"] in held]
