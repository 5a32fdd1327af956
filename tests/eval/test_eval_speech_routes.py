"""Word / prosody accuracies and the ASR-error split against hand-counted values."""

import pytest

from modalab.data.sources.spoken_prosody import answer_text, parse_answer
from modalab.eval.speech_routes import edit_distance, route_scores


def test_edit_distance_by_hand():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1  # a deletion
    assert edit_distance([], [4, 5]) == 2
    assert edit_distance([1, 2], [2, 1]) == 2  # no transposition


def test_answer_round_trip_and_missing_slots():
    text = answer_text([3, 1, 4], 1, 1)
    assert text == "three one four question second"
    assert parse_answer(text, 3) == {"digits": [3, 1, 4], "mode": 1, "stress": 1}
    assert parse_answer("three statement", 3) == {"digits": [3, None, None], "mode": 0, "stress": None}
    # too many digits: the first three count, the prosody words are still found
    assert parse_answer("one two three four question third", 3) == {"digits": [1, 2, 3], "mode": 1, "stress": 2}


def test_route_scores_by_hand():
    refs = [{"digits": [1, 2, 3], "mode": 0, "stress": 0}, {"digits": [4, 5, 6], "mode": 1, "stress": 2},
            {"digits": [7, 8, 9], "mode": 1, "stress": 1}, {"digits": [0, 0, 0], "mode": 0, "stress": 2}]
    parsed = [{"digits": [1, 2, 3], "mode": 0, "stress": 0},   # all right
              {"digits": [4, 5, 0], "mode": 1, "stress": 0},   # 2/3 slots, mode right, stress wrong
              {"digits": [7, 8, 9], "mode": 0, "stress": 1},   # words right, mode wrong
              {"digits": [None, None, None], "mode": None, "stress": None}]
    asr_ok = [True, False, True, False]
    s = route_scores(parsed, refs, asr_ok)
    assert s["word_acc"] == 0.5 and s["digit_acc"] == pytest.approx(8 / 12)
    assert s["mode_acc"] == 0.5 and s["stress_acc"] == 0.5 and s["prosody_acc"] == 0.25 and s["all_acc"] == 0.25
    assert s["word_acc|asr_ok"] == 1.0 and s["word_acc|asr_err"] == 0.0
    assert s["n|asr_ok"] == 2 and s["n|asr_err"] == 2
    with pytest.raises(ValueError, match="equal lengths"):
        route_scores(parsed, refs[:2])
