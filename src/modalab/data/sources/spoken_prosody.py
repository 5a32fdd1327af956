"""Spoken digit sequences whose answer needs the words AND the prosody (chapter 5.3.1's cascade test).

Each utterance is ``n_words`` digits from the built-in formant synthesiser (``spoken_digits``), one
voice per utterance, with two prosodic labels that no transcript carries:

- ``mode``: statement (every word's f0 falls, 1.05 -> 0.92 of the speaker's pitch) or question (the
  LAST word's f0 rises, 0.95 -> 1.45);
- ``stress``: which word is stressed: that word is 1.3x longer (the speaker's rate / 1.3), 8 dB louder
  than the others (peak 0.5 vs 0.2) and pitched 1.15x higher.

The whole utterance then gets a random gain (-10 .. 0 dB), so loudness alone tells nothing. The
reference answer is ``"<digit words> <statement|question> <first|second|third...>"``, e.g. "three
one four question second": its first ``n_words`` words depend on the words only, the last two on
prosody only. Voices (speakers) are split between train and test: ``test_speakers`` of
``n_speakers`` voices (pitch 85-260 Hz, rate, formant scale from ``make_speakers``) are never heard
in training.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.data.dataset import DataError, carve_val
from modalab.data.sample import Sample
from modalab.data.sources.audio_sources import SR, AudioSplits, _dataset, _wave
from modalab.data.sources.spoken_digits import WORDS, Speaker, make_speakers, synth_digit
from modalab.registry import register

MODES: tuple[str, ...] = ("statement", "question")
POSITIONS: tuple[str, ...] = ("first", "second", "third", "fourth", "fifth")
FALL, RISE = (1.05, 0.92), (0.95, 1.45)


def answer_text(digits: list[int], mode: int, stress: int) -> str:
    """The reference answer: digit words, then the mode, then the stressed position."""
    return " ".join([*(WORDS[d] for d in digits), MODES[mode], POSITIONS[stress]])


def parse_answer(text: str, n_words: int) -> dict:
    """Scoring view of an answer: its digit words in order (the first ``n_words``; missing slots
    None), the first mode word and the first position word wherever they stand (None if absent), so
    a wrong number of digits does not also cost the prosody slots."""
    w = text.split()
    digits: list[int | None] = [WORDS.index(x) for x in w if x in WORDS][:n_words]
    digits += [None] * (n_words - len(digits))
    mode = next((MODES.index(x) for x in w if x in MODES), None)
    stress = next((POSITIONS.index(x) for x in w if x in POSITIONS), None)
    return {"digits": digits, "mode": mode, "stress": stress}


def synth_sequence(digits: list[int], mode: int, stress: int, speaker: Speaker, rng: np.random.Generator,
                   sr: int = 16000) -> np.ndarray:
    """One utterance (float32): the digits spoken by ``speaker`` with the given mode and stress."""
    if not 0 <= stress < len(digits) or mode not in (0, 1):
        raise ValueError(f"synth_sequence: stress must be in [0, {len(digits)}) and mode 0/1, "
                         f"got stress={stress}, mode={mode}")
    parts = []
    for i, d in enumerate(digits):
        last = i == len(digits) - 1
        contour = RISE if (mode == 1 and last) else FALL
        spk = speaker
        if i == stress:
            spk = replace(speaker, rate=speaker.rate / 1.3, f0=speaker.f0 * 1.15)
        y = synth_digit(d, spk, sr, rng, contour)  # peak 0.5
        parts.append(y if i == stress else y * 0.4)
    y = np.concatenate(parts)
    return (y * 10 ** (rng.uniform(-10.0, 0.0) / 20)).astype(np.float32)


def spoken_sequences(n_speakers: int, per_speaker: int, n_words: int = 3, seed: int = 0,
                     sr: int = 16000) -> list[dict]:
    """Records {audio, digits, mode, stress, text (the answer), speaker, id}; deterministic by seed.

    Labels are balanced per speaker: ``mode`` alternates and ``stress`` cycles over the positions.
    """
    if not 1 <= n_words <= len(POSITIONS):
        raise ValueError(f"spoken_sequences: n_words must be 1..{len(POSITIONS)}, got {n_words}")
    speakers = make_speakers(n_speakers, seed)
    rng = np.random.default_rng(seed + 7)
    out = []
    for spk in speakers:
        for j in range(per_speaker):
            digits = [int(d) for d in rng.integers(0, 10, n_words)]
            mode, stress = j % 2, (j // 2) % n_words
            out.append({"audio": synth_sequence(digits, mode, stress, spk, rng, sr), "digits": digits,
                        "mode": mode, "stress": stress, "text": answer_text(digits, mode, stress),
                        "speaker": spk.name, "id": f"{spk.name}_{j:04d}"})
    return out


# ------------------------------------------------------------------------------ registered source


class SpokenProsodyConfig(DataBase):
    n_speakers: int = Field(16, ge=2, description="voices in all; test_speakers of them are held out")
    test_speakers: int = Field(4, ge=1, description="voices heard only in the test split")
    per_speaker: int = Field(60, gt=0, description="utterances per voice")
    n_words: int = Field(3, ge=1, le=len(POSITIONS))
    clip_seconds: float = Field(2.6, gt=0, description="pad every utterance to this length (longer: an error)")


@register("source", "spoken_prosody", schema=SpokenProsodyConfig)
def build_spoken_prosody(cfg: SpokenProsodyConfig, *, seed: int) -> AudioSplits:
    """Digit sequences with statement/question intonation and a stressed word; voices held out."""
    if cfg.test_speakers >= cfg.n_speakers:
        raise DataError(f"spoken_prosody: data.test_speakers={cfg.test_speakers} must be below "
                        f"data.n_speakers={cfg.n_speakers}")
    recs = spoken_sequences(cfg.n_speakers, cfg.per_speaker, cfg.n_words, seed=seed, sr=SR)
    n = int(round(cfg.clip_seconds * SR))
    longest = max(len(r["audio"]) for r in recs)
    if longest > n:
        raise DataError(f"spoken_prosody: an utterance lasts {longest / SR:.2f} s, longer than "
                        f"data.clip_seconds={cfg.clip_seconds}; raise data.clip_seconds")
    names = sorted({r["speaker"] for r in recs})
    held = set(np.random.default_rng(seed).choice(names, cfg.test_speakers, replace=False).tolist())
    train = [r for r in recs if r["speaker"] not in held]
    test = [r for r in recs if r["speaker"] in held]
    tr, va = carve_val(range(len(train)), cfg.val_fraction, seed, groups=[r["speaker"] for r in train])
    train, val = [train[i] for i in tr], [train[i] for i in va]

    def make(split: str):
        def sample(r: dict, i: int) -> Sample:
            meta = {k: r[k] for k in ("digits", "mode", "stress", "speaker")}
            return Sample(id=f"spoken_prosody/{split}/{r['id']}", media=_wave(r["audio"], n), text=r["text"],
                          meta=meta)
        return sample

    return AudioSplits(
        train=_dataset(train, make("train")), test=_dataset(test, make("test")),
        val=_dataset(val, make("val")) if val else None, classnames=list(WORDS),
        texts=[*WORDS, *MODES, *POSITIONS[: cfg.n_words]], image_size=n, channels=1, split_by="speaker",
        speakers={"train": [r["speaker"] for r in train], "val": [r["speaker"] for r in val],
                  "test": [r["speaker"] for r in test]},
    )
