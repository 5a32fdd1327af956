"""The prosodic labels of spoken_prosody are really in the signal: a final F0 rise, a stressed word."""

import numpy as np
import pytest
import torch

from modalab.audio.prosody_frontend import prosody_channels
from modalab.data.sources.spoken_digits import make_speakers
from modalab.data.sources.spoken_prosody import spoken_sequences, synth_sequence


def _voiced_f0(y: np.ndarray) -> np.ndarray:
    """Relative log2-F0 of the voiced frames (the e2e_prosody route's channel, in octaves)."""
    f0 = prosody_channels(torch.from_numpy(y)[None].double(), len(y) // 160 + 1, f0_scale=1.0)[0, 0].numpy()
    return f0[f0 != 0]


def test_question_rises_at_the_end_and_statement_falls():
    spk = make_speakers(1, seed=3)[0]
    ends = {}
    for mode in (0, 1):
        f0 = _voiced_f0(synth_sequence([1, 9, 4], mode, 1, spk, np.random.default_rng(0)))
        # the last 10 voiced frames, in octaves above the utterance's median F0
        ends[mode] = float(np.median(f0[-10:]))
    assert ends[1] > 0.2 and ends[0] < 0.0 and ends[1] - ends[0] > 0.3


@pytest.mark.parametrize("stress", [0, 1, 2])
def test_stressed_word_is_louder(stress):
    spk = make_speakers(1, seed=5)[0]
    rng = np.random.default_rng(1)
    y = synth_sequence([8, 8, 8], 0, stress, spk, rng)  # same word thrice: only the stress differs
    # words are separated by >= 100 ms of silence: find them from the energy envelope
    e = np.convolve(y.astype(np.float64) ** 2, np.ones(160) / 160, mode="same")
    active = e > 1e-3 * e.max()
    edges = np.flatnonzero(np.diff(active.astype(int)))
    segs: list[list[int]] = []
    for a, b in [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]:
        if segs and a - segs[-1][1] < 800:  # a gap under 50 ms is inside a word ("eight"'s burst)
            segs[-1][1] = b
        else:
            segs.append([a, b])
    assert len(segs) == 3
    peaks = [np.abs(y[a:b]).max() for a, b in segs]
    assert int(np.argmax(peaks)) == stress and max(peaks) > 2 * sorted(peaks)[1]


def test_labels_balanced_and_deterministic():
    a = spoken_sequences(2, 6, n_words=3, seed=4)
    b = spoken_sequences(2, 6, n_words=3, seed=4)
    assert all(np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, b))
    assert [r["mode"] for r in a[:6]] == [0, 1, 0, 1, 0, 1] and [r["stress"] for r in a[:6]] == [0, 0, 1, 1, 2, 2]
    assert a[1]["text"].split()[-2:] == ["question", "first"]
    with pytest.raises(ValueError, match="stress"):
        synth_sequence([1, 2], 0, 2, make_speakers(1)[0], np.random.default_rng(0))


def test_registered_source_holds_out_voices_and_rejects_long_clips():
    from modalab.data.dataset import DataError
    from modalab.data.sources.spoken_prosody import SpokenProsodyConfig, build_spoken_prosody

    cfg = SpokenProsodyConfig(source="spoken_prosody", n_speakers=5, test_speakers=2, per_speaker=2,
                              val_fraction=0.25)
    d = build_spoken_prosody(cfg, seed=0)
    tr, va, te = (set(d.speakers[k]) for k in ("train", "val", "test"))
    assert len(te) == 2 and not (tr & te) and not (va & te) and not (tr & va) and va
    s = d.test[0]
    assert s.media.shape == (int(2.6 * 16000),) and set(s.meta) >= {"digits", "mode", "stress", "speaker"}
    with pytest.raises(DataError, match="clip_seconds"):
        build_spoken_prosody(cfg.model_copy(update={"clip_seconds": 0.5}), seed=0)
