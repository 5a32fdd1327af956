import pytest

from modalab.data.sources.sound_captions import scene_caption
from modalab.data.sources.sound_events import CLASSES
from modalab.eval.caption_events import event_scores, parse_events


def ev(label, on, off):
    return {"label": label, "onset": on, "offset": off}


def test_scene_caption_order_and_overlap():
    assert scene_caption([ev("chirp", 1.0, 1.2), ev("beep", 0.2, 0.4)]) == "a beep, then a chirp"
    assert scene_caption([ev("siren", 0.0, 2.0), ev("beep", 0.5, 0.7), ev("clap", 3.0, 3.1)]) == \
        "a siren, then a beep over it, then a clap"
    assert scene_caption([]) == "silence"
    with pytest.raises(ValueError, match="'dog'"):
        scene_caption([ev("dog", 0, 1)])


def test_parse_and_event_scores_hand_computed():
    assert parse_events("A beep, then rain over it", CLASSES) == ["beep", "rain"]
    events = [[ev("beep", 0, 1), ev("chirp", 2, 3)], [ev("siren", 0, 2)]]
    caps = ["a chirp, then a beep", "a siren, then a clap"]
    s = event_scores(caps, events, CLASSES)
    # caption 1: {chirp, beep} vs {beep, chirp} -> tp 2, wrong order; caption 2: tp 1 (siren), fp 1 (clap)
    assert s["event_precision"] == pytest.approx(3 / 4) and s["event_recall"] == pytest.approx(1.0)
    assert s["event_f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert s["order_accuracy"] == 0.0
    assert event_scores(["a beep, then a chirp"], events[:1], CLASSES)["order_accuracy"] == 1.0
    with pytest.raises(ValueError, match="2 captions but 1"):
        event_scores(caps, events[:1], CLASSES)


def test_merge_fragments_and_cascade_caption():
    from modalab.eval.caption_events import merge_fragments
    from modalab.tasks.audio_events import cascade_captions

    frags = [ev("beep", 0.0, 0.1), ev("chirp", 0.5, 0.6), ev("beep", 0.2, 0.3), ev("beep", 1.0, 1.1)]
    merged = merge_fragments(frags, 0.15)
    assert [(e["label"], e["onset"], e["offset"]) for e in merged] == [
        ("beep", 0.0, 0.3), ("chirp", 0.5, 0.6), ("beep", 1.0, 1.1)]
    ref = [[ev("beep", 0.0, 0.3), ev("chirp", 0.5, 0.6)]]
    res = cascade_captions(ref, [frags[:3]], CLASSES, 0.15)
    assert res["cascade/order_accuracy"] == 1.0 and res["cascade/bleu4"] == pytest.approx(1.0)
    # one caption: idf = log 1 - log 1 = 0 for every n-gram, so CIDEr-D is 0 even for a perfect match
    assert res["cascade/cider_d"] == 0.0
