import json

import numpy as np
import pytest

from modalab.data.sources import sound_events as se
from modalab.data.sources import spoken_digits as sd
from modalab.data.sources.audio_folder import list_audio_folder, pattern_regex, split_by_speaker


def test_audio_scenes_deterministic_and_labelled(tmp_path):
    a = se.generate_scenes(3, seed=5, duration=3.0)
    b = se.generate_scenes(3, seed=5, duration=3.0, out_dir=tmp_path)
    c = se.generate_scenes(3, seed=6, duration=3.0)
    for (ya, ea), (yb, eb) in zip(a, b):
        assert np.array_equal(ya, yb) and ea == eb
    assert not np.array_equal(a[0][0], c[0][0])
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels["files"]) == 3 and (tmp_path / "scene_00000.wav").exists()


def test_audio_scene_labels_are_exact():
    rng = np.random.default_rng(0)
    y, events = se.make_scene(rng, duration=4.0, n_events=(1, 1), snr_db=(30.0, 30.0), noise_dbfs=-200.0)
    (ev,) = events
    sr = 16000
    on, off = round(ev["onset"] * sr), round(ev["offset"] * sr)
    assert y[on] != 0 and y[off - 1] != 0
    assert np.all(np.abs(y[:on]) < 1e-8) and np.all(np.abs(y[off:]) < 1e-8)
    t = se.frame_targets(events, 400, 0.01)
    assert t[:, se.CLASSES.index(ev["label"])].sum() == pytest.approx((off - on) / 160, abs=1)
    assert se.clip_targets(events).sum() == 1


def test_audio_spoken_digits_deterministic_and_varied(tmp_path):
    a = sd.spoken_digits(n_speakers=2, per_digit=1, seed=1, out_dir=tmp_path)
    b = sd.spoken_digits(n_speakers=2, per_digit=1, seed=1)
    assert len(a) == 20 and all(np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, b))
    assert [r["label"] for r in a[:10]] == list(range(10)) and a[3]["text"] == "three"
    spk = sd.make_speakers(2, 1)
    assert spk[0].f0 != spk[1].f0
    listing = list_audio_folder(tmp_path)
    assert len(listing.items) == 20 and listing.labels == [str(i) for i in range(10)]


def test_audio_folder_pattern_bad_names_and_speaker_split(tmp_path):
    for name in ["dog_alice_0.wav", "cat_bob_1.wav", "dog_carol_2.flac", "cat_alice_3.wav", "README.wav",
                 "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    listing = list_audio_folder(tmp_path)
    assert len(listing.items) == 4 and listing.bad_names == [str(tmp_path / "README.wav")]
    assert pattern_regex("{label}-{speaker}.flac").match("dog-x.flac").groupdict() == {"label": "dog", "speaker": "x"}
    train, test = split_by_speaker(listing.items, test_speakers=["alice"])
    assert {i["speaker"] for i in test} == {"alice"} and "alice" not in {i["speaker"] for i in train}
    tr, te = split_by_speaker(listing.items, test_fraction=0.34, seed=0)
    assert not ({i["speaker"] for i in tr} & {i["speaker"] for i in te}) and len(tr) + len(te) == 4
    with pytest.raises(ValueError, match="unknown speakers"):
        split_by_speaker(listing.items, test_speakers=["zed"])
